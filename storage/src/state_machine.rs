//! The state-machine store: applies committed entries to the pure [`raft::KeyStore`], builds
//! and installs snapshots, and shares the state with the node for reads.
//!
//! The key store lives in memory; its durable form is the latest snapshot plus the log after
//! it (openraft re-applies committed entries on restart). Snapshots are persisted (fsynced)
//! before openraft may purge the log they cover.
//!
//! **Sealed.** Entries and snapshot bodies are sealed under the log key (`seal.rs`). A node
//! that does not hold the version a record needs cannot apply it. While openraft re-applies
//! the committed log inside `Raft::new`, it queues that entry and every one after it and
//! answers at once with placeholder results nobody reads (waiting there would keep the node
//! from ever serving the peers it needs shares from). Once the node has started
//! ([`SharedState::mark_started`]) `apply` waits for the version instead; openraft's state
//! machine runs apart from its core, so the node still votes and appends. When the node
//! installs a version, [`SharedState::resume`] applies what was queued.

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use raft::{Applied, CommandResult, KeyStore, Keyring, NodeId, NodeInfo, Payload, SealedRecord, TypeConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::seal::{decode_command, entry_aad, LogCipher, OpenError};
use crate::{decode, encode, Result};

/// Where snapshots are kept durably.
pub trait SnapshotPersist: Send + Sync + 'static {
    /// Stores the snapshot; must be durable when it returns.
    fn save(&self, snapshot: &[u8]) -> std::result::Result<(), StorageIOError<NodeId>>;
    fn load(&self) -> std::result::Result<Option<Vec<u8>>, StorageIOError<NodeId>>;
}

/// Snapshots kept in memory (tests, simulator).
#[derive(Debug, Clone, Default)]
pub struct MemSnapshots(Arc<std::sync::Mutex<Option<Vec<u8>>>>);

impl SnapshotPersist for MemSnapshots {
    fn save(&self, snapshot: &[u8]) -> std::result::Result<(), StorageIOError<NodeId>> {
        *self.0.lock().map_err(|_| StorageIOError::write(&std::io::Error::other("poisoned")))? =
            Some(snapshot.to_vec());
        Ok(())
    }
    fn load(&self) -> std::result::Result<Option<Vec<u8>>, StorageIOError<NodeId>> {
        Ok(self.0.lock().map_err(|_| StorageIOError::read(&std::io::Error::other("poisoned")))?.clone())
    }
}

/// What the state machine holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, NodeInfo>,
    /// The key store. While the node is sealed and its snapshot's body is not opened yet, only
    /// the snapshot's keyring (`KeyStore::from_keyring`): read it through
    /// [`SharedState::read_open`] to serve from it.
    pub store: KeyStore,
}

/// What waits for a log key: a snapshot whose body is not opened yet, then entries.
#[derive(Default)]
struct Backlog {
    snapshot: Option<StoredSnapshot>,
    entries: VecDeque<Entry<TypeConfig>>,
}

/// The state shared with the node: short read locks, never held across an await.
#[derive(Clone)]
pub struct SharedState {
    data: Arc<RwLock<StateMachineData>>,
    applied_tx: Arc<watch::Sender<u64>>,
    /// `Some(v)` while this node waits for log key version `v` to read its state.
    sealed_tx: Arc<watch::Sender<Option<u32>>>,
    /// Held while applying, by openraft's `apply` or by [`SharedState::resume`].
    backlog: Arc<tokio::sync::Mutex<Backlog>>,
    cipher: Arc<LogCipher>,
    observer: Arc<std::sync::OnceLock<ApplyObserver>>,
    /// Set once `Raft::new` has returned: from then on `apply` waits for log keys rather
    /// than queueing, so every result it returns is real.
    started: Arc<std::sync::atomic::AtomicBool>,
    /// The root epoch of the keyring of this node's durable snapshot (0: none yet).
    durable_root_epoch: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("applied", &*self.applied_tx.borrow())
            .field("sealed", &self.sealed())
            .finish()
    }
}

