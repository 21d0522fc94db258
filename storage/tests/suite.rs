//! openraft's storage conformance suite on both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raft::{NodeId, TypeConfig};
use std::sync::Arc;

use crypto::{SecretBytes, SecureRng};
use storage::{open_rocks, LogCipher, MemLogStore, MemSnapshots, RocksLogStore, RocksSnapshots, StateMachineStore};

/// A cipher holding log key v1, as an unsealed node's does.
fn unsealed() -> Arc<LogCipher> {
    let cipher = LogCipher::new(SecureRng::from_seed_u64(7));
    cipher.install(1, SecretBytes::new(vec![7; 32])).unwrap();
    cipher
}

struct Mem;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore<MemSnapshots>, ()> for Mem {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore<MemSnapshots>), StorageError<NodeId>> {
        let cipher = unsealed();
        Ok(((), MemLogStore::new(cipher.clone()), StateMachineStore::open(MemSnapshots::default(), cipher)?))
    }
}

struct Rocks;

impl StoreBuilder<TypeConfig, RocksLogStore, StateMachineStore<RocksSnapshots>, tempfile::TempDir> for Rocks {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RocksLogStore, StateMachineStore<RocksSnapshots>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let db = open_rocks(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        let cipher = unsealed();
        let log = RocksLogStore::new(db.clone(), cipher.clone());
        let sm = StateMachineStore::open(RocksSnapshots::new(db), cipher)?;
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
