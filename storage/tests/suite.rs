//! openraft's storage conformance suite on both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raft::{NodeId, TypeConfig};
use storage::{open_rocks, MemLogStore, MemSnapshots, RocksLogStore, RocksSnapshots, StateMachineStore};

struct Mem;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore<MemSnapshots>, ()> for Mem {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore<MemSnapshots>), StorageError<NodeId>> {
        Ok(((), MemLogStore::default(), StateMachineStore::open(MemSnapshots::default())?))
    }
}

struct Rocks;

impl StoreBuilder<TypeConfig, RocksLogStore, StateMachineStore<RocksSnapshots>, tempfile::TempDir> for Rocks {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RocksLogStore, StateMachineStore<RocksSnapshots>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let db = open_rocks(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        let log = RocksLogStore::new(db.clone());
        let sm = StateMachineStore::open(RocksSnapshots::new(db))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn memory_store_passes_openraft_suite() {
    Suite::test_all(Mem).unwrap();
}

#[test]
fn rocksdb_store_passes_openraft_suite() {
    Suite::test_all(Rocks).unwrap();
}
