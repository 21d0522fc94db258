//! The test bed: real `keyquorum server` processes on this machine.
//!
//! - [`local`]: a cluster of node processes on loopback, with RocksDB and mTLS, optionally
//!   through the WAN relay (`wan`): start, add, kill -9, restart, SIGSTOP/SIGCONT, partitions,
//!   clock offsets, and every process stopped when it is dropped. `keyquorum dev`, the
//!   multi-process tests and the Jepsen harness all run this one.
//! - [`pki`]: the cluster's certificate authority and the certificates it issues (also behind
//!   `keyquorum cert`, and the simulator's certificates).
//!
//! **Architecture Invariant:** touches a cluster only as an operator could (processes,
//! signals, files, the relay, the public APIs through `client`); it never links the server.

pub mod local;
pub mod pki;

pub use local::{free_port, region_name, LocalCluster, Spec, WanOptions, QUICK_RAFT};
pub use pki::{Authority, CertifiedKey};
