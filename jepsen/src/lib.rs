//! Jepsen-style tests of real `keyquorum` processes (see `jepsen/README.md`): a local cluster
//! of real nodes on loopback through the WAN relay, concurrent clients recording every call
//! as ok / fail / info, nemeses (kill -9, SIGSTOP, partitions, clock bumps, membership
//! changes, leadership transfers, root-key rotations), the shared `history` checkers, and
//! the audit-trail check (`trail`).

pub mod nemesis;
pub mod recorder;
pub mod report;
pub mod results;
pub mod run;
pub mod trail;
pub mod workload;
