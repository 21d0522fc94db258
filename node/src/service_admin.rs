//! The operator service (`keyquorum.v1.Admin`): init, status, membership, snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use proto::v1 as pb;
use proto::v1::admin_client::AdminClient;
use proto::v1::admin_server::Admin;
use raft::{Command, NodeId, NodeInfo};
use tonic::{Request, Response, Status};

use crate::error::{NodeError, Result};
use crate::network::Connector;
use crate::node::Node;

/// How long `Init` waits for the members to generate the root key.
const KEYGEN_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct AdminService<C>(pub Arc<Node<C>>);

fn ok<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

pub(crate) fn member_info(m: &pb::Member) -> Result<(NodeId, NodeInfo)> {
    if m.id == 0 {
        return Err(NodeError::Invalid("member id must be > 0".into()));
    }
    if m.addr.parse::<std::net::SocketAddr>().is_err() && !m.addr.contains(':') {
        return Err(NodeError::Invalid(format!("member {} address {:?} is not host:port", m.id, m.addr)));
    }
    if m.region.is_empty() {
        return Err(NodeError::Invalid(format!("member {} has no region", m.id)));
    }
    Ok((m.id, NodeInfo { addr: m.addr.clone(), region: m.region.clone(), zone: m.zone.clone() }))
}

impl<C: Connector> AdminService<C> {
    /// Admin writes run on the leader; a follower passes them on.
    async fn leader_admin(&self) -> Result<Option<AdminClient<tonic::transport::Channel>>> {
        if self.0.is_leader() {
            return Ok(None);
        }
        let (_, addr) = self.0.leader().ok_or_else(|| NodeError::Unavailable("no leader is known; retry".into()))?;
        let channel = self.0.peers.channel(&addr)?;
        Ok(Some(AdminClient::new(channel)))
    }

