//! Consensus: this node's Raft member, and everything that needs openraft's `Raft` handle.
//!
//! It owns proposing (here or forwarded to the leader), linearizable and bounded-staleness
//! reads (a batched read index; the leader's lease, `lease.rs`), the election timer
//! (`election.rs`), leadership transfer (`transfer.rs`), the node-to-node transport
//! (`network.rs`), and a small view of the membership (`view.rs`: leader, voters, learners,
//! each member's region, when a peer last answered). The replicated state it applies is read
//! through [`Consensus::state`].
//!
//! **Architecture Invariant:** no file outside `consensus/` names openraft's `Raft`; and
//! consensus knows nothing of custody, keys or the KMS: it moves opaque commands and answers
//! "is this node's state fresh enough?".

mod election;
mod lease;
pub mod network;
mod read;
mod rpc;
mod transfer;
mod view;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::Raft;
use proto::internal::RaftPayload;
use raft::{Applied, Command, CommandResult, NodeId, NodeInfo, TypeConfig};
use storage::SharedState;
use tokio::time::Instant;

use crate::config::NodeConfig;
use crate::env::Env;
use crate::error::{NodeError, Result, StartError, StartResult};
use network::{decode, encode, NetworkFactory, Peers};
pub use network::{endpoint, Connector, TcpConnector};
pub use read::Consistency;
pub use view::{Role, View, ViewWatch};

/// This node's Raft member and what it knows of the others.
pub struct Consensus {
    id: NodeId,
    config: Arc<NodeConfig>,
    env: Arc<Env>,
    raft: Raft<TypeConfig>,
    state: SharedState,
    peers: Peers,
    reads: read::ReadBatch,
    last_leader_contact: Mutex<Option<Instant>>,
    /// While this leader hands leadership to another node: the target (0: none). It then
    /// takes no writes and confirms no reads, which would renew the followers' leases and
    /// keep them from voting for the target.
    transferring_to: AtomicU64,
    election_hold: transfer::ElectionHold,
    election: election::ElectionTimer,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Consensus {{ id: {} }}", self.id)
    }
}

