//! The node: one Raft member with its state, peers, identity and custody of its root-key share.
//! Everything the gRPC services do goes through here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypto::threshold::ShareHolder;
use crypto::{SecretBytes, SecureRng};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use proto::internal::{RaftPayload, ReadIndexRequest};
use raft::{Applied, Command, KeyRef, KeySpec, KeyState, NodeId, NodeInfo, TypeConfig, VersionState, WrappedMaterial};
use storage::SharedState;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::identity::Identities;
use crate::network::{decode, encode, Connector, Peers};

/// Wall-clock milliseconds since the Unix epoch. Injected so the simulator controls it.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    })
}

/// Serialises the unwrapping of one key version.
pub(crate) type UnwrapSlot = Arc<tokio::sync::Mutex<()>>;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    /// Local state, if this node heard from a leader within the bound; otherwise an error
    /// or, with `read_index_when_stale`, a read index through the leader.
    BoundedStaleness {
        max_staleness_ms: u64,
        read_index_when_stale: bool,
    },
}

pub struct Node<C> {
    pub id: NodeId,
    pub config: NodeConfig,
    pub raft: Raft<TypeConfig>,
    pub state: SharedState,
    pub peers: Peers<C>,
    pub clock: Clock,
    pub identities: Identities,
    /// This node's shares, by root epoch (the root's and, during a rotation, the next root's).
    shares: Mutex<BTreeMap<u64, Arc<ShareHolder>>>,
    /// (root round, applied index): old identity keys are erased once a snapshot reaches it.
    erase_after_snapshot: Mutex<Option<(u64, u64)>>,
    rng: Mutex<SecureRng>,
    /// Unwrapped material by (key, version): the material, its expiry, and the root epoch its
    /// wrapping was under (a root rotation re-wraps, and so evicts).
    cache: Mutex<BTreeMap<(Uuid, u32), CachedMaterial>>,
    cache_stats: CacheStats,
    /// One lock per version being unwrapped right now (single-flight unwraps).
    unwrapping: Mutex<BTreeMap<(Uuid, u32), UnwrapSlot>>,
    /// Wrapped ciphertexts this node has checked before giving shares for them.
    /// By (key, version, root epoch): a re-wrap under a new root is a new ciphertext.
    verified: Mutex<std::collections::BTreeSet<(Uuid, u32, u64)>>,
    reads: Mutex<ReadBatch>,
    last_leader_contact: Mutex<Option<Instant>>,
    pub(crate) election_hold: crate::transfer::ElectionHold,
    /// While this leader hands leadership to another node: the target (0: none). It then
    /// takes no writes and confirms no reads, which would renew the followers' leases and
    /// keep them from voting for the target.
    pub(crate) transferring_to: AtomicU64,
    pub(crate) election: crate::election::ElectionTimer,
    /// Faulty decryption shares received, by the holder that gave them.
    faulty_shares: Mutex<BTreeMap<NodeId, u64>>,
}

impl<C> std::fmt::Debug for Node<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node {{ id: {} }}", self.id)
    }
}

/// Cached material, its expiry, and the root epoch of the wrapping it came from.
type CachedMaterial = (SecretBytes, Instant, u64);

/// Counters of the unwrapped-material cache, for status.
#[derive(Debug, Default)]
struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// What status shows of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

