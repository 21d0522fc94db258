//! openraft storage for keyquorum: a log store and a state-machine store, each in two
//! flavours behind the same traits — RocksDB for real nodes, memory for tests and the
//! simulator. One conformance suite (openraft's `testing::Suite`) runs on both.
//!
//! **Architecture Invariant:** nothing is acknowledged before it is durable. The RocksDB log
//! store calls openraft's append callback only after the write batch is in the fsynced WAL,
//! and `save_vote` returns only after the vote is fsynced.
//!
//! **Architecture Invariant:** this is the only crate that links RocksDB.

// openraft's `StorageError`/`StorageIOError` are large by design and every storage trait
// returns them; boxing them here would only move the allocation.
#![allow(clippy::result_large_err)]

mod log_mem;
mod log_rocks;
mod promises;
mod seal;
mod state_machine;

pub use log_mem::MemLogStore;
pub use log_rocks::{open_rocks, RocksLogStore, RocksSnapshots};
pub use seal::LogCipher;
pub use state_machine::{
    ApplyObserver, MemSnapshots, SharedState, SnapshotPersist, StateMachineData, StateMachineStore,
};

use openraft::{StorageError, StorageIOError};
use raft::NodeId;

pub type Result<T> = std::result::Result<T, StorageError<NodeId>>;

fn encode<T: serde::Serialize>(value: &T) -> std::result::Result<Vec<u8>, StorageIOError<NodeId>> {
    postcard::to_stdvec(value).map_err(|e| StorageIOError::write(&e))
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> std::result::Result<T, StorageIOError<NodeId>> {
    postcard::from_bytes(bytes).map_err(|e| StorageIOError::read(&e))
}

/// Whether the named failpoint is active. Failpoints exist only in builds with the
/// `failpoints` feature (the simulator's self-tests); elsewhere this is `false`.
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) -> bool {
    fail::eval(name, |_| ()).is_some()
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_name: &str) -> bool {
    false
}
