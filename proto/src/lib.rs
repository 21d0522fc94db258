//! Wire types: the public `keyquorum.v1` API (KMS and Admin) and the node-to-node
//! `keyquorum.internal.v1` API, generated from `proto/` at build time.
//!
//! **API Boundary:** these types stay in `proto/`, `node/` and `client/`; the domain crates
//! never see them.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("keyquorum.v1");
}

pub mod internal {
    tonic::include_proto!("keyquorum.internal.v1");
}
