//! The memory log store's crash model: only what was synced survives `crash()`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, LogId, Vote};
use storage::MemLogStore;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

#[tokio::test]
async fn a_crash_drops_unsynced_changes_and_keeps_synced_ones() {
    let mut store = MemLogStore::default();
    // The committed index is not synced on its own...
    store.save_committed(Some(log_id(1, 3))).await.unwrap();
    assert_eq!(store.unsynced_changes(), 1);
    store.crash();
    assert_eq!(store.read_committed().await.unwrap(), None);

    // ...but rides along with the next sync, as in RocksDB's WAL.
    store.save_committed(Some(log_id(1, 4))).await.unwrap();
    store.save_vote(&Vote::new(2, 1)).await.unwrap();
    assert_eq!(store.unsynced_changes(), 0);
    store.crash();
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));

    // Purge syncs, and is visible before the crash too.
    store.purge(log_id(1, 2)).await.unwrap();
    store.crash();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
}
