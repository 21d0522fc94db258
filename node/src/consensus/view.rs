//! What this node knows of the membership: the leader, the voters and learners, each
//! member's address and region, and (on the leader) when each peer last answered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use raft::{NodeId, NodeInfo};

use super::Consensus;

/// The role a node plays, as it sees itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// A moment's view of this node's Raft member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// Every member (voters and learners) with its address and region.
    pub members: BTreeMap<NodeId, NodeInfo>,
    pub voters: BTreeSet<NodeId>,
    /// Whether the membership is changing (a joint configuration).
    pub joint: bool,
    /// On the leader: the last log index each follower holds.
    pub matched: BTreeMap<NodeId, u64>,
}

impl View {
    fn of(id: NodeId, m: &RaftMetrics<NodeId, NodeInfo>) -> Self {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            // A member that is not a voter follows as a learner.
            ServerState::Follower if !voters.contains(&id) && membership.get_node(&id).is_some() => Role::Learner,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let matched = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map_or(0, |l| l.index))).collect())
            .unwrap_or_default();
        Self {
            id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            members: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            voters,
            joint: membership.get_joint_config().len() != 1,
            matched,
        }
    }

    /// Whether this node leads (in its own term).
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader && self.leader == Some(self.id)
    }

    /// Each voter and its region.
    pub fn voter_regions(&self) -> BTreeMap<NodeId, String> {
        self.voters.iter().filter_map(|v| Some((*v, self.members.get(v)?.region.clone()))).collect()
    }
}

/// Wakes on every change of this node's [`View`].
#[derive(Debug)]
pub struct ViewWatch {
    id: NodeId,
    metrics: tokio::sync::watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
}

impl ViewWatch {
    /// The view now, marking it seen.
    pub fn view(&mut self) -> View {
        View::of(self.id, &self.metrics.borrow_and_update())
    }

    /// Waits for the next change; `false` once raft has stopped.
    pub async fn changed(&mut self) -> bool {
        self.metrics.changed().await.is_ok()
    }
}

impl Consensus {
    /// This node's view of the membership now.
    pub fn view(&self) -> View {
        View::of(self.id, &self.raft.metrics().borrow())
    }

    /// Follows the view as it changes.
    pub fn watch(&self) -> ViewWatch {
        ViewWatch { id: self.id, metrics: self.raft.metrics() }
    }

    /// The current leader and its address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Members of the current membership config: `(id, info)`.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    /// The region a member's membership entry names.
    pub fn region_of(&self, id: NodeId) -> Option<String> {
        self.members().into_iter().find(|(m, _)| *m == id).map(|(_, info)| info.region)
    }

    /// The voters, unless the membership is changing (a joint configuration).
    pub fn settled_voters(&self) -> Option<Vec<NodeId>> {
        let view = self.view();
        (!view.joint).then(|| view.voters.into_iter().collect())
    }

    /// How long a peer may go without answering this node's raft RPCs and still count as
    /// healthy: the election timeout, after which a follower would itself give up on us.
    pub fn health_window(&self) -> Duration {
        Duration::from_millis(self.config.raft.election_timeout_ms_max)
    }

    /// Since when (on this node, usually the leader) peer `id` last answered; `None` if never.
    pub fn peer_silence(&self, id: NodeId) -> Option<Duration> {
        self.peers.contacts().get(&id).map(|t| t.elapsed())
    }

    /// On the leader: the other voter whose log is furthest along (lowest id on ties).
    pub fn successor(&self) -> Option<NodeId> {
        let view = self.view();
        let matched = |id: &NodeId| view.matched.get(id).copied().unwrap_or(0);
        view.voters.iter().copied().filter(|v| *v != self.id).max_by(|a, b| matched(a).cmp(&matched(b)).then(b.cmp(a)))
    }
}
