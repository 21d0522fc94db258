//! The operator's calls, transport-free, through the same pipeline as the KMS's: validate,
//! route (membership changes, leadership transfer and quota changes run on the leader: a follower refuses
//! them, naming the leader, and the client goes there; a member never makes an operator's call
//! with its own certificate), authorize (operators only), work, record.

mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft::{Command, NodeId, NodeInfo, Principal};

pub use status::{ClusterStatus, NodeStatus};

use crate::error::{NodeError, Result};
use crate::kms::{AuditRecord, AuditSink, CallContext, Caller, Outcome};
use crate::node::Node;

/// How long `Init` waits for the members to generate the root key.
const KEYGEN_WAIT: Duration = Duration::from_secs(60);

/// How long a peer may take to tell its status.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// One operator call.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// Forms the cluster of `members` and generates its root key.
    Init {
        members: BTreeMap<NodeId, NodeInfo>,
    },
    RotateRoot,
    /// Every member's status, put together here.
    Status,
    /// This node's own.
    LocalStatus,
    AddNode {
        id: NodeId,
        info: NodeInfo,
    },
    RemoveNode {
        id: NodeId,
    },
    TransferLeader {
        id: NodeId,
    },
    Snapshot,
    /// This node's audit records from a sequence number on.
    ReadAudit {
        from: usize,
        max: usize,
    },
    /// Every node's replicated audit chain head.
    AuditHeads,
    /// The cluster's quotas, and those that apply to `principal`.
    GetQuotas {
        principal: Option<Principal>,
    },
    /// Sets the default quota (`scope` `None`) or an override; `limits` `None` removes it.
    SetQuota {
        scope: Option<String>,
        limits: Option<raft::Limits>,
    },
}

/// The most audit records one `ReadAudit` returns.
pub const MAX_AUDIT_PAGE: usize = 5000;

/// What an operator call answers.
#[derive(Debug)]
pub enum AdminOut {
    Init {
        shares_needed: u32,
        holders: u32,
    },
    RotateRoot {
        root_epoch: u64,
        holders: Vec<NodeId>,
        shares_needed: u32,
    },
    ClusterStatus(ClusterStatus),
    NodeStatus(Box<NodeStatus>),
    Done,
    Snapshot {
        last_log_index: u64,
    },
    Audit {
        lines: Vec<::audit::Line>,
        last_seq: u64,
        total: usize,
    },
    AuditHeads(std::collections::BTreeMap<NodeId, raft::AuditHead>),
    Quotas {
        quotas: raft::Quotas,
        /// For the principal asked about: its limits and the override they come from.
        effective: Option<(raft::Limits, Option<String>)>,
    },
}

impl AdminOp {
    pub fn name(&self) -> &'static str {
        match self {
            AdminOp::Init { .. } => "Init",
            AdminOp::RotateRoot => "RotateRoot",
            AdminOp::Status => "Status",
            AdminOp::LocalStatus => "LocalStatus",
            AdminOp::AddNode { .. } => "AddNode",
            AdminOp::RemoveNode { .. } => "RemoveNode",
            AdminOp::TransferLeader { .. } => "TransferLeader",
            AdminOp::Snapshot => "Snapshot",
            AdminOp::ReadAudit { .. } => "ReadAudit",
            AdminOp::AuditHeads => "AuditHeads",
            AdminOp::GetQuotas { .. } => "GetQuotas",
            AdminOp::SetQuota { .. } => "SetQuota",
        }
    }
}

/// A member as an operator names it: checked before it goes anywhere.
pub fn check_member(id: NodeId, info: &NodeInfo) -> Result<()> {
    if id == 0 {
        return Err(NodeError::Invalid("member id must be > 0".into()));
    }
    if info.addr.parse::<std::net::SocketAddr>().is_err() && !info.addr.contains(':') {
        return Err(NodeError::Invalid(format!("member {id} address {:?} is not host:port", info.addr)));
    }
    if info.region.is_empty() {
        return Err(NodeError::Invalid(format!("member {id} has no region")));
    }
    Ok(())
}