    async fn change_membership(&self, change: openraft::ChangeMembers<NodeId, NodeInfo>) -> Result<()> {
        self.0.raft.change_membership(change, false).await.map_err(|e| NodeError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// `cluster rotate-root`: a new root key among the current voters (or joins a rotation
    /// already under way), then waits until it is in force.
    async fn rotate_root(&self) -> Result<pb::RotateRootResponse> {
        self.0.ensure_initialized().await?;
        let (before, under_way) = {
            let s = self.0.state.read();
            let before = s.store.root().map_or(0, |r| r.epoch);
            (before, s.store.next_root().is_some() || (s.store.keygen().is_some() && before > 0))
        };
        if !under_way {
            let voters: Vec<NodeId> =
                self.0.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
            crate::reshare::start_round(&self.0, &voters).await?;
        }
        let rotated = |s: &raft::KeyStore| s.root().filter(|r| r.epoch > before).cloned();
        let root = self.0.wait_for_state(KEYGEN_WAIT * 2, rotated).await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "the new root key is not in force after {} s: are a majority of the voters up? \
                 It keeps going in the background; `cluster status` shows the root epoch",
                (KEYGEN_WAIT * 2).as_secs()
            ))
        })?;
        let shares_needed = crypto::threshold::shares_needed(&root.public_key_set)? as u32;
        Ok(pb::RotateRootResponse {
            root_epoch: root.epoch,
            holders: root.holders.keys().copied().collect(),
            shares_needed,
        })
    }

    async fn init(&self, r: pb::InitRequest) -> Result<pb::InitResponse> {
        let mut members = BTreeMap::new();
        for m in &r.members {
            let (id, info) = member_info(m)?;
            if members.insert(id, info).is_some() {
                return Err(NodeError::Invalid(format!("member {id} is listed twice")));
            }
        }
        if !members.contains_key(&self.0.id) {
            return Err(NodeError::Invalid(format!("the members must include this node ({})", self.0.id)));
        }
        if self.0.state.read().store.root().is_some() {
            return Err(NodeError::Kms(raft::KmsError::AlreadyExists("the cluster is already initialised".into())));
        }
        let initialized = self.0.raft.is_initialized().await.map_err(|e| NodeError::Internal(e.to_string()))?;
        if !initialized {
            self.0
                .raft
                .initialize(members.clone())
                .await
                .map_err(|e| NodeError::Unavailable(format!("raft initialise failed: {e}")))?;
        }
        // The members generate the root key together (`keygen.rs` on every node); nobody
        // deals it. A round for the same members that is already running is joined, not
        // restarted; one for other members is replaced. Each member names itself with a fresh
        // identity key for the round (`identity.rs`).
        let ids: Vec<NodeId> = members.keys().copied().collect();
        let running = self.0.state.read().store.keygen().map(|r| (r.epoch, r.participant_ids() == ids));
        match running {
            Some((_, true)) => {}
            other => {
                let epoch = other.map_or(1, |(e, _)| e + 1);
                let mut participants = Vec::with_capacity(members.len());
                for (id, info) in &members {
                    participants.push((*id, crate::reshare::identity_of(&self.0, *id, &info.addr, epoch).await?));
                }
                let now_ms = self.0.now_ms();
                match self.0.propose(Command::StartKeyGen { epoch, participants, now_ms }).await {
                    // Another Init finished the round meanwhile: wait for it below.
                    Err(NodeError::Kms(raft::KmsError::AlreadyExists(_)))
                        if self.0.state.read().store.root().is_some() => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        let generated = |s: &raft::KeyStore| s.root().cloned();
        let root = self.0.wait_for_state(KEYGEN_WAIT, generated).await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "the root key generation has not finished within {} s: are a majority of the members up? \
                 Run init again to keep waiting",
                KEYGEN_WAIT.as_secs()
            ))
        })?;
        // Then the log key, so the cluster is ready for clients when Init returns.
        self.0.ensure_log_key().await?;
        let needed = crypto::threshold::shares_needed(&root.public_key_set)?;
        Ok(pb::InitResponse { shares_needed: needed as u32, holders: root.holders.len() as u32 })
    }

    /// On the leader: the other voter whose log is furthest along (lowest id on ties).
    fn successor(&self) -> Option<NodeId> {
        let m = self.0.raft.metrics().borrow().clone();
        let matched =
            |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map_or(0, |l| l.index);
        let voters = m.membership_config.membership().voter_ids().filter(|v| *v != self.0.id).collect::<Vec<_>>();
        voters.into_iter().max_by(|a, b| matched(a).cmp(&matched(b)).then(b.cmp(a)))
    }

    pub(crate) fn local_status(&self) -> pb::NodeStatus {
        let n = &self.0;
        let m = n.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|v| v == n.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower if !voter && membership.get_node(&n.id).is_some() => "learner",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let cache = n.cache_counts();
        let (root, holds_share, root_epoch, next_root_epoch) = {
            let s = n.state.read();
            (
                s.store.root().is_some(),
                s.store.root().is_some_and(|r| r.holders.contains_key(&n.id)),
                s.store.root().map_or(0, |r| r.epoch),
                s.store.next_root().map_or(0, |r| r.epoch),
            )
        };
        pb::NodeStatus {
            id: n.id,
            addr: n.config.advertise_addr(),
            region: n.config.region.clone(),
            zone: n.config.zone.clone(),
            preferred_leader_region: n.config.raft.preferred_leader_region.clone(),
            role: role.into(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: *n.state.applied_index().borrow(),
            replication_lag: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            reachable: true,
            error: String::new(),
            voter,
            leader_id: m.current_leader.unwrap_or(0),
            initialized: root,
            holds_share,
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            cache_entries: cache.entries,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_evictions: cache.evictions,
            sealed: n.state.sealed().is_some(),
            sealed_log_key_version: n.state.sealed().unwrap_or(0),
            log_key_versions: n.state.cipher().versions(),
            faulty_shares: n.faulty_share_counts().into_iter().collect(),
            root_epoch,
            next_root_epoch,
            identity_rounds: n.identities.rounds(),
        }
    }
}

#[tonic::async_trait]
impl<C: Connector> Admin for AdminService<C> {
    async fn init(&self, request: Request<pb::InitRequest>) -> std::result::Result<Response<pb::InitResponse>, Status> {
        ok(self.init(request.into_inner()).await)
    }

