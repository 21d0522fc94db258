//! Custody: this node's part of the threshold root key, and every piece of key material it
//! handles.
//!
//! - `identity.rs`: this node's identity keys, one per key generation round, on disk.
//! - `keygen.rs`: its part in generating a root key; `reshare.rs`: moving the root key to the
//!   voters, and rotating it.
//! - `unwrap.rs`: unwrapping a key version or a log key version with t+1 decryption shares;
//!   `serve.rs`: giving this node's share to a peer, and when it refuses.
//! - `cache.rs`: unwrapped material in memory (TTL, epochs, counters, single flight).
//! - `log_keys.rs`: the log key versions this node holds (unsealing), and the first one.
//! - `region.rs`: which nodes may hold a region-restricted key's material, and re-wraps
//!   delegated to them.
//!
//! Custody uses consensus through narrow methods (propose, wait until applied, the membership
//! view, the applied state); consensus knows nothing of custody.
//!
//! **Architecture Invariant:** unwrapped material and shares exist only in memory, in
//! zeroizing types, and are never logged; a node contributes a share only for a wrapped entry
//! its own replicated state holds, to a current member, and only in the key's regions.

mod cache;
pub mod identity;
mod keygen;
mod log_keys;
mod region;
mod reshare;
mod serve;
mod unwrap;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypto::threshold::ShareHolder;
use crypto::SecretBytes;
use raft::{Applied, Command, KeyRef, KeySpec, KeyState, NodeId, VersionState, WrappedMaterial};
use uuid::Uuid;

pub use cache::CacheCounts;
use identity::Identities;

use crate::config::NodeConfig;
use crate::consensus::Consensus;
use crate::env::Env;
use crate::error::{NodeError, Result};

/// This node's custody of the root key and of key material.
pub struct Custody {
    id: NodeId,
    config: Arc<NodeConfig>,
    env: Arc<Env>,
    consensus: Arc<Consensus>,
    identities: Identities,
    /// This node's shares, by root epoch (the root's and, during a rotation, the next root's).
    shares: Mutex<BTreeMap<u64, Arc<ShareHolder>>>,
    /// (root round, applied index): old identity keys are erased once a snapshot reaches it.
    erase_after_snapshot: Mutex<Option<(u64, u64)>>,
    /// The root epoch of the durable snapshot this node last reported, and the root epoch then
    /// (`report_durable_snapshot`).
    durable_reported: Mutex<(u64, u64)>,
    cache: cache::MaterialCache,
    /// Wrapped ciphertexts this node has checked before giving shares for them.
    /// By (key, version, root epoch): a re-wrap under a new root is a new ciphertext.
    verified: Mutex<BTreeSet<(Uuid, u32, u64)>>,
    /// Faulty decryption shares received, by the holder that gave them.
    faulty_shares: Mutex<BTreeMap<NodeId, u64>>,
}