impl SharedState {
    fn new(cipher: Arc<LogCipher>) -> Self {
        Self {
            data: Default::default(),
            applied_tx: Arc::new(watch::channel(0).0),
            sealed_tx: Arc::new(watch::channel(None).0),
            backlog: Default::default(),
            cipher,
            observer: Default::default(),
            started: Default::default(),
            durable_root_epoch: Default::default(),
        }
    }

    /// The root epoch of the keyring in this node's durable snapshot: a node that restarts
    /// needs shares of that root, or a later one, to read its state.
    pub fn durable_root_epoch(&self) -> Option<u64> {
        Some(self.durable_root_epoch.load(std::sync::atomic::Ordering::SeqCst)).filter(|e| *e > 0)
    }

    fn persisted(&self, keyring: &raft::Keyring) {
        let epoch = keyring.root.as_ref().map_or(0, |r| r.epoch);
        self.durable_root_epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
    }

    /// Called once `Raft::new` has returned (the node's start): while openraft re-applies the
    /// committed log inside `Raft::new`, a sealed node queues entries and answers at once;
    /// afterwards `apply` waits for the log key instead, so a proposer always gets the real
    /// outcome (openraft keeps voting and appending meanwhile: its state machine runs apart).
    pub fn mark_started(&self) {
        self.started.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn read(&self) -> RwLockReadGuard<'_, StateMachineData> {
        // The only writer is `apply`, which does not panic while holding the lock except on a
        // broken invariant; then stopping is right.
        #[allow(clippy::expect_used)]
        self.data.read().expect("state lock poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, StateMachineData> {
        #[allow(clippy::expect_used)]
        self.data.write().expect("state lock poisoned")
    }

    /// The state, if this node is not sealed. The check is made holding the lock, and a staged
    /// snapshot's keyring-only store is installed only after the node is marked sealed, so a
    /// reader never sees it as a whole state (simulator seed 6280: a linearizable read at a
    /// follower that was installing the leader's snapshot answered from the keyring alone).
    /// `Err(version)`: sealed, waiting for log key `version`.
    pub fn read_open(&self) -> std::result::Result<RwLockReadGuard<'_, StateMachineData>, u32> {
        let guard = self.read();
        match self.sealed() {
            None => Ok(guard),
            Some(version) => Err(version),
        }
    }

