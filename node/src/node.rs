//! The node: the assembly of its parts, [`Consensus`] and [`Custody`], with the environment
//! the simulator swaps ([`Env`]: the wall clock and the randomness; the connector that reaches
//! peers goes to consensus).

use std::sync::Arc;

use crypto::SecureRng;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use raft::{NodeId, TypeConfig};
use std::sync::RwLockReadGuard;

use storage::{SharedState, StateMachineData};

use crate::audit::{AuditLog, AuditStore};
use crate::config::NodeConfig;
use crate::consensus::{Connector, Consensus, Consistency};
use crate::custody::identity::Identities;
use crate::custody::Custody;
pub use crate::env::{system_clock, Clock, Env};
use crate::error::{NodeError, Result, StartResult};

/// One keyquorum node.
pub struct Node {
    config: Arc<NodeConfig>,
    env: Arc<Env>,
    pub consensus: Arc<Consensus>,
    pub custody: Arc<Custody>,
    pub audit: Arc<AuditLog>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node {{ id: {} }}", self.config.id)
    }
}

impl Node {
    /// Starts a node on `log` and `state_machine` (whose applied state is `state`), reaching
    /// peers through `connector`, with its identity keys, its audit records and environment.
    /// Serving it is `server::serve`'s job.
    pub async fn start<LS, SM>(
        config: NodeConfig,
        env: Arc<Env>,
        connector: Arc<dyn Connector>,
        (log, state_machine, state): (LS, SM, SharedState),
        identities: Identities,
        audit: Box<dyn AuditStore>,
    ) -> StartResult<Arc<Self>>
    where
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        let config = Arc::new(config);
        let consensus = Consensus::start(config.clone(), env.clone(), connector, log, state_machine, state).await?;
        let custody = Arc::new(Custody::new(config.clone(), env.clone(), consensus.clone(), identities));
        let audit =
            AuditLog::open(config.id, env.clone(), audit, config.audit.retain_segments, crate::grpc::code_name)?;
        Ok(Arc::new(Self { config, env, consensus, custody, audit }))
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Starts the components' background duties (consensus's election timer and leader
    /// placement; custody's key generation, resharing, log keys and cache sweeps). They run
    /// until the handles are aborted.
    pub fn spawn_duties(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = self.consensus.spawn_duties();
        tasks.extend(self.custody.spawn_duties());
        let interval = std::time::Duration::from_millis(self.config.audit.head_interval_ms.max(100));
        tasks.push(tokio::spawn(crate::audit::publish_heads(self.audit.clone(), self.consensus.clone(), interval)));
        tasks
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn now_ms(&self) -> u64 {
        self.env.now_ms()
    }

    pub fn with_rng<T>(&self, f: impl FnOnce(&mut SecureRng) -> T) -> T {
        self.env.with_rng(f)
    }

    /// The replicated state this node has applied.
    pub fn state(&self) -> &SharedState {
        self.consensus.state()
    }

    /// `Unavailable` while this node is sealed: it cannot read its own state until it holds
    /// the log key, unwrapped with t+1 peers' shares.
    pub fn ensure_unsealed(&self) -> Result<()> {
        // Failpoint (simulator self-test): serve while sealed.
        if crate::failpoint("node::serve-while-sealed") {
            return Ok(());
        }
        match self.state().sealed() {
            None => Ok(()),
            Some(v) => Err(self.sealed_error(v)),
        }
    }

    /// This node's state, to serve a call from: `Unavailable` while sealed, checked holding
    /// the lock (a node may become sealed after `ensure_unsealed`, while its read barrier
    /// waits, by installing a snapshot it cannot open yet).
    pub fn open_state(&self) -> Result<RwLockReadGuard<'_, StateMachineData>> {
        if crate::failpoint("node::serve-while-sealed") {
            return Ok(self.state().read());
        }
        self.state().read_open().map_err(|v| self.sealed_error(v))
    }

    fn sealed_error(&self, version: u32) -> NodeError {
        NodeError::Unavailable(format!(
            "node {} is sealed: it is waiting for decryption shares of log key v{version} from its peers (a majority \
             of the cluster must be up); try another node",
            self.id()
        ))
    }

    /// Waits until this node's state is fresh enough for `consistency`; refused while sealed.
    pub async fn linearize(&self, consistency: Consistency) -> Result<()> {
        self.ensure_unsealed()?;
        self.consensus.linearize(consistency).await
    }

    /// The index of the state this node has applied.
    pub fn applied_index(&self) -> u64 {
        self.consensus.applied_index()
    }

    /// Whether this node's state at index `from` already held every write acknowledged
    /// before now (a read index at most `from`); refused while sealed.
    pub async fn covers(&self, from: u64) -> Result<bool> {
        self.ensure_unsealed()?;
        self.consensus.covers(from).await
    }

    /// Fails with `NotInitialized` only when that is the truth: a node that belongs to a
    /// cluster but has no root key may just be behind (it was down while the root key was
    /// made), so it asks the leader first. A definite "not initialised" from stale local state
    /// would tell a client that a retried write had failed when its first attempt had not
    /// (simulator seed 18 with mTLS timings).
    pub async fn ensure_initialized(&self) -> Result<()> {
        self.ensure_unsealed()?;
        if let Ok(true) = self.initialized_locally() {
            return Ok(());
        }
        if self.consensus.members().is_empty() {
            // Not a member of any cluster (yet): this node cannot tell whether the cluster the
            // caller means is initialised; a spare that has not been added says the same. Its
            // answer must not end a client's failover with a definite "not initialised" for a
            // tokened write that a member already committed (simulator seed 4818).
            return Err(NodeError::Unavailable(format!(
                "node {} is not a member of an initialised cluster: run `keyquorum cluster init` if the cluster is \
                 new, or call one of its members",
                self.id()
            )));
        }
        self.linearize(Consistency::Linearizable).await?;
        if self.initialized_locally()? {
            return Ok(());
        }
        Err(NodeError::Kms(raft::KmsError::NotInitialized))
    }

    /// Whether this node's state has a root key and a log key; between the two (a moment
    /// after `Init`'s key generation) it is not ready, and says so as a retryable error.
    fn initialized_locally(&self) -> Result<bool> {
        let s = self.state().read();
        match (s.store.root().is_some(), s.store.log_keys().is_empty()) {
            (false, _) => Ok(false),
            (true, false) => Ok(true),
            (true, true) => Err(NodeError::Unavailable(
                "the cluster has its root key and is creating its log key; retry in a moment".into(),
            )),
        }
    }
}