#[derive(Default)]
struct ReadBatch {
    running: bool,
    waiters: Vec<oneshot::Sender<std::result::Result<u64, String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means a panic while holding one of these short locks: continuing with the
    // data is safe (caches, RNG, batch bookkeeping).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: Connector> Node<C> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: NodeConfig,
        raft: Raft<TypeConfig>,
        state: SharedState,
        peers: Peers<C>,
        clock: Clock,
        identities: Identities,
        rng: SecureRng,
    ) -> Self {
        // Raft::new has returned: from now on the state machine waits for log keys.
        state.mark_started();
        Self {
            id: config.id,
            config,
            raft,
            state,
            peers,
            clock,
            identities,
            shares: Mutex::new(BTreeMap::new()),
            erase_after_snapshot: Mutex::new(None),
            rng: Mutex::new(rng),
            cache: Mutex::new(BTreeMap::new()),
            cache_stats: CacheStats::default(),
            unwrapping: Mutex::new(BTreeMap::new()),
            verified: Mutex::new(Default::default()),
            reads: Mutex::new(ReadBatch::default()),
            last_leader_contact: Mutex::new(None),
            election_hold: Default::default(),
            transferring_to: AtomicU64::new(0),
            election: Default::default(),
            faulty_shares: Mutex::new(BTreeMap::new()),
        }
    }

    /// Which key versions' material this node holds unwrapped now (the simulator checks that
    /// none is outside its key's regions).
    pub fn cached_material(&self) -> Vec<(Uuid, u32)> {
        lock(&self.cache).keys().copied().collect()
    }

    /// Decryption shares from each holder that failed verification, since this node started.
    pub fn faulty_share_counts(&self) -> BTreeMap<NodeId, u64> {
        lock(&self.faulty_shares).clone()
    }

    pub(crate) fn count_faulty_shares(&self, nodes: &[NodeId]) {
        let mut counts = lock(&self.faulty_shares);
        for id in nodes {
            *counts.entry(*id).or_default() += 1;
        }
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The identity public key this node uses in key generation round `round` (made on first
    /// use, durably).
    pub fn identity_public(&self, round: u64) -> Result<Vec<u8>> {
        self.with_rng(|rng| self.identities.public_for_round(round, rng))
    }

    pub fn with_rng<T>(&self, f: impl FnOnce(&mut SecureRng) -> T) -> T {
        f(&mut lock(&self.rng))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.raft.request_timeout_ms)
    }

    /// The current leader and its address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node.addr))
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// When a leader's append last arrived.
    pub fn last_leader_contact(&self) -> Option<Instant> {
        *lock(&self.last_leader_contact)
    }

    /// Records that a leader's append arrived, for bounded-staleness reads.
    pub fn heard_from_leader(&self) {
        *lock(&self.last_leader_contact) = Some(Instant::now());
    }

    /// Fails with `NotInitialized` only when that is the truth: a node that belongs to a
    /// cluster but has no root key may just be behind (it was down while the root key was
    /// made), so it asks the leader first. A definite "not initialised" from stale local state
    /// would tell a client that a retried write had failed when its first attempt had not
    /// (simulator seed 18 with mTLS timings).
    pub async fn ensure_initialized(self: &Arc<Self>) -> Result<()> {
        self.ensure_unsealed()?;
        if let Ok(true) = self.initialized_locally() {
            return Ok(());
        }
        if self.members().is_empty() {
            // Not a member of any cluster (yet): this node cannot tell whether the cluster the
            // caller means is initialised; a spare that has not been added says the same. Its
            // answer must not end a client's failover with a definite "not initialised" for a
            // tokened write that a member already committed (simulator seed 4818).
            return Err(NodeError::Unavailable(format!(
                "node {} is not a member of an initialised cluster: run `keyquorum cluster init` if the cluster is \
                 new, or call one of its members",
                self.id
            )));
        }
        self.linearize(Consistency::Linearizable).await?;
        if self.initialized_locally()? {
            return Ok(());
        }
        Err(NodeError::NotInitialized)
    }

    /// Whether this node's state has a root key and a log key; between the two (a moment
    /// after `Init`'s key generation) it is not ready, and says so as a retryable error.
    fn initialized_locally(&self) -> Result<bool> {
        let s = self.state.read();
        match (s.store.root().is_some(), s.store.log_keys().is_empty()) {
            (false, _) => Ok(false),
            (true, false) => Ok(true),
            (true, true) => Err(NodeError::Unavailable(
                "the cluster has its root key and is creating its log key; retry in a moment".into(),
            )),
        }
    }

    /// `Unavailable` while this node is sealed: it cannot read its own state until it holds
    /// the log key, unwrapped with t+1 peers' shares.
    pub fn ensure_unsealed(&self) -> Result<()> {
        // Failpoint (simulator self-test): serve while sealed.
        if crate::failpoint("node::serve-while-sealed") {
            return Ok(());
        }
        match self.state.sealed() {
            None => Ok(()),
            Some(v) => Err(NodeError::Unavailable(format!(
                "node {} is sealed: it is waiting for decryption shares of log key v{v} from its peers (a majority \
                 of the cluster must be up); try another node",
                self.id
            ))),
        }
    }

    /// Makes the first log key if the cluster has a root key and none yet (`Init` after the
    /// key generation; the leader's duties if that `Init` died). The proposer keeps what it
    /// proposed, so it need not unwrap it.
    pub async fn ensure_log_key(&self) -> Result<()> {
        if !self.state.read().store.log_keys().is_empty() {
            return Ok(());
        }
        let (key, wrapped) = self.new_material(KeySpec::Aes256GcmSiv)?;
        let now_ms = self.now_ms();
        match self.propose(Command::AddLogKey { version: 1, key: wrapped, now_ms }).await {
            Ok(_) => {
                self.state.cipher().install(1, key).map_err(NodeError::Internal)?;
                tracing::info!("log key v1 created: the log and snapshots are encrypted at rest from here on");
                Ok(())
            }
            Err(NodeError::Kms(raft::KmsError::AlreadyExists(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Proposes a command carrying fresh material of `spec`, made by `command` from its
    /// wrapping. If a root rotation replaced the root it was wrapped under before it applied
    /// (`StaleRoot`, never recorded under the command's token), waits until this node's state
    /// knows the newer root, wraps new material under it and proposes again: clients never
    /// see a rotation. Returns the outcome, the plaintext and the wrapping proposed last.
    pub async fn propose_with_material(
        &self,
        spec: KeySpec,
        command: impl Fn(WrappedMaterial) -> Command,
    ) -> Result<(Applied, SecretBytes, WrappedMaterial)> {
        let mut attempts = 0;
        loop {
            let (material, wrapped) = self.new_material(spec)?;
            match self.propose(command(wrapped.clone())).await {
                Err(NodeError::Kms(raft::KmsError::StaleRoot(why))) if attempts < 3 => {
                    attempts += 1;
                    tracing::debug!(%why, "root rotated under a proposal: wrapping again");
                    let stale = wrapped.root_epoch;
                    let newer = |s: &raft::KeyStore| s.newest_root().filter(|r| r.epoch > stale).map(drop);
                    self.wait_for_state(self.request_timeout(), newer)
                        .await?
                        .ok_or_else(|| no_quorum(self.config.raft.request_timeout_ms))?;
                }
                other => return other.map(|applied| (applied, material, wrapped)),
            }
        }
    }

    /// Waits, at most `timeout`, until `found` finds what it looks for in this node's applied
    /// state; `None` if it did not in time.
    pub(crate) async fn wait_for_state<T>(
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
                Err(_) => return Err(no_quorum(self.config.raft.request_timeout_ms)),
            }
        }
    }

    /// Proposes on this node; `Unavailable` when it is not the leader.
    /// `Unavailable` while leadership is moving away from this node.
    fn check_not_transferring(&self) -> Result<()> {
        match self.transferring_to.load(Ordering::SeqCst) {
            0 => Ok(()),
            target => Err(NodeError::Unavailable(format!("leadership is moving to node {target}; retry"))),
        }
    }

    pub async fn propose_local(&self, command: Command) -> Result<raft::CommandResult> {
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
            // learns: wait until this node holds that version (`keep_log_keys`).
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

    async fn forward(&self, addr: &str, command: &Command) -> Result<raft::CommandResult> {
        let mut client = self.peers.client(addr)?;
        let reply = client.propose(RaftPayload { payload: encode(command)? }).await.map_err(|s| {
            NodeError::Unavailable(format!("forwarding to the leader at {addr} failed: {}", s.message()))
        })?;
        decode(&reply.into_inner().payload).map_err(|s| NodeError::Internal(s.message().to_string()))
    }

    /// Waits until this node's state is fresh enough for `consistency`.
    pub async fn linearize(self: &Arc<Self>, consistency: Consistency) -> Result<()> {
        self.ensure_unsealed()?;
        match consistency {
            Consistency::Linearizable => {
                // Failpoint (simulator self-test): serve from local state, skipping the read index.
                if crate::failpoint("node::read-without-read-index") {
                    return Ok(());
                }
                let index = self.read_index().await?;
                self.wait_applied(index).await
            }
            Consistency::BoundedStaleness { max_staleness_ms, read_index_when_stale } => {
                let bound = Duration::from_millis(max_staleness_ms);
                let fresh = if self.is_leader() {
                    self.quorum_heard_within(bound)
                } else {
                    lock(&self.last_leader_contact).is_some_and(|t| t.elapsed() <= bound)
                };
                if fresh {
                    Ok(())
                } else if read_index_when_stale {
                    let index = self.read_index().await?;
                    self.wait_applied(index).await
                } else {
                    Err(NodeError::Unavailable(format!(
                        "node {} has not heard from a leader within {max_staleness_ms} ms; retry with LINEARIZABLE, \
                         ON_STALE_READ_INDEX or another node",
                        self.id
                    )))
                }
            }
        }
    }

    /// A read index shared by every request waiting at the moment a round starts: requests
    /// that arrive while a round is in flight join the next one, never the current one (which
    /// may have been confirmed before they arrived).
    pub async fn read_index(self: &Arc<Self>) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut batch = lock(&self.reads);
            batch.waiters.push(tx);
            !std::mem::replace(&mut batch.running, true)
        };
        if start {
            let node = self.clone();
            tokio::spawn(async move {
                loop {
                    let waiters = {
                        let mut batch = lock(&node.reads);
                        if batch.waiters.is_empty() {
                            batch.running = false;
                            return;
                        }
                        std::mem::take(&mut batch.waiters)
                    };
                    let result = node.read_index_round().await.map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            });
        }
        match rx.await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(why)) => Err(NodeError::Unavailable(why)),
            Err(_) => Err(NodeError::Internal("read-index round dropped".into())),
        }
    }

    async fn read_index_round(&self) -> Result<u64> {
        let timeout_ms = self.config.raft.request_timeout_ms;
        let round = async {
            if self.is_leader() {
                return self.leader_read_index().await;
            }
            let (leader, addr) = self.leader().ok_or_else(|| {
                NodeError::Unavailable("no leader is known: the cluster may have lost its quorum; retry".into())
            })?;
            let mut client = self.peers.client(&addr)?;
            let reply = client.read_index(ReadIndexRequest {}).await.map_err(|s| {
                NodeError::Unavailable(format!("read index from leader {leader} at {addr} failed: {}", s.message()))
            })?;
            Ok(reply.into_inner().index)
        };
        tokio::time::timeout(self.request_timeout(), round).await.map_err(|_| no_quorum(timeout_ms))?
    }

    /// On the leader: the index reads must see, from the read lease (`crate::lease`) or
    /// after confirming leadership with a quorum.
    pub async fn leader_read_index(&self) -> Result<u64> {
        // The lease renews nobody's, so it may serve during a transfer too.
        if let Some(index) = self.lease_read_index().await {
            return Ok(index);
        }
        self.check_not_transferring()?;
        let (read_log_id, _) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(|e| NodeError::Unavailable(format!("leadership not confirmed: {e}")))?;
        Ok(read_log_id.map_or(0, |l| l.index))
    }

    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut applied = self.state.applied_index();
        let timeout_ms = self.config.raft.request_timeout_ms;
        tokio::time::timeout(self.request_timeout(), applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| no_quorum(timeout_ms))?
            .map_err(|_| NodeError::Unavailable("state machine stopped".into()))?;
        Ok(())
    }

    /// Fresh key material of `spec`, wrapped under the newest root key (the next root while a
    /// rotation is under way). Returns the plaintext too, so the proposer can cache it once
    /// the command commits.
    pub fn new_material(&self, spec: KeySpec) -> Result<(SecretBytes, WrappedMaterial)> {
        let root = self.state.read().store.newest_root().cloned().ok_or(NodeError::NotInitialized)?;
        self.with_rng(|rng| {
            let material = match spec {
                KeySpec::Aes256GcmSiv => SecretBytes::new(rng.bytes::<32>().to_vec()),
                KeySpec::EccNistP384 => crypto::ecdsa::generate_scalar(rng),
            };
            let public_key = match spec {
                KeySpec::Aes256GcmSiv => None,
                KeySpec::EccNistP384 => Some(crypto::ecdsa::public_key_sec1(&material)?),
            };
            let wrapped = crypto::threshold::wrap(&root.public_key_set, &material, rng)?;
            Ok((
                material,
                WrappedMaterial {
                    root_epoch: root.epoch,
                    ciphertext: wrapped.ciphertext,
                    kcv: wrapped.kcv,
                    public_key,
                },
            ))
        })
    }

    pub fn cache_get(&self, key_id: Uuid, version: u32) -> Option<SecretBytes> {
        let mut cache = lock(&self.cache);
        let found = match cache.get(&(key_id, version)) {
            Some((m, expires, _)) if *expires > Instant::now() => Some(m.clone()),
            Some(_) => {
                cache.remove(&(key_id, version));
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.cache_stats.hits } else { &self.cache_stats.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn cache_counts(&self) -> CacheCounts {
        CacheCounts {
            entries: lock(&self.cache).len() as u64,
            hits: self.cache_stats.hits.load(Ordering::Relaxed),
            misses: self.cache_stats.misses.load(Ordering::Relaxed),
            evictions: self.cache_stats.evictions.load(Ordering::Relaxed),
        }
    }

    /// Evicts every cached version that the replicated state no longer allows to be used: its
    /// key or version is not enabled (disabled, pending deletion, destroyed), or its material
    /// was wrapped under another root epoch. Run after every applied entry, on every node, so
    /// a disable evicts at once everywhere, not only where it was requested.
    pub(crate) fn sweep_cache(&self) {
        // One lock at a time: the cache's, then the state's, then the cache's again.
        let cached: Vec<((Uuid, u32), u64)> = lock(&self.cache).iter().map(|(k, (_, _, e))| (*k, *e)).collect();
        if cached.is_empty() {
            return;
        }
        let stale: Vec<(Uuid, u32)> = {
            let state = self.state.read();
            let usable = |id: Uuid, version: u32, epoch: u64| {
                let Ok(key) = state.store.resolve(&KeyRef::Id(id)) else { return false };
                let Ok(v) = key.version(version) else { return false };
                key.state == KeyState::Enabled
                    && key.allows_region(&self.config.region)
                    && v.state == VersionState::Enabled
                    && v.material.as_ref().is_some_and(|m| m.root_epoch == epoch)
            };
            cached.into_iter().filter(|((id, v), e)| !usable(*id, *v, *e)).map(|(k, _)| k).collect()
        };
        let mut cache = lock(&self.cache);
        let evicted = stale.iter().filter(|k| cache.remove(k).is_some()).count() as u64;
        self.cache_stats.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Caches `(key_id, version)`'s material, unwrapped from (or made for) a wrapping under
    /// root epoch `epoch`.
    pub fn cache_put(&self, key_id: Uuid, version: u32, epoch: u64, material: SecretBytes) {
        let ttl = Duration::from_millis(self.config.material_cache_ttl_ms);
        lock(&self.cache).insert((key_id, version), (material, Instant::now() + ttl, epoch));
    }

    pub(crate) fn wrapped_verified(&self, id: (Uuid, u32, u64)) -> bool {
        lock(&self.verified).contains(&id)
    }

    pub(crate) fn mark_wrapped_verified(&self, id: (Uuid, u32, u64)) {
        lock(&self.verified).insert(id);
    }

    /// The lock that serialises unwrapping `(key_id, version)`.
    pub(crate) fn unwrap_slot(&self, key_id: Uuid, version: u32) -> UnwrapSlot {
        lock(&self.unwrapping).entry((key_id, version)).or_default().clone()
    }

    /// Forgets the slot once nobody else holds or waits on it.
    pub(crate) fn release_unwrap_slot(&self, key_id: Uuid, version: u32, slot: UnwrapSlot) {
        let mut slots = lock(&self.unwrapping);
        // One reference in the map, one here: nobody else is waiting.
        if Arc::strong_count(&slot) <= 2 {
            slots.remove(&(key_id, version));
        }
    }

    /// Drops every cached version of a key (on disable, deletion, destruction).
    pub fn cache_evict(&self, key_id: Uuid) {
        let mut cache = lock(&self.cache);
        let before = cache.len();
        cache.retain(|(id, _), _| *id != key_id);
        self.cache_stats.evictions.fetch_add((before - cache.len()) as u64, Ordering::Relaxed);
    }

    /// This node's share of the root key of `epoch` (the root or, during a rotation, the next
    /// root), opened from the replicated transcript with its identity key for that round.
    /// `None` if this node is not one of that root's holders.
    pub fn share_holder(&self, epoch: u64) -> Result<Option<Arc<ShareHolder>>> {
        if let Some(h) = lock(&self.shares).get(&epoch) {
            return Ok(Some(h.clone()));
        }
        let (index, pks, transcript) = {
            let state = self.state.read();
            let Some(root) = state.store.root_of_epoch(epoch) else { return Ok(None) };
            let Some(holder) = root.holders.get(&self.id) else { return Ok(None) };
            (holder.share_index as usize, root.public_key_set.clone(), root.transcript.clone())
        };
        // Our share is sealed to our identity key, spread over the key generation's transcript.
        let complete = transcript.complete_parts();
        let parts: Vec<_> = complete.iter().map(|(part, acks)| crypto::dkg::CompletePart { part, acks }).collect();
        let n = transcript.participants.len();
        let identity = self.identities.get(transcript.epoch).ok_or_else(|| {
            NodeError::Internal(format!(
                "my identity key for key generation round {} is gone: this node cannot derive its root-key share",
                transcript.epoch
            ))
        })?;
        let share = crypto::dkg::derive_share(transcript.threshold, n, index, &identity, &parts)
            .map_err(|e| NodeError::Internal(format!("my root-key share cannot be derived: {e}")))?;
        if !share.matches(&pks)? {
            return Err(NodeError::Internal(
                "my root-key share does not match the cluster's public key set (wrong identity key?)".into(),
            ));
        }
        let share = Arc::new(share);
        lock(&self.shares).insert(epoch, share.clone());
        Ok(Some(share))
    }

    /// Erases the identity keys of rounds that can no longer matter: every round older than the
    /// one that made the current root key, except a round still running. With them go this
    /// node's shares of any root key those rounds made. Rounds newer than the root's are kept:
    /// a leader may have asked for a key for a round it is about to start.
    ///
    /// Only once a snapshot holding the new keyring is durable (one is triggered): a node that
    /// restarts is sealed and reads its keyring from its snapshot alone, so that keyring must
    /// name a root whose shares still exist, or a cluster-wide restart could never unseal.
    pub(crate) async fn erase_stale_identities(&self) {
        if self.state.sealed().is_some() {
            return;
        }
        let (root_round, running, epochs) = {
            let s = self.state.read();
            let epochs: Vec<u64> =
                [s.store.root(), s.store.next_root()].into_iter().flatten().map(|r| r.epoch).collect();
            (s.store.root().map(|r| r.transcript.epoch), s.store.keygen().map(|r| r.epoch), epochs)
        };
        let Some(root_round) = root_round else { return };
        // Shares of replaced roots go from memory at once (zeroized on drop).
        lock(&self.shares).retain(|epoch, _| epochs.contains(epoch));
        let keep = |round: u64| round >= root_round || Some(round) == running;
        if self.identities.rounds().into_iter().all(keep) {
            return;
        }
        let applied = *self.state.applied_index().borrow();
        let snapshot = self.raft.metrics().borrow().snapshot.map_or(0, |l| l.index);
        let wait_for = {
            let mut pending = lock(&self.erase_after_snapshot);
            match *pending {
                Some((round, index)) if round == root_round => index,
                _ => {
                    *pending = Some((root_round, applied));
                    applied
                }
            }
        };
        if snapshot < wait_for {
            if let Err(e) = self.raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "cannot trigger the snapshot old identity keys wait for");
            }
            return;
        }
        match self.with_rng(|rng| self.identities.retain(keep, rng)) {
            Ok(erased) if !erased.is_empty() => {
                tracing::info!(?erased, "identity keys of finished key generation rounds erased");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot erase old identity keys; will retry"),
        }
    }

    /// Members of the current membership config: `(id, info)`.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().nodes().map(|(id, n)| (*id, n.clone())).collect()
    }
}

pub(crate) fn no_quorum(timeout_ms: u64) -> NodeError {
    NodeError::Unavailable(format!(
        "the cluster did not confirm this request within {timeout_ms} ms: it may have lost its quorum; retry later or at another node"
    ))
}
