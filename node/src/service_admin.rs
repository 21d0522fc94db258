//! The operator service (`keyquorum.v1.Admin`): init, status, membership, snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::admin_client::AdminClient;
use proto::v1::admin_server::Admin;
use raft::{Command, NodeId, NodeInfo};
use tonic::{Request, Response, Status};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// How long `Init` waits for the members to generate the root key.
const KEYGEN_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct AdminService(pub Arc<Node>);

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

impl AdminService {
    /// Admin writes run on the leader; a follower passes them on.
    async fn leader_admin(&self) -> Result<Option<AdminClient<tonic::transport::Channel>>> {
        if self.0.consensus.is_leader() {
            return Ok(None);
        }
        let (_, addr) =
            self.0.consensus.leader().ok_or_else(|| NodeError::Unavailable("no leader is known; retry".into()))?;
        let channel = self.0.consensus.peers().channel(&addr)?;
        Ok(Some(AdminClient::new(channel)))
    }

    /// `cluster rotate-root`: a new root key among the current voters (or joins a rotation
    /// already under way), then waits until it is in force.
    async fn rotate_root(&self) -> Result<pb::RotateRootResponse> {
        self.0.ensure_initialized().await?;
        let (before, under_way) = {
            let s = self.0.state().read();
            let before = s.store.root().map_or(0, |r| r.epoch);
            (before, s.store.next_root().is_some() || (s.store.keygen().is_some() && before > 0))
        };
        if !under_way {
            let voters: Vec<NodeId> = self.0.consensus.view().voters.into_iter().collect();
            self.0.custody.start_round(&voters).await?;
        }
        let rotated = |s: &raft::KeyStore| s.root().filter(|r| r.epoch > before).cloned();
        let root = self.0.consensus.wait_for_state(KEYGEN_WAIT * 2, rotated).await?.ok_or_else(|| {
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
        if !members.contains_key(&self.0.id()) {
            return Err(NodeError::Invalid(format!("the members must include this node ({})", self.0.id())));
        }
        if self.0.state().read().store.root().is_some() {
            return Err(NodeError::Kms(raft::KmsError::AlreadyExists("the cluster is already initialised".into())));
        }
        self.0.consensus.initialize(members.clone()).await?;
        // The members generate the root key together (`keygen.rs` on every node); nobody
        // deals it. A round for the same members that is already running is joined, not
        // restarted; one for other members is replaced. Each member names itself with a fresh
        // identity key for the round (`identity.rs`).
        let ids: Vec<NodeId> = members.keys().copied().collect();
        let running = self.0.state().read().store.keygen().map(|r| (r.epoch, r.participant_ids() == ids));
        match running {
            Some((_, true)) => {}
            other => {
                let epoch = other.map_or(1, |(e, _)| e + 1);
                let mut participants = Vec::with_capacity(members.len());
                for (id, info) in &members {
                    participants.push((*id, self.0.custody.identity_of(*id, &info.addr, epoch).await?));
                }
                let now_ms = self.0.now_ms();
                match self.0.consensus.propose(Command::StartKeyGen { epoch, participants, now_ms }).await {
                    // Another Init finished the round meanwhile: wait for it below.
                    Err(NodeError::Kms(raft::KmsError::AlreadyExists(_)))
                        if self.0.state().read().store.root().is_some() => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        let generated = |s: &raft::KeyStore| s.root().cloned();
        let root = self.0.consensus.wait_for_state(KEYGEN_WAIT, generated).await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "the root key generation has not finished within {} s: are a majority of the members up? \
                 Run init again to keep waiting",
                KEYGEN_WAIT.as_secs()
            ))
        })?;
        // Then the log key, so the cluster is ready for clients when Init returns.
        self.0.custody.ensure_log_key().await?;
        let needed = crypto::threshold::shares_needed(&root.public_key_set)?;
        Ok(pb::InitResponse { shares_needed: needed as u32, holders: root.holders.len() as u32 })
    }

    pub(crate) fn local_status(&self) -> pb::NodeStatus {
        let n = &self.0;
        let view = n.consensus.view();
        let voter = view.voters.contains(&n.id());
        let cache = n.custody.cache_counts();
        let (root, holds_share, root_epoch, next_root_epoch) = {
            let s = n.state().read();
            (
                s.store.root().is_some(),
                s.store.root().is_some_and(|r| r.holders.contains_key(&n.id())),
                s.store.root().map_or(0, |r| r.epoch),
                s.store.next_root().map_or(0, |r| r.epoch),
            )
        };
        let config = n.config();
        pb::NodeStatus {
            id: n.id(),
            addr: config.advertise_addr(),
            region: config.region.clone(),
            zone: config.zone.clone(),
            preferred_leader_region: config.raft.preferred_leader_region.clone(),
            role: view.role.name().into(),
            term: view.term,
            last_log_index: view.last_log_index,
            applied_index: n.consensus.applied_index(),
            replication_lag: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            reachable: true,
            error: String::new(),
            voter,
            leader_id: view.leader.unwrap_or(0),
            initialized: root,
            holds_share,
            snapshot_index: view.snapshot_index,
            purged_index: view.purged_index,
            cache_entries: cache.entries,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_evictions: cache.evictions,
            sealed: n.state().sealed().is_some(),
            sealed_log_key_version: n.state().sealed().unwrap_or(0),
            log_key_versions: n.state().cipher().versions(),
            faulty_shares: n.custody.faulty_share_counts().into_iter().collect(),
            root_epoch,
            next_root_epoch,
            identity_rounds: n.custody.identity_rounds(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
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
        let members = self.0.consensus.members();
        let mut nodes = Vec::new();
        for (id, info) in &members {
            if *id == self.0.id() {
                nodes.push(self.local_status());
                continue;
            }
            let status = async {
                let channel = self.0.consensus.peers().channel(&info.addr)?;
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
        let mut placement_warnings = crate::topology::placement_warnings(&self.0.consensus.view().voter_regions());
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
            let wait = Duration::from_millis(self.0.config().raft.snapshot_timeout_ms);
            self.0.consensus.add_voter(id, info, wait).await?;
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
        if r.id == self.0.id() {
            // A leader does not remove itself: openraft 0.9 keeps it leader of a configuration
            // it no longer belongs to, and its next membership change trips an internal
            // assertion (found by the simulator, seed 156). Hand leadership to the most
            // caught-up other voter, which then does the removal.
            let target = self.0.consensus.successor().ok_or_else(|| {
                Status::failed_precondition("this node is the only voter; a cluster cannot remove its last voter")
            })?;
            self.0.consensus.transfer_leadership(target).await.map_err(Status::from)?;
            return match self.leader_admin().await.map_err(Status::from)? {
                Some(mut leader) => leader.remove_node(r).await,
                None => Err(Status::unavailable("leadership is moving; retry the removal")),
            };
        }
        ok(async {
            if !self.0.consensus.members().iter().any(|(id, _)| *id == r.id) {
                return Err(NodeError::Kms(raft::KmsError::NotFound(format!("node {} is not a member", r.id))));
            }
            self.0.consensus.remove_member(r.id).await?;
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
        ok(self.0.consensus.transfer_leadership(r.id).await.map(|()| pb::AdminEmpty {}))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> std::result::Result<Response<pb::SnapshotResponse>, Status> {
        ok(async {
            let last_log_index = self.0.consensus.snapshot(Duration::from_secs(30)).await?;
            Ok(pb::SnapshotResponse { last_log_index })
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