impl std::fmt::Debug for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custody {{ id: {}, identities: {:?} }}", self.id, self.identities)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means a panic while holding one of these short locks: continuing with the
    // data is safe (caches, counters, bookkeeping).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Custody {
    pub fn new(config: Arc<NodeConfig>, env: Arc<Env>, consensus: Arc<Consensus>, identities: Identities) -> Self {
        let ttl = Duration::from_millis(config.material_cache_ttl_ms);
        Self {
            id: config.id,
            config,
            env,
            consensus,
            identities,
            shares: Mutex::new(BTreeMap::new()),
            erase_after_snapshot: Mutex::new(None),
            durable_reported: Mutex::new((0, 0)),
            cache: cache::MaterialCache::new(ttl),
            verified: Mutex::new(BTreeSet::new()),
            faulty_shares: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts custody's background duties: this node's part in key generation, resharing (on
    /// the leader), unwrapping log keys (and making the first), and evicting what the applied
    /// state no longer allows. They run until the handles are aborted.
    pub fn spawn_duties(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(keygen::run(self.clone())),
            tokio::spawn(reshare::run(self.clone())),
            tokio::spawn(log_keys::run(self.clone())),
            tokio::spawn(log_keys::first(self.clone())),
            tokio::spawn(sweep_on_apply(self.clone())),
        ]
    }

    /// Which key versions' material this node holds unwrapped now (the simulator checks that
    /// none is outside its key's regions).
    pub fn cached_material(&self) -> Vec<(Uuid, u32)> {
        self.cache.keys()
    }

    pub fn cache_counts(&self) -> CacheCounts {
        self.cache.counts()
    }

    /// Drops every cached version of a key (on disable, deletion, destruction).
    pub fn evict(&self, key_id: Uuid) {
        self.cache.evict_key(key_id);
    }

    /// Caches material this node made for `(key_id, version)` under root epoch `epoch` (a
    /// create or rotation proposed here needs no unwrap).
    pub fn remember(&self, key_id: Uuid, version: u32, epoch: u64, material: SecretBytes) {
        self.cache.put(key_id, version, epoch, material);
    }

    /// Decryption shares from each holder that failed verification, since this node started.
    pub fn faulty_share_counts(&self) -> BTreeMap<NodeId, u64> {
        lock(&self.faulty_shares).clone()
    }

    fn count_faulty_shares(&self, nodes: &[NodeId]) {
        let mut counts = lock(&self.faulty_shares);
        for id in nodes {
            *counts.entry(*id).or_default() += 1;
        }
    }

    /// The key generation rounds this node holds an identity key for.
    pub fn identity_rounds(&self) -> Vec<u64> {
        self.identities.rounds()
    }

    /// The identity public key this node uses in key generation round `round` (made on first
    /// use, durably).
    pub fn identity_public(&self, round: u64) -> Result<Vec<u8>> {
        self.env.with_rng(|rng| self.identities.public_for_round(round, rng))
    }

    /// Fresh key material of `spec`, wrapped under the newest root key (the next root while a
    /// rotation is under way). Returns the plaintext too, so the proposer can cache it once
    /// the command commits.
    pub fn new_material(&self, spec: KeySpec) -> Result<(SecretBytes, WrappedMaterial)> {
        let root = self
            .consensus
            .state()
            .read()
            .store
            .newest_root()
            .cloned()
            .ok_or(NodeError::Kms(raft::KmsError::NotInitialized))?;
        self.env.with_rng(|rng| {
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
            match self.consensus.propose(command(wrapped.clone())).await {
                Err(NodeError::Kms(why @ raft::KmsError::StaleRoot { .. })) if attempts < 3 => {
                    attempts += 1;
                    tracing::debug!(%why, "root rotated under a proposal: wrapping again");
                    let stale = wrapped.root_epoch;
                    let newer = |s: &raft::KeyStore| s.newest_root().filter(|r| r.epoch > stale).map(drop);
                    let timeout = Duration::from_millis(self.config.raft.request_timeout_ms);
                    self.consensus.wait_for_state(timeout, newer).await?.ok_or_else(|| self.consensus.no_quorum())?;
                }
                other => return other.map(|applied| (applied, material, wrapped)),
            }
        }
    }

    /// The root key of `epoch` as this node's replicated state knows it: the root, the next
    /// root, or a replaced root kept retired until every holder is past it.
    pub(crate) fn known_root(&self, epoch: u64) -> Option<raft::RootKey> {
        let state = self.consensus.state().read();
        let retired = state.store.retired().get(&epoch).map(|r| &r.root);
        state.store.root_of_epoch(epoch).or(retired).cloned()
    }

    /// This node's share of the root key of `epoch` (the root, the next root during a
    /// rotation, or a retired root), opened from the replicated transcript with its identity key for that round.
    /// `None` if this node is not one of that root's holders.
    pub fn share_holder(&self, epoch: u64) -> Result<Option<Arc<ShareHolder>>> {
        if let Some(h) = lock(&self.shares).get(&epoch) {
            return Ok(Some(h.clone()));
        }
        let (index, pks, transcript) = {
            let Some(root) = self.known_root(epoch) else { return Ok(None) };
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

    /// Evicts every cached version that the replicated state no longer allows to be used: its
    /// key or version is not enabled (disabled, pending deletion, destroyed), its key may not
    /// be held in this node's region, or its material was wrapped under another root epoch.
    /// Run after every applied entry, on every node, so a disable evicts at once everywhere,
    /// not only where it was requested.
    fn sweep_cache(&self) {
        let state = self.consensus.state();
        self.cache.sweep(|id, version, epoch| {
            let state = state.read();
            let Ok(key) = state.store.resolve(&KeyRef::Id(id)) else { return false };
            let Ok(v) = key.version(version) else { return false };
            key.state == KeyState::Enabled
                && key.allows_region(&self.config.region)
                && v.state == VersionState::Enabled
                && v.material.as_ref().is_some_and(|m| m.root_epoch == epoch)
        });
    }

    /// Tells the cluster, once, that this node's durable snapshot is under a newer root than a
    /// retired one (`raft::RetiredRoot`), and takes such a snapshot if it has none yet: a
    /// retired root is let go once every holder has said so.
    async fn report_durable_snapshot(&self) {
        let state = self.consensus.state();
        if state.sealed().is_some() {
            return;
        }
        let (oldest_retired, reported, root_epoch) = {
            let s = state.read();
            let oldest = s.store.retired().keys().next().copied();
            (oldest, s.store.snapshot_epoch(self.id), s.store.root().map(|r| r.epoch))
        };
        let (Some(oldest), Some(root_epoch)) = (oldest_retired, root_epoch) else { return };
        let durable = state.durable_root_epoch().unwrap_or(0);
        if durable <= oldest {
            if durable < root_epoch {
                if let Err(e) = self.consensus.trigger_snapshot().await {
                    tracing::warn!(error = %e, "cannot trigger the snapshot a retired root waits for");
                }
            }
            return;
        }
        // Reported, as the state shows, or proposed already under this root (its apply may
        // not have reached us yet). A report the state dropped (it kept only the holders'
        // then, and this node became a holder since: simulator seed 9220) is made again.
        if reported.is_some_and(|r| r >= durable) || *lock(&self.durable_reported) >= (durable, root_epoch) {
            return;
        }
        let command = Command::SnapshotDurable { node: self.id, root_epoch: durable, now_ms: self.env.now_ms() };
        match self.consensus.propose(command).await {
            Ok(_) => *lock(&self.durable_reported) = (durable, root_epoch),
            Err(e) => tracing::debug!(error = %e, "reporting the durable snapshot failed; will retry"),
        }
    }

    /// Erases the identity keys of rounds that can no longer matter: every round older than the
    /// one that made the current root key, except a round still running. With them go this
    /// node's shares of any root key those rounds made. Rounds newer than the root's are kept:
    /// a leader may have asked for a key for a round it is about to start.
    ///
    /// Only once a snapshot holding the new keyring is durable (one is triggered): a node that
    /// restarts is sealed and reads its keyring from its snapshot alone, so that keyring must
    /// name a root whose shares still exist, or a cluster-wide restart could never unseal.
    async fn erase_stale_identities(&self) {
        let state = self.consensus.state();
        if state.sealed().is_some() {
            return;
        }
        let (root_round, running, epochs, retired_rounds) = {
            let s = state.read();
            let retired = s.store.retired().values().map(|r| &r.root);
            let epochs: Vec<u64> =
                [s.store.root(), s.store.next_root()].into_iter().flatten().chain(retired).map(|r| r.epoch).collect();
            let retired_rounds: Vec<u64> = s.store.retired().values().map(|r| r.root.transcript.epoch).collect();
            (s.store.root().map(|r| r.transcript.epoch), s.store.keygen().map(|r| r.epoch), epochs, retired_rounds)
        };
        let Some(root_round) = root_round else { return };
        // Shares of roots let go go from memory at once (zeroized on drop).
        lock(&self.shares).retain(|epoch, _| epochs.contains(epoch));
        // A retired root's round stays until every holder has a snapshot past its replacement.
        let keep = |round: u64| round >= root_round || Some(round) == running || retired_rounds.contains(&round);
        if self.identities.rounds().into_iter().all(keep) {
            return;
        }
        let applied = self.consensus.applied_index();
        let snapshot = self.consensus.view().snapshot_index;
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
            if let Err(e) = self.consensus.trigger_snapshot().await {
                tracing::warn!(error = %e, "cannot trigger the snapshot old identity keys wait for");
            }
            return;
        }
        match self.env.with_rng(|rng| self.identities.retain(keep, rng)) {
            Ok(erased) if !erased.is_empty() => {
                tracing::info!(?erased, "identity keys of finished key generation rounds erased");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot erase old identity keys; will retry"),
        }
    }
}

/// Evicts cached material the replicated state no longer allows, after every applied entry,
/// and erases identity keys of finished rounds.
async fn sweep_on_apply(custody: Arc<Custody>) {
    let mut applied = custody.consensus.state().applied_index();
    loop {
        // After every applied entry, and every second (old identity keys wait for a snapshot).
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        custody.sweep_cache();
        custody.report_durable_snapshot().await;
        custody.erase_stale_identities().await;
    }
}
