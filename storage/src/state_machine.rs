//! The state-machine store: applies committed entries to the pure [`raft::KeyStore`], builds
//! and installs snapshots, and shares the state with the node for reads.
//!
//! The key store lives in memory; its durable form is the latest snapshot plus the log after
//! it (openraft re-applies committed entries on restart). Snapshots are persisted (fsynced)
//! before openraft may purge the log they cover.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use raft::{Applied, CommandResult, KeyStore, NodeId, NodeInfo, TypeConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

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
    pub store: KeyStore,
}

/// The state shared with the node: short read locks, never held across an await.
#[derive(Debug, Clone)]
pub struct SharedState {
    data: Arc<RwLock<StateMachineData>>,
    applied_tx: Arc<watch::Sender<u64>>,
}

impl SharedState {
    fn new(data: StateMachineData) -> Self {
        let applied = data.last_applied.map_or(0, |l| l.index);
        Self { data: Arc::new(RwLock::new(data)), applied_tx: Arc::new(watch::channel(applied).0) }
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

    /// Last applied log index, updated after every apply batch.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn publish_applied(&self) {
        let index = self.read().last_applied.map_or(0, |l| l.index);
        self.applied_tx.send_replace(index);
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    data: Vec<u8>,
}

/// Sees every entry just before it is applied (the simulator's Raft-safety checker).
pub type ApplyObserver = Arc<dyn Fn(&Entry<TypeConfig>) + Send + Sync>;

/// The state-machine store.
#[derive(Clone)]
pub struct StateMachineStore<P> {
    state: SharedState,
    persist: P,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
    observer: Option<ApplyObserver>,
}

impl<P> std::fmt::Debug for StateMachineStore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").field("state", &self.state).finish_non_exhaustive()
    }
}

impl<P: SnapshotPersist + Clone> StateMachineStore<P> {
    /// Opens the store, restoring the state from the persisted snapshot if there is one.
    pub fn open(persist: P) -> Result<Self> {
        let data = match persist.load()? {
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes)?;
                let store: KeyStore = decode(&stored.data)?;
                StateMachineData {
                    last_applied: stored.meta.last_log_id,
                    last_membership: stored.meta.last_membership,
                    store,
                }
            }
            None => StateMachineData::default(),
        };
        Ok(Self { state: SharedState::new(data), persist, snapshot_seq: Default::default(), observer: None })
    }

    /// Calls `observer` with every entry before it is applied.
    pub fn with_observer(mut self, observer: ApplyObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }
}

impl<P: SnapshotPersist + Clone> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<P> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let s = self.state.read();
            let seq = self.snapshot_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let snapshot_id = match s.last_applied {
                Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
                None => format!("empty-{seq}"),
            };
            let meta =
                SnapshotMeta { last_log_id: s.last_applied, last_membership: s.last_membership.clone(), snapshot_id };
            (meta, encode(&s.store)?)
        };
        let stored = encode(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        self.persist.save(&stored)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl<P: SnapshotPersist + Clone> RaftStateMachine<TypeConfig> for StateMachineStore<P> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>)> {
        let s = self.state.read();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        {
            let mut s = self.state.write();
            for entry in entries {
                if let Some(observe) = &self.observer {
                    observe(&entry);
                }
                s.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(Ok(Applied::Done)),
                    EntryPayload::Normal(command) => results.push(s.store.apply(&command)),
                    EntryPayload::Membership(m) => {
                        s.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        results.push(Ok(Applied::Done));
                    }
                }
            }
        }
        self.state.publish_applied();
        Ok(results)
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
        let store: KeyStore = decode(&data)?;
        let stored = encode(&StoredSnapshot { meta: meta.clone(), data })?;
        self.persist.save(&stored)?;
        {
            let mut s = self.state.write();
            s.last_applied = meta.last_log_id;
            s.last_membership = meta.last_membership.clone();
            s.store = store;
        }
        self.state.publish_applied();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Some(bytes) = self.persist.load()? else { return Ok(None) };
        let stored: StoredSnapshot = decode(&bytes)?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
