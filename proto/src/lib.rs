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

/// Response metadata naming the leader's address, set by nodes on error answers that a call
/// at the leader would not have had: a client tries the leader next.
pub const LEADER_HINT: &str = "x-keyquorum-leader";

/// Response metadata on a `RESOURCE_EXHAUSTED` answer from a node at its limit of calls in
/// flight: the milliseconds to wait before trying again (there or elsewhere). Such a call was
/// refused before any work, so even a write without a token may be retried.
pub const RETRY_AFTER_MS: &str = "x-keyquorum-retry-after-ms";

/// The wait a node asked for before another attempt ([`RETRY_AFTER_MS`]), if it asked.
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms: u64 = status.metadata().get(RETRY_AFTER_MS)?.to_str().ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms.min(60_000)))
}

/// Whether another node may succeed where this answer (or its absence) failed: the node could
/// not serve the call now, no answer came in time, or the transport failed before any answer
/// (`Unknown`/`Cancelled` with no response metadata). The one place clients and forwarding
/// nodes decide it.
pub fn retry_elsewhere(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        tonic::Code::ResourceExhausted => retry_after(status).is_some(),
        tonic::Code::Unknown | tonic::Code::Cancelled => status.metadata().is_empty(),
        _ => false,
    }
}