    /// Last applied log index, updated after every applied entry.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn publish_applied(&self) {
        let index = self.read().last_applied.map_or(0, |l| l.index);
        self.applied_tx.send_replace(index);
    }

    /// The log key version this node is waiting for, if it is sealed.
    pub fn sealed(&self) -> Option<u32> {
        *self.sealed_tx.borrow()
    }

    /// Changes whenever this node becomes sealed on a version, or unsealed.
    pub fn sealed_watch(&self) -> watch::Receiver<Option<u32>> {
        self.sealed_tx.subscribe()
    }

    /// The log key versions this node holds; the node installs the ones it unwraps here.
    pub fn cipher(&self) -> &Arc<LogCipher> {
        &self.cipher
    }

    /// Applies what waited for a log key, as far as the versions now held allow. The node
    /// calls it after installing a version. If openraft's `apply` holds the backlog, it is
    /// waiting for a version itself and goes on by itself once that one is installed; waiting
    /// for it here could wait for a later version this caller is the one to unwrap.
    pub async fn resume(&self) -> Result<()> {
        let Ok(mut backlog) = self.backlog.try_lock() else { return Ok(()) };
        self.drain(&mut backlog, &mut BTreeMap::new())
    }

    /// Opens the backlog's snapshot, then applies its entries in order, until one needs a
    /// version not held; records each result by log index in `results`.
    fn drain(&self, backlog: &mut Backlog, results: &mut BTreeMap<u64, CommandResult>) -> Result<()> {
        if let Some(stored) = &backlog.snapshot {
            match open_snapshot(&self.cipher, stored)? {
                Err(version) => {
                    self.seal_on(version);
                    return Ok(());
                }
                Ok(store) => {
                    self.write().store = store;
                    backlog.snapshot = None;
                }
            }
        }
        while let Some(entry) = backlog.entries.pop_front() {
            let log_id = entry.log_id;
            let payload = match entry.payload {
                EntryPayload::Normal(Payload::Sealed(record)) => {
                    match self.cipher.open(&entry_aad(&log_id).map_err(|e| StorageIOError::read(&e))?, &record) {
                        Ok(plaintext) => EntryPayload::Normal(Payload::Clear(decode_command(&plaintext)?)),
                        Err(OpenError::Missing(version)) => {
                            let entry = Entry { log_id, payload: EntryPayload::Normal(Payload::Sealed(record)) };
                            backlog.entries.push_front(entry);
                            self.seal_on(version);
                            return Ok(());
                        }
                        Err(OpenError::Rejected(why)) => return Err(rejected(format!("entry {log_id}: {why}")).into()),
                    }
                }
                EntryPayload::Normal(Payload::Clear(command)) if !command.may_be_clear() => {
                    return Err(rejected(format!("entry {log_id} holds a confidential command in the clear")).into());
                }
                other => other,
            };
            let entry = Entry { log_id, payload };
            if let Some(observe) = self.observer.get() {
                observe(&entry);
            }
            let result = {
                let mut s = self.write();
                s.last_applied = Some(log_id);
                match entry.payload {
                    EntryPayload::Normal(Payload::Clear(command)) => s.store.apply(&command),
                    EntryPayload::Membership(m) => {
                        s.last_membership = StoredMembership::new(Some(log_id), m);
                        Ok(Applied::Done)
                    }
                    _ => Ok(Applied::Done),
                }
            };
            results.insert(log_id.index, result);
            // Per entry: the node learns of a new log key version before it is needed.
            self.publish_applied();
        }
        self.sealed_tx.send_if_modified(|s| s.take().is_some());
        Ok(())
    }

    fn seal_on(&self, version: u32) {
        let newly = self.sealed_tx.send_replace(Some(version)) != Some(version);
        if newly {
            tracing::info!(version, "sealed: waiting for log key v{version} (t+1 decryption shares from peers)");
        }
    }

    /// Applies everything queued, waiting for log key versions as needed. It waits for the
    /// backlog rather than trying it as `resume` does: when openraft's `apply` holds it,
    /// waiting for a version that is already installed, only letting `apply` run unseals
    /// the node; a try that failed would find the node still sealed on an installed version
    /// and try again at once, for ever, in a runtime that never got to run `apply`
    /// (simulator seed 12042 hung there, in a snapshot build).
    async fn settle(&self) -> Result<()> {
        loop {
            {
                let mut backlog = self.backlog.lock().await;
                self.drain(&mut backlog, &mut BTreeMap::new())?;
            }
            match self.sealed() {
                None => return Ok(()),
                Some(version) => self.cipher.wait_for(version).await,
            }
        }
    }
}

/// The key store in `stored`'s body, or the log key version it needs.
fn open_snapshot(cipher: &LogCipher, stored: &StoredSnapshot) -> Result<std::result::Result<KeyStore, u32>> {
    let image: SnapshotImage = decode(&stored.data)?;
    let store: KeyStore = match &image.body {
        Body::Clear(bytes) => decode(bytes)?,
        Body::Sealed(record) => {
            match cipher.open(&snapshot_aad(&stored.meta).map_err(|e| StorageIOError::read(&e))?, record) {
                Ok(plaintext) => decode(plaintext.expose())?,
                Err(OpenError::Missing(version)) => return Ok(Err(version)),
                Err(OpenError::Rejected(why)) => {
                    return Err(rejected(format!("snapshot {}: {why}", stored.meta.snapshot_id)).into())
                }
            }
        }
    };
    if store.keyring() != image.keyring {
        return Err(rejected(format!(
            "snapshot {}: its clear keyring differs from the sealed state's; refusing it",
            stored.meta.snapshot_id
        ))
        .into());
    }
    Ok(Ok(store))
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    /// A [`SnapshotImage`], as sent to peers.
    data: Vec<u8>,
}

/// A snapshot's bytes: the keyring in the clear (a sealed node needs it to unseal) and the
/// whole key store sealed under the log key, bound to the snapshot's last log id and
/// membership. Before the first log key exists the body is clear; it holds no secret then.
#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    keyring: Keyring,
    body: Body,
}

