//! The keyquorum server: gRPC services (KMS, Admin, node-to-node), custody of the root-key
//! share, and configuration. The `keyquorum` binary (`cli/`) runs it.
//!
//! **Architecture Invariant:** the only library crate that knows tonic servers, rustls and the
//! filesystem layout of a node. Node code reads time only through `tokio::time` and the injected
//! [`node::Clock`], and randomness only from its injected [`crypto::SecureRng`].

pub mod config;
pub mod consensus;
mod convert;
pub mod custody;
pub mod error;
pub mod node;
mod region;
pub mod server;
mod service_admin;
mod service_internal;
mod service_kms;
pub mod tls;
pub mod topology;

/// Whether the named failpoint is active. Failpoints exist only in builds with the
/// `failpoints` feature (the simulator's self-tests); elsewhere this is `false`.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(name: &str) -> bool {
    fail::eval(name, |_| ()).is_some()
}

#[cfg(not(feature = "failpoints"))]
pub(crate) fn failpoint(_name: &str) -> bool {
    false
}

/// The named failpoint's argument (`return(ARG)`), if it is active.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint_arg(name: &str) -> Option<String> {
    fail::eval(name, |arg| arg.unwrap_or_default())
}

#[cfg(not(feature = "failpoints"))]
pub(crate) fn failpoint_arg(_name: &str) -> Option<String> {
    None
}
