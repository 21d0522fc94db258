//! Deterministic simulation of whole keyquorum clusters.
//!
//! The production node — state machine, openraft, the gRPC services, the node-to-node
//! transport and the client library — runs inside turmoil, one simulated host per node, all
//! on one thread. One `u64` seed decides the cluster, its regions and link latencies, the
//! faults and the workload; running a seed twice produces the same trace, byte for byte.
//! See ARCHITECTURE.md ("The simulator") for how this maps onto the production code.

pub mod cluster;
pub mod faults;
pub mod history;
pub mod invariants;
pub mod net;
pub mod plan;
pub mod sim;
pub mod workload;

pub use sim::{run_seed, run_seed_with, SeedReport};