#[derive(Serialize, Deserialize)]
enum Body {
    Clear(Vec<u8>),
    Sealed(SealedRecord),
}

/// Associated data of a snapshot body: its last log id and membership. An encoding that fails
/// is an error: empty associated data would bind the body to no snapshot at all.
fn snapshot_aad(meta: &SnapshotMeta<NodeId, NodeInfo>) -> std::result::Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(&("keyquorum snapshot v1", &meta.last_log_id, &meta.last_membership))
}

fn rejected(why: String) -> StorageIOError<NodeId> {
    StorageIOError::read(&std::io::Error::other(why))
}

/// Sees every entry just before it is applied, opened (the simulator's Raft-safety checker).
pub type ApplyObserver = Arc<dyn Fn(&Entry<TypeConfig>) + Send + Sync>;

/// The state-machine store.
#[derive(Clone)]
pub struct StateMachineStore<P> {
    state: SharedState,
    persist: P,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl<P> std::fmt::Debug for StateMachineStore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").field("state", &self.state).finish_non_exhaustive()
    }
}

impl<P: SnapshotPersist + Clone> StateMachineStore<P> {
    /// Opens the store. The persisted snapshot's body opens once `cipher` holds its log key
    /// version; until then the state holds only its keyring and the node is sealed.
    pub fn open(persist: P, cipher: Arc<LogCipher>) -> Result<Self> {
        let store = Self { state: SharedState::new(cipher), persist, snapshot_seq: Default::default() };
        if let Some(bytes) = store.persist.load()? {
            let stored: StoredSnapshot = decode(&bytes)?;
            let mut backlog = store.state.backlog.try_lock().map_err(|e| rejected(e.to_string()))?;
            store.stage(&mut backlog, stored)?;
            store.state.drain(&mut backlog, &mut BTreeMap::new())?;
        }
        Ok(store)
    }

