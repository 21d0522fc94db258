//! What `cluster status` shows: each node's own account of itself, and the cluster's put
//! together from them.

use std::collections::BTreeMap;

use raft::{NodeId, NodeInfo};

use crate::node::Node;

/// One node's account of itself (or, for a node that did not answer, what is known of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub region: String,
    pub zone: String,
    pub preferred_leader_region: String,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`, or `unreachable`.
    pub role: String,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Entries behind the leader, as the leader sees it.
    pub replication_lag: u64,
    pub version: String,
    pub reachable: bool,
    /// Why it is unreachable.
    pub error: String,
    pub voter: bool,
    pub leader_id: Option<NodeId>,
    pub initialized: bool,
    pub holds_share: bool,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub cache_entries: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    /// The log key version it waits for, while sealed.
    pub sealed_on: Option<u32>,
    pub log_key_versions: Vec<u32>,
    pub faulty_shares: BTreeMap<NodeId, u64>,
    pub root_epoch: u64,
    pub next_root_epoch: u64,
    pub identity_rounds: Vec<u64>,
}

/// The cluster as one node puts it together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    pub leader_id: Option<NodeId>,
    pub placement_warnings: Vec<String>,
}

impl NodeStatus {
    /// What is known of a member that did not answer.
    pub fn unreachable(id: NodeId, info: &NodeInfo, error: String) -> Self {
        Self {
            id,
            addr: info.addr.clone(),
            region: info.region.clone(),
            zone: info.zone.clone(),
            role: "unreachable".into(),
            reachable: false,
            error,
            ..Default::default()
        }
    }
}

impl Node {
    /// This node's account of itself.
    pub fn local_status(&self) -> NodeStatus {
        let view = self.consensus.view();
        let cache = self.custody.cache_counts();
        let (initialized, holds_share, root_epoch, next_root_epoch) = {
            let s = self.state().read();
            (
                s.store.root().is_some(),
                s.store.root().is_some_and(|r| r.holders.contains_key(&self.id())),
                s.store.root().map_or(0, |r| r.epoch),
                s.store.next_root().map_or(0, |r| r.epoch),
            )
        };
        let config = self.config();
        NodeStatus {
            id: self.id(),
            addr: config.advertise_addr(),
            region: config.region.clone(),
            zone: config.zone.clone(),
            preferred_leader_region: config.raft.preferred_leader_region.clone(),
            role: view.role.name().into(),
            term: view.term,
            last_log_index: view.last_log_index,
            applied_index: self.consensus.applied_index(),
            replication_lag: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            reachable: true,
            error: String::new(),
            voter: view.voters.contains(&self.id()),
            leader_id: view.leader,
            initialized,
            holds_share,
            snapshot_index: view.snapshot_index,
            purged_index: view.purged_index,
            cache_entries: cache.entries,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_evictions: cache.evictions,
            sealed_on: self.state().sealed(),
            log_key_versions: self.state().cipher().versions(),
            faulty_shares: self.custody.faulty_share_counts(),
            root_epoch,
            next_root_epoch,
            identity_rounds: self.custody.identity_rounds(),
        }
    }
}
