//! RocksDB log store. Column family `log`: big-endian index -> postcard entry. Column family
//! `meta`: vote, committed, last purged log id and the latest snapshot.

use crate::seal::LogCipher;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageIOError, Vote};
use raft::{NodeId, TypeConfig};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::{decode, encode, Result};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Opens (or creates) a node's RocksDB at `dir`.
pub fn open_rocks(dir: &Path) -> std::result::Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let unsynced = crate::failpoint("storage::log-writes-unsynced");
    if unsynced {
        opts.set_atomic_flush(true);
    }
    let cfs = [CF_LOG, CF_META].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
    if unsynced {
        flush_every_second(&db);
    }
    Ok(db)
}

/// Failpoint `storage::log-writes-unsynced` on RocksDB (the Jepsen harness's self-test): the
/// writes Raft needs durable skip the WAL and are acknowledged while only the memtables hold
/// them, and the memtables are flushed together once a second, as an OS writes back dirty
/// pages. kill -9 of every node then loses up to a second of acknowledged writes, as a power
/// loss loses writes that were never fsynced.
fn flush_every_second(db: &Arc<DB>) {
    let weak = Arc::downgrade(db);
    std::thread::spawn(move || {
        while let Some(db) = weak.upgrade() {
            if let (Some(log), Some(meta)) = (db.cf_handle(CF_LOG), db.cf_handle(CF_META)) {
                let _ = db.flush_cfs_opt(&[&log, &meta], &rocksdb::FlushOptions::default());
            }
            drop(db);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    if crate::failpoint("storage::log-writes-unsynced") {
        // Injected bug (see `flush_every_second`): acknowledged before it is durable.
        w.disable_wal(true);
        return w;
    }
    w.set_sync(true);
    w
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Runs a RocksDB write on the blocking pool, so an fsync never stalls the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, StorageIOError<NodeId>> + Send + 'static,
) -> std::result::Result<T, StorageIOError<NodeId>> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StorageIOError::write(&e))?
}

/// The RocksDB log store. Clones share the database. Entries are sealed under the cipher's
/// newest log key before they are written.
#[derive(Clone)]
pub struct RocksLogStore {
    db: Arc<DB>,
    cipher: Arc<LogCipher>,
}

impl Debug for RocksLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksLogStore({})", self.db.path().display())
    }
}

impl RocksLogStore {
    pub fn new(db: Arc<DB>, cipher: Arc<LogCipher>) -> Self {
        Self { db, cipher }
    }

    fn meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> std::result::Result<Option<T>, StorageIOError<NodeId>> {
        let cf = cf(&self.db, CF_META)?;
        match self.db.get_cf(cf, key).map_err(|e| StorageIOError::read(&e))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write_sync(
        &self,
        build: impl FnOnce(&mut WriteBatch, &DB) -> std::result::Result<(), StorageIOError<NodeId>>,
    ) -> std::result::Result<(), StorageIOError<NodeId>> {
        let mut batch = WriteBatch::default();
        build(&mut batch, &self.db)?;
        self.db.write_opt(batch, &synced()).map_err(|e| StorageIOError::write(&e))
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> std::result::Result<&'a rocksdb::ColumnFamily, StorageIOError<NodeId>> {
    db.cf_handle(name)
        .ok_or_else(|| StorageIOError::read(&std::io::Error::other(format!("column family {name} missing"))))
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = cf(&self.db, CF_LOG)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&index_key(start), Direction::Forward)) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|e| StorageIOError::read_logs(&e))?);
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&value)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.meta(KEY_LAST_PURGED)?;
        let cf = cf(&self.db, CF_LOG)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry<TypeConfig> = decode(&value)?;
                Some(*entry.get_log_id())
            }
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        if cfg!(debug_assertions) {
            let old: Option<Vote<NodeId>> = self.meta(KEY_VOTE)?;
            crate::promises::assert_vote_advances(old.as_ref(), vote);
        }
        let bytes = encode(vote)?;
        let this = self.clone();
        // Durable before returning: a node must never vote twice in one term across a crash.
        blocking(move || {
            this.write_sync(|b, db| {
                b.put_cf(cf(db, CF_META)?, KEY_VOTE, bytes);
                Ok(())
            })
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        Ok(self.meta(KEY_VOTE)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        // Synced: openraft 0.9 restores a restarted leader's leadership from its vote, without
        // a new term, and its read index is then this committed index. Were it behind an
        // acknowledged write, linearizable reads would miss that write (the simulator found it).
        let bytes = encode(&committed)?;
        let this = self.clone();
        blocking(move || {
            this.write_sync(|b, db| {
                b.put_cf(cf(db, CF_META)?, KEY_COMMITTED, bytes);
                Ok(())
            })
        })
        .await
        .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if cfg!(debug_assertions) {
            // Reading the last entry costs a seek: checked in debug builds (tests, CI) only.
            let last = self.get_log_state().await?.last_log_id;
            crate::promises::assert_contiguous(last, entries.iter().map(|e| e.get_log_id().index));
        }
        let mut encoded = Vec::new();
        for e in entries {
            let e = self.cipher.seal_entry(e)?;
            encoded.push((index_key(e.get_log_id().index), encode(&e)?));
        }
        let this = self.clone();
        let result = blocking(move || {
            this.write_sync(|b, db| {
                let cf = cf(db, CF_LOG)?;
                for (k, v) in encoded {
                    b.put_cf(cf, k, v);
                }
                Ok(())
            })
        })
        .await;
        // The callback fires only now, after the fsynced WAL write has returned.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let this = self.clone();
        blocking(move || {
            this.write_sync(|b, db| {
                b.delete_range_cf(cf(db, CF_LOG)?, index_key(log_id.index), index_key(u64::MAX));
                Ok(())
            })
        })
        .await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let bytes = encode(&log_id)?;
        let this = self.clone();
        blocking(move || {
            this.write_sync(|b, db| {
                b.put_cf(cf(db, CF_META)?, KEY_LAST_PURGED, bytes);
                b.delete_range_cf(cf(db, CF_LOG)?, index_key(0), index_key(log_id.index + 1));
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}

/// Snapshot persistence in the same RocksDB (column family `meta`), fsynced.
#[derive(Clone)]
pub struct RocksSnapshots {
    db: Arc<DB>,
}

impl Debug for RocksSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksSnapshots({})", self.db.path().display())
    }
}

impl RocksSnapshots {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }
}

impl crate::SnapshotPersist for RocksSnapshots {
    fn save(&self, snapshot: &[u8]) -> std::result::Result<(), StorageIOError<NodeId>> {
        let cf = cf(&self.db, CF_META)?;
        self.db.put_cf_opt(cf, KEY_SNAPSHOT, snapshot, &synced()).map_err(|e| StorageIOError::write(&e))
    }

    fn load(&self) -> std::result::Result<Option<Vec<u8>>, StorageIOError<NodeId>> {
        let cf = cf(&self.db, CF_META)?;
        self.db.get_cf(cf, KEY_SNAPSHOT).map_err(|e| StorageIOError::read(&e))
    }
}