    /// Calls `observer` with every entry before it is applied. Set it before the first apply.
    pub fn with_observer(self, observer: ApplyObserver) -> Self {
        let _already = self.state.observer.set(observer);
        self
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Makes `stored` the state: its metadata and body now if this node holds the log key
    /// version it is sealed under; else its keyring now (the node sealed first, under the
    /// lock) and its body when it opens.
    fn stage(&self, backlog: &mut Backlog, stored: StoredSnapshot) -> Result<()> {
        let image: SnapshotImage = decode(&stored.data)?;
        self.state.persisted(&image.keyring);
        let last = stored.meta.last_log_id.map_or(0, |l| l.index);
        let opened = open_snapshot(&self.state.cipher, &stored)?;
        {
            let mut s = self.state.write();
            s.last_applied = stored.meta.last_log_id;
            s.last_membership = stored.meta.last_membership.clone();
            match opened {
                Ok(store) => {
                    s.store = store;
                    backlog.snapshot = None;
                }
                Err(version) => {
                    self.state.seal_on(version);
                    s.store = KeyStore::from_keyring(image.keyring);
                    backlog.snapshot = Some(stored);
                }
            }
        }
        backlog.entries.retain(|e| e.log_id.index > last);
        self.state.publish_applied();
        Ok(())
    }
}

impl<P: SnapshotPersist + Clone> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<P> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        // A snapshot is of the whole applied state: apply what waits first.
        self.state.settle().await?;
        let (meta, keyring, store) = {
            let s = self.state.read();
            let seq = self.snapshot_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let snapshot_id = match s.last_applied {
                Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
                None => format!("empty-{seq}"),
            };
            let meta =
                SnapshotMeta { last_log_id: s.last_applied, last_membership: s.last_membership.clone(), snapshot_id };
            (meta, s.store.keyring(), encode(&s.store)?)
        };
        let store = crypto::SecretBytes::new(store);
        let body = loop {
            match self.state.cipher.seal(&snapshot_aad(&meta).map_err(|e| StorageIOError::write(&e))?, &store)? {
                Some(record) => break Body::Sealed(record),
                None => match keyring.log_keys.last_key_value() {
                    // Before the first log key the state holds nothing secret.
                    None => break Body::Clear(store.expose().to_vec()),
                    // The cluster has a log key this node does not hold yet: never write the
                    // state in the clear; wait for it.
                    Some((v, _)) => {
                        self.state.seal_on(*v);
                        self.state.cipher.wait_for(*v).await;
                        self.state.sealed_tx.send_replace(None);
                    }
                },
            }
        };
        let image = SnapshotImage { keyring, body };
        let data = encode(&image)?;
        let stored = encode(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        self.persist.save(&stored)?;
        self.state.persisted(&image.keyring);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl<P: SnapshotPersist + Clone> RaftStateMachine<TypeConfig> for StateMachineStore<P> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>)> {
        let s = self.state.read();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    /// Applies `entries`. While sealed: inside `Raft::new`, queues them and answers at once
    /// (placeholder results nobody reads); once started, waits for the log key.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut backlog = self.state.backlog.lock().await;
        let indexes: Vec<u64> = entries
            .into_iter()
            .map(|e| {
                let index = e.log_id.index;
                backlog.entries.push_back(e);
                index
            })
            .collect();
        let mut results = BTreeMap::new();
        self.state.drain(&mut backlog, &mut results)?;
        if self.state.started.load(std::sync::atomic::Ordering::SeqCst) {
            while let Some(version) = self.state.sealed() {
                self.state.cipher.wait_for(version).await;
                self.state.drain(&mut backlog, &mut results)?;
            }
        }
        Ok(indexes.into_iter().map(|i| results.remove(&i).unwrap_or(Ok(Applied::Done))).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let _check: SnapshotImage = decode(&data)?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist.save(&encode(&stored)?)?;
        let mut backlog = self.state.backlog.lock().await;
        self.stage(&mut backlog, stored)?;
        self.state.drain(&mut backlog, &mut BTreeMap::new())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Some(bytes) = self.persist.load()? else { return Ok(None) };
        let stored: StoredSnapshot = decode(&bytes)?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use crypto::{SecretBytes, SecureRng};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use raft::{Command, WrappedMaterial};

    use super::*;

    /// A snapshot under log key v1, taken by a node that holds it.
    async fn snapshot_under_v1() -> StoredSnapshot {
        let cipher = LogCipher::new(SecureRng::from_seed_u64(1));
        cipher.install(1, SecretBytes::new(vec![42; 32])).unwrap();
        let mut sm = StateMachineStore::open(MemSnapshots::default(), cipher.clone()).unwrap();
        let add = Command::AddLogKey {
            version: 1,
            key: WrappedMaterial { root_epoch: 1, ciphertext: vec![3; 64], kcv: [4; 32], public_key: None },
            now_ms: 1,
        };
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        let entry = Entry { log_id, payload: EntryPayload::Normal(Payload::Clear(add)) };
        sm.apply([cipher.seal_entry(entry).unwrap()]).await.unwrap();
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        StoredSnapshot { meta: snapshot.meta, data: snapshot.snapshot.into_inner() }
    }

    /// Simulator seed 6280: a follower installing a snapshot it could not open yet replaced
    /// its state with the snapshot's keyring and advanced its applied index before it was
    /// marked sealed, and a linearizable read in between answered from the keyring alone
    /// ("alias does not exist"). Staging now seals first, under the lock.
    #[tokio::test]
    async fn a_snapshot_that_cannot_be_opened_seals_the_node_before_its_keyring_is_the_state() {
        let stored = snapshot_under_v1().await;
        let node =
            StateMachineStore::open(MemSnapshots::default(), LogCipher::new(SecureRng::from_seed_u64(2))).unwrap();
        let state = node.state();
        assert!(state.read_open().is_ok());
        let mut backlog = state.backlog.lock().await;
        node.stage(&mut backlog, stored).unwrap();
        // Before anything drains the backlog: the applied index has moved, and the node
        // already says it is sealed, so nobody serves from the keyring-only store.
        assert_eq!(*state.applied_index().borrow(), 1);
        assert_eq!(state.sealed(), Some(1));
        assert_eq!(state.read_open().err(), Some(1));
    }
}
