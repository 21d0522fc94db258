//! The invariants the simulator checks besides the client-history checkers it shares with the
//! Jepsen harness (`history::check`, re-exported here). Raft safety is checked as events
//! happen (see `history::Recorder::{leader, applied}`) and again here from the record;
//! custody on the converged members' state.

pub mod custody;
pub mod failover;
pub mod raft_safety;
pub mod regions;
pub mod rotation;

pub use ::history::check::{disabled_unusable, linearizable, no_lost_writes, per_key, revocation, testing};
