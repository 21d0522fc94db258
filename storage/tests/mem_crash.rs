//! The memory log store's crash model: only what was synced survives `crash()` (the
//! unsynced path is exercised by the failpoint self-test `acknowledging_unsynced_appends_is_caught`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, LogId, Vote};
use storage::MemLogStore;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

#[tokio::test]
async fn what_the_store_syncs_survives_a_crash() {
    let mut store = MemLogStore::default();
    // A committed index survives a crash (a restarted leader reads with it)...
    store.save_committed(Some(log_id(1, 3))).await.unwrap();
    assert_eq!(store.unsynced_changes(), 0);
    store.crash();
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 3)));

    // ...and so does a vote.
    store.save_vote(&Vote::new(2, 1)).await.unwrap();
    store.crash();
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));

    // Purge syncs, and is visible before the crash too.
    store.purge(log_id(1, 2)).await.unwrap();
    store.crash();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
}