    async fn rotate_root(
        &self,
        _request: Request<pb::RotateRootRequest>,
    ) -> std::result::Result<Response<pb::RotateRootResponse>, Status> {
        ok(self.rotate_root().await)
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        let members = self.0.members();
        let mut nodes = Vec::new();
        for (id, info) in &members {
            if *id == self.0.id {
                nodes.push(self.local_status());
                continue;
            }
            let status = async {
                let channel = self.0.peers.channel(&info.addr)?;
                let mut client = AdminClient::new(channel);
                let mut req = Request::new(pb::StatusRequest {});
                req.set_timeout(Duration::from_secs(2));
                client
                    .local_status(req)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| NodeError::Unavailable(s.message().into()))
            };
            nodes.push(match tokio::time::timeout(Duration::from_secs(3), status).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => unreachable_status(*id, info, e.to_string()),
                Err(_) => unreachable_status(*id, info, "timed out".into()),
            });
        }
        if members.is_empty() {
            nodes.push(self.local_status());
        }
        let leader = nodes.iter().find(|s| s.role == "leader").map(|s| (s.id, s.last_log_index));
        if let Some((_, leader_last)) = leader {
            for s in nodes.iter_mut().filter(|s| s.reachable) {
                s.replication_lag = leader_last.saturating_sub(s.last_log_index);
            }
        }
        let mut placement_warnings = crate::topology::placement_warnings(&self.0.voter_regions());
        let preferred: std::collections::BTreeSet<&str> =
            nodes.iter().filter(|s| s.reachable).map(|s| s.preferred_leader_region.as_str()).collect();
        if preferred.len() > 1 {
            placement_warnings.push(format!(
                "nodes disagree on raft.preferred_leader_region ({preferred:?}): set the same on every node"
            ));
        }
        Ok(Response::new(pb::ClusterStatusResponse { nodes, leader_id: leader.map_or(0, |l| l.0), placement_warnings }))
    }

    async fn local_status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> std::result::Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.local_status()))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> std::result::Result<Response<pb::AdminEmpty>, Status> {
        let r = request.into_inner();
        if let Some(mut leader) = self.leader_admin().await.map_err(Status::from)? {
            return leader.add_node(r).await;
        }
        ok(async {
            let m = r.member.ok_or_else(|| NodeError::Invalid("member is required".into()))?;
            let (id, info) = member_info(&m)?;
            // Learner first, promoted once it holds everything up to its own addition.
            // (openraft's `add_learner(blocking)` calls a learner caught up while it lags by
            // fewer than `replication_lag_threshold` entries, 5000 by default: it returned at
            // once in small clusters, before the learner had a single entry.)
            let added = self.0.raft.add_learner(id, info, false).await.map_err(|e| NodeError::Unavailable(e.to_string()))?;
            let wait = Duration::from_millis(self.0.config.raft.snapshot_timeout_ms);
            self.0
                .raft
                .wait(Some(wait))
                .metrics(
                    |m| {
                        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten();
                        matched.is_some_and(|l| l >= added.log_id)
                    },
                    "the new learner catches up",
                )
                .await
                .map_err(|_| {
                    NodeError::Unavailable(format!(
                        "node {id} is a learner now but has not caught up within {} ms; run add-node again to promote it",
                        wait.as_millis()
                    ))
                })?;
            self.change_membership(openraft::ChangeMembers::AddVoterIds([id].into())).await?;
            Ok(pb::AdminEmpty {})
        }
        .await)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> std::result::Result<Response<pb::AdminEmpty>, Status> {
        let r = request.into_inner();
        if let Some(mut leader) = self.leader_admin().await.map_err(Status::from)? {
            return leader.remove_node(r).await;
        }
        if r.id == self.0.id {
            // A leader does not remove itself: openraft 0.9 keeps it leader of a configuration
            // it no longer belongs to, and its next membership change trips an internal
            // assertion (found by the simulator, seed 156). Hand leadership to the most
            // caught-up other voter, which then does the removal.
            let target = self.successor().ok_or_else(|| {
                Status::failed_precondition("this node is the only voter; a cluster cannot remove its last voter")
            })?;
            self.0.transfer_leadership(target).await.map_err(Status::from)?;
            return match self.leader_admin().await.map_err(Status::from)? {
                Some(mut leader) => leader.remove_node(r).await,
                None => Err(Status::unavailable("leadership is moving; retry the removal")),
            };
        }
        ok(async {
            if !self.0.members().iter().any(|(id, _)| *id == r.id) {
                return Err(NodeError::Kms(raft::KmsError::NotFound(format!("node {} is not a member", r.id))));
            }
            self.change_membership(openraft::ChangeMembers::RemoveVoters([r.id].into())).await?;
            self.change_membership(openraft::ChangeMembers::RemoveNodes([r.id].into())).await?;
            Ok(pb::AdminEmpty {})
        }
        .await)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> std::result::Result<Response<pb::AdminEmpty>, Status> {
        let r = request.into_inner();
        if let Some(mut leader) = self.leader_admin().await.map_err(Status::from)? {
            return leader.transfer_leader(r).await;
        }
        ok(self.0.transfer_leadership(r.id).await.map(|()| pb::AdminEmpty {}))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> std::result::Result<Response<pb::SnapshotResponse>, Status> {
        ok(async {
            let before = self.0.raft.metrics().borrow().snapshot.map_or(0, |l| l.index);
            self.0.raft.trigger().snapshot().await.map_err(|e| NodeError::Unavailable(e.to_string()))?;
            let mut metrics = self.0.raft.metrics();
            let applied = metrics.borrow().last_applied.map_or(0, |l| l.index);
            let wait = metrics.wait_for(|m| m.snapshot.map_or(0, |l| l.index) >= applied.max(before));
            let m = tokio::time::timeout(Duration::from_secs(30), wait)
                .await
                .map_err(|_| NodeError::Unavailable("snapshot did not finish within 30 s".into()))?
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            Ok(pb::SnapshotResponse { last_log_index: m.snapshot.map_or(0, |l| l.index) })
        }
        .await)
    }
}

fn unreachable_status(id: NodeId, info: &NodeInfo, error: String) -> pb::NodeStatus {
    pb::NodeStatus {
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
