//! The keyquorum server. A call goes one way through it: the gRPC edge (`grpc/`: wire types,
//! the call context, the status mapping) → the application layer (`kms/`, `admin/`: route,
//! authorize, work, record) → the components that own their state (`custody/`: the root key
//! and key material; `consensus/`: Raft). `node.rs` assembles them; `server.rs` runs a real
//! node. The `keyquorum` binary (`cli/`) starts it.
//!
//! **Architecture Invariant:** the only library crate that knows tonic servers, rustls and the
//! filesystem layout of a node. Node code reads time only through `tokio::time` and the injected
//! [`node::Clock`], and randomness only from its injected [`crypto::SecureRng`].

pub mod admin;
pub mod audit;
pub mod config;
pub mod consensus;
pub mod custody;
pub mod env;
pub mod error;
mod grpc;
pub mod kms;
pub mod node;
pub mod server;
pub mod tls;

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