impl Consensus {
    /// Starts this node's Raft member on `log` and `state_machine` (whose applied state is
    /// `state`), talking to peers through `connector`.
    pub async fn start<LS, SM>(
        config: Arc<NodeConfig>,
        env: Arc<Env>,
        connector: Arc<dyn Connector>,
        log: LS,
        state_machine: SM,
        state: SharedState,
    ) -> StartResult<Arc<Self>>
    where
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        let id = config.id;
        let peers = Peers::new(connector, config.limits.max_message_bytes);
        let network = NetworkFactory { id, peers: peers.clone() };
        let raft = Raft::new(id, Arc::new(config.openraft_config()?), network, log, state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        // Raft::new has returned: from now on the state machine waits for log keys.
        state.mark_started();
        Ok(Arc::new(Self {
            id,
            config,
            env,
            raft,
            state,
            peers,
            reads: Default::default(),
            last_leader_contact: Mutex::new(None),
            transferring_to: AtomicU64::new(0),
            election_hold: Default::default(),
            election: Default::default(),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The replicated state this node has applied.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// The node-to-node transport (channels to peers, by address).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.raft.request_timeout_ms)
    }

    /// `Unavailable` for a request the cluster did not confirm in time.
    pub fn no_quorum(&self) -> NodeError {
        NodeError::Unavailable(format!(
            "the cluster did not confirm this request within {} ms: it may have lost its quorum; retry later or at \
             another node",
            self.config.raft.request_timeout_ms
        ))
    }

    /// Starts consensus's background duties: the election timer, and (on the leader) keeping
    /// leadership in the preferred region. They run until aborted.
    pub fn spawn_duties(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        vec![tokio::spawn(election::run(self.clone())), tokio::spawn(transfer::run_placement(self.clone()))]
    }

    /// Stops raft (the server is shutting down).
    pub async fn shutdown(&self) -> StartResult<()> {
        self.raft.shutdown().await.map_err(|e| StartError::Raft(format!("shutdown: {e}")))
    }

    /// Replicates a command and returns its outcome. Followers forward it to the leader.
    pub async fn propose(&self, command: Command) -> Result<Applied> {
        let deadline = Instant::now() + self.request_timeout();
        let mut backoff = Duration::from_millis(20);
        loop {
            let attempt = async {
                if self.is_leader() || self.leader().is_none() {
                    return self.propose_local(command.clone()).await;
                }
                let (_, addr) = self.leader().ok_or_else(|| NodeError::Unavailable("no leader".into()))?;
                self.forward(&addr, &command).await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(applied)) => return applied.map_err(NodeError::Kms),
                Ok(Err(NodeError::Unavailable(why))) if Instant::now() + backoff < deadline => {
                    tracing::debug!(%why, "propose: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(self.no_quorum()),
            }
        }
    }

    /// `Unavailable` while leadership is moving away from this node.
    fn check_not_transferring(&self) -> Result<()> {
        match self.transferring_to.load(Ordering::SeqCst) {
            0 => Ok(()),
            target => Err(NodeError::Unavailable(format!("leadership is moving to node {target}; retry"))),
        }
    }

    /// Proposes on this node; `Unavailable` when it is not the leader, is handing leadership
    /// over, or cannot seal the command yet.
    pub async fn propose_local(&self, command: Command) -> Result<CommandResult> {
        self.check_not_transferring()?;
        if let Some(v) = self.state.sealed() {
            return Err(NodeError::Unavailable(format!(
                "node {} is leading but sealed (waiting for log key v{v})",
                self.id
            )));
        }
        if !command.may_be_clear() {
            // The log store would refuse to write it in the clear, and after a root rotation
            // it must be sealed under the newest log key version, which a removed node never
            // learns: wait until this node holds that version (`custody::log_keys`).
            let newest = self.state.read().store.log_keys().keys().next_back().copied();
            let current = self.state.cipher().current();
            if current.is_none() || newest.is_some_and(|v| current < Some(v)) {
                return Err(NodeError::Unavailable(format!(
                    "node {} does not hold log key v{} yet; retry in a moment",
                    self.id,
                    newest.unwrap_or(1)
                )));
            }
        }
        match self.raft.client_write(raft::Payload::Clear(command)).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(NodeError::Unavailable(format!("not the leader (leader hint: {:?})", f.leader_id)))
            }
            Err(RaftError::APIError(e)) => Err(NodeError::Internal(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(NodeError::Unavailable(format!("raft stopped on this node: {e}"))),
        }
    }

    async fn forward(&self, addr: &str, command: &Command) -> Result<CommandResult> {
        let mut client = self.peers.client(addr)?;
        let reply = client.propose(RaftPayload { payload: encode(command)? }).await.map_err(|s| {
            NodeError::Unavailable(format!("forwarding to the leader at {addr} failed: {}", s.message()))
        })?;
        decode(&reply.into_inner().payload).map_err(|s| NodeError::Internal(s.message().to_string()))
    }

    /// Waits, at most `timeout`, until `found` finds what it looks for in this node's applied
    /// state; `None` if it did not in time.
    pub async fn wait_for_state<T>(
        &self,
        timeout: Duration,
        found: impl Fn(&raft::KeyStore) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut applied = self.state.applied_index();
        let wait = async {
            loop {
                if let Some(t) = found(&self.state.read().store) {
                    return Ok(t);
                }
                if applied.changed().await.is_err() {
                    return Err(NodeError::Unavailable("the state machine stopped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut applied = self.state.applied_index();
        tokio::time::timeout(self.request_timeout(), applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| self.no_quorum())?
            .map_err(|_| NodeError::Unavailable("state machine stopped".into()))?;
        Ok(())
    }

    /// The index this node has applied.
    pub fn applied_index(&self) -> u64 {
        *self.state.applied_index().borrow()
    }

    /// When a leader's append last arrived.
    pub fn last_leader_contact(&self) -> Option<Instant> {
        *lock(&self.last_leader_contact)
    }

    /// Records that a leader's append arrived, for bounded-staleness reads.
    fn heard_from_leader(&self) {
        *lock(&self.last_leader_contact) = Some(Instant::now());
    }

    /// Forms a new cluster of `members` (once; a second call on an initialised member is a
    /// no-op).
    pub async fn initialize(&self, members: std::collections::BTreeMap<NodeId, NodeInfo>) -> Result<()> {
        let initialized = self.raft.is_initialized().await.map_err(|e| NodeError::Internal(e.to_string()))?;
        if !initialized {
            self.raft
                .initialize(members)
                .await
                .map_err(|e| NodeError::Unavailable(format!("raft initialise failed: {e}")))?;
        }
        Ok(())
    }

    /// On the leader: adds `id` as a learner, waits (at most `wait`) until it holds every
    /// entry up to its own addition, then makes it a voter.
    pub async fn add_voter(&self, id: NodeId, info: NodeInfo, wait: Duration) -> Result<()> {
        // Learner first, promoted once it holds everything up to its own addition.
        // (openraft's `add_learner(blocking)` calls a learner caught up while it lags by
        // fewer than `replication_lag_threshold` entries, 5000 by default: it returned at
        // once in small clusters, before the learner had a single entry.)
        let added = self.raft.add_learner(id, info, false).await.map_err(|e| NodeError::Unavailable(e.to_string()))?;
        self.raft
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
        self.change_membership(openraft::ChangeMembers::AddVoterIds([id].into())).await
    }

    /// On the leader: removes `id` from the voters, then from the members.
    pub async fn remove_member(&self, id: NodeId) -> Result<()> {
        self.change_membership(openraft::ChangeMembers::RemoveVoters([id].into())).await?;
        self.change_membership(openraft::ChangeMembers::RemoveNodes([id].into())).await
    }

    async fn change_membership(&self, change: openraft::ChangeMembers<NodeId, NodeInfo>) -> Result<()> {
        self.raft.change_membership(change, false).await.map_err(|e| NodeError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Asks for a snapshot of the applied state (built in the background).
    pub async fn trigger_snapshot(&self) -> Result<()> {
        self.raft.trigger().snapshot().await.map_err(|e| NodeError::Unavailable(e.to_string()))
    }

    /// Builds a snapshot covering at least what is applied now and waits (at most `bound`)
    /// for it; its last log index.
    pub async fn snapshot(&self, bound: Duration) -> Result<u64> {
        let before = self.view().snapshot_index;
        self.trigger_snapshot().await?;
        let mut metrics = self.raft.metrics();
        let applied = metrics.borrow().last_applied.map_or(0, |l| l.index);
        let wait = metrics.wait_for(|m| m.snapshot.map_or(0, |l| l.index) >= applied.max(before));
        let m = tokio::time::timeout(bound, wait)
            .await
            .map_err(|_| NodeError::Unavailable(format!("snapshot did not finish within {} s", bound.as_secs())))?
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        Ok(m.snapshot.map_or(0, |l| l.index))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means a panic while holding one of these short locks: continuing with the
    // data is safe (batch bookkeeping, timestamps).
    m.lock().unwrap_or_else(|p| p.into_inner())
}
