//! Node errors, grouped by what the caller does next. The gRPC edge (`grpc/status.rs`) maps
//! each to one status code, exhaustively.

use crypto::CryptoError;
use raft::KmsError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Caller error from the key store (not found, invalid, wrong state, duplicate).
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Caller error in the request itself.
    #[error("{0}")]
    Invalid(String),
    /// Retry (elsewhere or later): no leader, no quorum, peer unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A ciphertext or signature that does not check out, or a cryptographic failure.
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    /// The key's material may be held only by nodes in other regions than this node's: the
    /// call is forwarded to a node there, so clients see this only when none answers.
    #[error("{key} may be used only by nodes in regions {allowed:?}; this node is in region {region:?}")]
    OutOfRegion { key: String, allowed: std::collections::BTreeSet<String>, region: String },
    /// This node is serving its limit of calls at once: the call was refused before any work,
    /// and may be retried after `retry_after_ms`, here or at another node.
    #[error("node {node} is serving its limit of {limit} calls at once; retry in {retry_after_ms} ms")]
    Overloaded { node: u64, limit: usize, retry_after_ms: u64 },
    /// The principal is calling faster than its quota allows at this node: refused before any
    /// work; a token will be there after `retry_after_ms`.
    #[error(
        "{principal} is over its {class} call quota of {rate} at node {node} ({scope}); retry in {retry_after_ms} ms"
    )]
    Throttled {
        principal: String,
        class: &'static str,
        rate: raft::Rate,
        scope: String,
        node: u64,
        retry_after_ms: u64,
    },
    /// The call did not finish within this node's deadline for one call (`limits.call_timeout_ms`);
    /// a write may or may not have taken effect.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Fatal: storage or an invariant broke on this node.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// A short stable name of the kind, for records and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::Kms(k) => k.kind(),
            NodeError::Invalid(_) => "Invalid",
            NodeError::Unavailable(_) => "Unavailable",
            NodeError::PermissionDenied(_) => "PermissionDenied",
            NodeError::Crypto(_) => "Crypto",
            NodeError::OutOfRegion { .. } => "OutOfRegion",
            NodeError::Overloaded { .. } => "Overloaded",
            NodeError::Throttled { .. } => "Throttled",
            NodeError::DeadlineExceeded(_) => "DeadlineExceeded",
            NodeError::Internal(_) => "Internal",
        }
    }
}

pub type Result<T> = std::result::Result<T, NodeError>;

/// Why a node could not start, or stopped serving. Each message names the file, field or
/// address at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration (file, environment, or a field's value) is invalid.
    #[error("{0}")]
    Config(String),
    /// The TLS files are missing, unreadable or not what they should be.
    #[error("{0}")]
    Credentials(String),
    /// The identity key file is unreadable, malformed, or sealed under another passphrase.
    #[error("{0}")]
    Identity(String),
    /// The data directory or RocksDB could not be opened.
    #[error("{0}")]
    Storage(String),
    /// Raft could not start or stop.
    #[error("raft: {0}")]
    Raft(String),
    /// The listener or the gRPC server failed.
    #[error("{0}")]
    Serve(String),
    /// A node operation failed while starting (sealing the identity file, say).
    #[error(transparent)]
    Node(#[from] NodeError),
}

pub type StartResult<T> = std::result::Result<T, StartError>;