/// The other members, as the admin layer reaches them (the gRPC edge implements it).
#[async_trait::async_trait]
pub trait Fleet: Send + Sync + std::fmt::Debug {
    /// A member's own status.
    async fn local_status(&self, id: NodeId, member: &NodeInfo, timeout: Duration) -> Result<NodeStatus>;
}

/// The operator service of one node.
pub struct Admin {
    node: Arc<Node>,
    audit: Arc<dyn AuditSink>,
    fleet: Arc<dyn Fleet>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Admin {{ node: {} }}", self.node.id())
    }
}

impl Admin {
    pub fn new(node: Arc<Node>, audit: Arc<dyn AuditSink>, fleet: Arc<dyn Fleet>) -> Self {
        Self { node, audit, fleet }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs one operator call through the pipeline and records it.
    pub async fn execute(&self, ctx: &CallContext, op: AdminOp) -> Result<AdminOut> {
        let operation = op.name();
        let result = self.pipeline(ctx, op).await;
        let record = AuditRecord {
            node: self.node.id(),
            service: "admin",
            operation,
            key: None,
            ctx,
            outcome: Outcome::served(&result),
            error: result.as_ref().err(),
            context: None,
            used: None,
        };
        self.audit.record(&record).await?;
        result
    }

    async fn pipeline(&self, ctx: &CallContext, op: AdminOp) -> Result<AdminOut> {
        if let AdminOp::Init { members } = &op {
            for (id, info) in members {
                check_member(*id, info)?;
            }
        }
        if let AdminOp::AddNode { id, info } = &op {
            check_member(*id, info)?;
        }
        if let AdminOp::SetQuota { scope, limits } = &op {
            if let Some(scope) = scope {
                raft::quota::check_scope(scope)?;
            }
            if let Some(limits) = limits {
                limits.validate()?;
            }
        }
        self.authorize(ctx, &op)?;
        self.route(&op).await?;
        self.work(ctx, op).await
    }

    /// Membership changes and leadership transfer run on the leader; a follower refuses them
    /// as unavailable, naming the leader, and the client retries there (`grpc::serve` puts
    /// the leader's address in the response). A leader asked to remove itself first hands
    /// leadership to the most caught-up other voter and refuses likewise, so the retry reaches
    /// the new leader, which does the removal: openraft 0.9 keeps a leader that removed itself
    /// leading a configuration it is not in, and its next membership change trips an internal
    /// assertion (found by the simulator, seed 156).
    async fn route(&self, op: &AdminOp) -> Result<()> {
        let on_leader = matches!(
            op,
            AdminOp::AddNode { .. }
                | AdminOp::RemoveNode { .. }
                | AdminOp::TransferLeader { .. }
                | AdminOp::SetQuota { .. }
        );
        if !on_leader {
            return Ok(());
        }
        let consensus = &self.node.consensus;
        let me = self.node.id();
        if consensus.is_leader() {
            let AdminOp::RemoveNode { id } = op else { return Ok(()) };
            if *id != me {
                return Ok(());
            }
            let target = consensus.successor().ok_or_else(|| {
                NodeError::Kms(raft::KmsError::InvalidState(
                    "this node is the only voter; a cluster cannot remove its last voter".into(),
                ))
            })?;
            consensus.transfer_leadership(target).await?;
            return Err(NodeError::Unavailable(format!(
                "node {me} handed leadership to node {target} before its own removal; retry at the leader"
            )));
        }
        Err(NodeError::Unavailable(match consensus.leader() {
            Some((id, addr)) if id != me => format!("node {me} is not the leader; the leader is node {id} at {addr}"),
            _ => format!("node {me} is not the leader and no leader is known; retry"),
        }))
    }

    /// Operators only: a member's certificate never makes an operator's call (the Admin
    /// service admits `admin/*` certificates only; this holds behind it too). Without TLS
    /// (development only) nothing is authenticated.
    fn authorize(&self, ctx: &CallContext, op: &AdminOp) -> Result<()> {
        match &ctx.caller {
            Caller::Verified(Principal::Admin(_)) | Caller::Plaintext => Ok(()),
            Caller::Verified(other) => Err(NodeError::Kms(raft::KmsError::AccessDenied {
                principal: other.to_string(),
                operation: format!("{} (operator calls need an admin certificate)", op.name()),
                key: None,
            })),
        }
    }

    async fn work(&self, ctx: &CallContext, op: AdminOp) -> Result<AdminOut> {
        let consensus = &self.node.consensus;
        match op {
            AdminOp::Init { members } => self.init(members).await,
            AdminOp::RotateRoot => self.rotate_root().await,
            AdminOp::Status => Ok(AdminOut::ClusterStatus(self.cluster_status().await)),
            AdminOp::LocalStatus => Ok(AdminOut::NodeStatus(Box::new(self.node.local_status()))),
            AdminOp::AddNode { id, info } => {
                let wait = Duration::from_millis(self.node.config().raft.snapshot_timeout_ms);
                consensus.add_voter(id, info, wait).await.map(|()| AdminOut::Done)
            }
            AdminOp::RemoveNode { id } => {
                if !consensus.members().iter().any(|(m, _)| *m == id) {
                    return Err(NodeError::Kms(raft::KmsError::NotFound(format!("node {id} is not a member"))));
                }
                consensus.remove_member(id).await.map(|()| AdminOut::Done)
            }
            AdminOp::TransferLeader { id } => consensus.transfer_leadership(id).await.map(|()| AdminOut::Done),
            AdminOp::Snapshot => {
                let last_log_index = consensus.snapshot(Duration::from_secs(30)).await?;
                Ok(AdminOut::Snapshot { last_log_index })
            }
            AdminOp::ReadAudit { from, max } => {
                let max = if max == 0 { MAX_AUDIT_PAGE } else { max.min(MAX_AUDIT_PAGE) };
                let last_seq = self.node.audit.head().0;
                let (lines, total) = self.node.audit.read(from, max).await?;
                Ok(AdminOut::Audit { lines, last_seq, total })
            }
            AdminOp::AuditHeads => {
                consensus.linearize(crate::consensus::Consistency::Linearizable).await?;
                Ok(AdminOut::AuditHeads(self.node.open_state()?.store.audit_heads().clone()))
            }
            AdminOp::GetQuotas { principal } => {
                consensus.linearize(crate::consensus::Consistency::Linearizable).await?;
                let state = self.node.open_state()?;
                let quotas = state.store.quotas().clone();
                let effective = principal.map(|p| {
                    let (limits, scope) = quotas.of(&p);
                    (limits.clone(), scope.map(str::to_string))
                });
                Ok(AdminOut::Quotas { quotas, effective })
            }
            AdminOp::SetQuota { scope, limits } => {
                let command = Command::SetQuota { scope, limits, by: ctx.actor(), now_ms: self.node.now_ms() };
                consensus.propose(command).await.map(|_| AdminOut::Done)
            }
        }
    }

    async fn init(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<AdminOut> {
        let node = &self.node;
        if !members.contains_key(&node.id()) {
            return Err(NodeError::Invalid(format!("the members must include this node ({})", node.id())));
        }
        if node.state().read().store.root().is_some() {
            return Err(NodeError::Kms(raft::KmsError::AlreadyExists("the cluster is already initialised".into())));
        }
        node.consensus.initialize(members.clone()).await?;
        // The members generate the root key together (`custody/keygen.rs` on every node);
        // nobody deals it. A round for the same members that is already running is joined, not
        // restarted; one for other members is replaced. Each member names itself with a fresh
        // identity key for the round (`custody/identity.rs`).
        let ids: Vec<NodeId> = members.keys().copied().collect();
        let running = node.state().read().store.keygen().map(|r| (r.epoch, r.participant_ids() == ids));
        match running {
            Some((_, true)) => {}
            other => {
                let epoch = other.map_or(1, |(e, _)| e + 1);
                let mut participants = Vec::with_capacity(members.len());
                for (id, info) in &members {
                    participants.push((*id, node.custody.identity_of(*id, &info.addr, epoch).await?));
                }
                let now_ms = node.now_ms();
                match node.consensus.propose(Command::StartKeyGen { epoch, participants, now_ms }).await {
                    // Another Init finished the round meanwhile: wait for it below.
                    Err(NodeError::Kms(raft::KmsError::AlreadyExists(_)))
                        if node.state().read().store.root().is_some() => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        let generated = |s: &raft::KeyStore| s.root().cloned();
        let root = node.consensus.wait_for_state(KEYGEN_WAIT, generated).await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "the root key generation has not finished within {} s: are a majority of the members up? \
                 Run init again to keep waiting",
                KEYGEN_WAIT.as_secs()
            ))
        })?;
        // Then the log key, so the cluster is ready for clients when Init returns.
        node.custody.ensure_log_key().await?;
        let needed = crypto::threshold::shares_needed(&root.public_key_set)?;
        Ok(AdminOut::Init { shares_needed: needed as u32, holders: root.holders.len() as u32 })
    }

    /// A new root key among the current voters (or joins a rotation already under way), then
    /// waits until it is in force.
    async fn rotate_root(&self) -> Result<AdminOut> {
        let node = &self.node;
        node.ensure_initialized().await?;
        let (before, under_way) = {
            let s = node.state().read();
            let before = s.store.root().map_or(0, |r| r.epoch);
            (before, s.store.next_root().is_some() || (s.store.keygen().is_some() && before > 0))
        };
        if !under_way {
            let voters: Vec<NodeId> = node.consensus.view().voters.into_iter().collect();
            node.custody.start_round(&voters).await?;
        }
        let rotated = |s: &raft::KeyStore| s.root().filter(|r| r.epoch > before).cloned();
        let root = node.consensus.wait_for_state(KEYGEN_WAIT * 2, rotated).await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "the new root key is not in force after {} s: are a majority of the voters up? \
                 It keeps going in the background; `cluster status` shows the root epoch",
                (KEYGEN_WAIT * 2).as_secs()
            ))
        })?;
        let shares_needed = crypto::threshold::shares_needed(&root.public_key_set)? as u32;
        Ok(AdminOut::RotateRoot {
            root_epoch: root.epoch,
            holders: root.holders.keys().copied().collect(),
            shares_needed,
        })
    }

    /// Every member's status (asked of each; what is known of those that do not answer), with
    /// each one's lag behind the leader and the placement warnings.
    async fn cluster_status(&self) -> ClusterStatus {
        let node = &self.node;
        let members = node.consensus.members();
        let mut nodes = Vec::new();
        for (id, info) in &members {
            if *id == node.id() {
                nodes.push(node.local_status());
                continue;
            }
            nodes.push(match self.fleet.local_status(*id, info, PEER_STATUS_TIMEOUT).await {
                Ok(s) => s,
                Err(e) => NodeStatus::unreachable(*id, info, e.to_string()),
            });
        }
        if members.is_empty() {
            nodes.push(node.local_status());
        }
        let leader = nodes.iter().find(|s| s.role == "leader").map(|s| (s.id, s.last_log_index));
        if let Some((_, leader_last)) = leader {
            for s in nodes.iter_mut().filter(|s| s.reachable) {
                s.replication_lag = leader_last.saturating_sub(s.last_log_index);
            }
        }
        let mut placement_warnings = crate::kms::topology::placement_warnings(&node.consensus.view().voter_regions());
        let preferred: std::collections::BTreeSet<&str> =
            nodes.iter().filter(|s| s.reachable).map(|s| s.preferred_leader_region.as_str()).collect();
        if preferred.len() > 1 {
            placement_warnings.push(format!(
                "nodes disagree on raft.preferred_leader_region ({preferred:?}): set the same on every node"
            ));
        }
        ClusterStatus { nodes, leader_id: leader.map(|l| l.0), placement_warnings }
    }
}
