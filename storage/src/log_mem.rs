//! In-memory log store with the same behaviour as the RocksDB one, including what a crash
//! loses: every change first lands in a volatile view and becomes durable only when the store
//! syncs, at the same points where the RocksDB store fsyncs (an append before its callback
//! fires, a vote, the committed index, a truncation, a purge). [`MemLogStore::crash`] drops
//! whatever was not synced, which is what the simulator does to a node it kills.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, Vote};
use raft::{NodeId, TypeConfig};

use crate::seal::LogCipher;
use crate::Result;

#[derive(Debug, Default, Clone)]
struct LogData {
    log: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

/// One change, as the volatile view saw it and as the durable copy will once synced.
#[derive(Debug, Clone)]
enum Change {
    Put(Box<Entry<TypeConfig>>),
    TruncateFrom(u64),
    PurgeTo(LogId<NodeId>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

impl LogData {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Put(e) => {
                self.log.insert(e.get_log_id().index, *e);
            }
            Change::TruncateFrom(index) => {
                let _removed = self.log.split_off(&index);
            }
            Change::PurgeTo(log_id) => {
                self.last_purged = Some(log_id);
                self.log = self.log.split_off(&(log_id.index + 1));
            }
            Change::Vote(v) => self.vote = Some(v),
            Change::Committed(c) => self.committed = c,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// What the running node sees.
    live: LogData,
    /// What survives a crash.
    durable: LogData,
    unsynced: Vec<Change>,
}

impl Inner {
    fn change(&mut self, change: Change) {
        self.live.apply(change.clone());
        self.unsynced.push(change);
    }

    fn sync(&mut self) {
        for change in self.unsynced.drain(..) {
            self.durable.apply(change);
        }
    }
}

/// A log store in memory. Clones share the same log. Entries are sealed under the cipher's
/// newest log key before they are stored, as in the RocksDB store.
#[derive(Debug, Clone)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
    cipher: Arc<LogCipher>,
}

impl Default for MemLogStore {
    /// A store whose cipher holds no log key (it draws randomness only once a key is installed).
    fn default() -> Self {
        Self::new(LogCipher::new(crypto::SecureRng::from_seed_u64(0)))
    }
}

impl MemLogStore {
    pub fn new(cipher: Arc<LogCipher>) -> Self {
        Self { inner: Default::default(), cipher }
    }

    /// The same stored log, sealed from now on with `cipher`: a restarted node's handle (its
    /// cipher starts empty, as a restarted process's memory does).
    pub fn with_cipher(&self, cipher: Arc<LogCipher>) -> Self {
        Self { inner: self.inner.clone(), cipher }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic mid-update: the log may be inconsistent, so stop.
        #[allow(clippy::expect_used)]
        self.inner.lock().expect("memory log store lock poisoned")
    }

    /// Simulates a power loss: everything not yet synced is gone. Call only once the node
    /// using this store has stopped.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.unsynced.clear();
        inner.live = inner.durable.clone();
    }

    /// Number of changes that a crash now would lose (for tests of the model itself).
    pub fn unsynced_changes(&self) -> usize {
        self.lock().unsynced.len()
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        Ok(self.lock().live.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let inner = self.lock();
        let live = &inner.live;
        let last = live.log.values().next_back().map(|e| *e.get_log_id()).or(live.last_purged);
        Ok(LogState { last_purged_log_id: live.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let mut inner = self.lock();
        crate::promises::assert_vote_advances(inner.live.vote.as_ref(), vote);
        inner.change(Change::Vote(*vote));
        inner.sync();
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        Ok(self.lock().live.vote)
    }

    /// Synced, like the RocksDB store: a restarted leader's read index is this value.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        let mut inner = self.lock();
        inner.change(Change::Committed(committed));
        // Failpoint: as for appends (a sync here would make the appends before it durable).
        if !crate::failpoint("storage::log-writes-unsynced") {
            inner.sync();
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.lock().live.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let sealed =
            entries.into_iter().map(|e| self.cipher.seal_entry(e)).collect::<std::result::Result<Vec<_>, _>>()?;
        {
            let mut inner = self.lock();
            let last = inner.live.log.values().next_back().map(|e| *e.get_log_id()).or(inner.live.last_purged);
            crate::promises::assert_contiguous(last, sealed.iter().map(|e| e.get_log_id().index));
            for e in sealed {
                inner.change(Change::Put(Box::new(e)));
            }
            // Failpoint (simulator self-test): acknowledge without syncing, the bug a store
            // that writes its log with `sync = false` would have.
            if !crate::failpoint("storage::log-writes-unsynced") {
                inner.sync();
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let mut inner = self.lock();
        inner.change(Change::TruncateFrom(log_id.index));
        inner.sync();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let mut inner = self.lock();
        assert!(
            inner.live.last_purged.is_none_or(|p| p.index <= log_id.index),
            "purge must not go backwards: last purged {:?}, asked {log_id}",
            inner.live.last_purged
        );
        inner.change(Change::PurgeTo(log_id));
        inner.sync();
        Ok(())
    }
}
