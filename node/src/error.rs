//! Node errors, grouped by what the caller does next, each mapped to one gRPC status.

use crypto::CryptoError;
use raft::KmsError;
use thiserror::Error;
use tonic::{Code, Status};

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
    /// The caller's certificate does not allow this request.
    #[error("{0}")]
    PermissionDenied(String),
    /// The cluster has not been initialised.
    #[error("the cluster is not initialised yet: run `keyquorum cluster init` (keyquorum dev does it for you)")]
    NotInitialized,
    /// A ciphertext or signature that does not check out.
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    /// The key's material may be held only by nodes in other regions than this node's: the
    /// service forwards the call to a node there, so clients see this only when none answers.
    #[error("{key} may be used only by nodes in regions {allowed:?}; this node is in region {region:?}")]
    OutOfRegion { key: String, allowed: std::collections::BTreeSet<String>, region: String },
    /// Fatal: storage or an invariant broke on this node.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, NodeError>;

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match &e {
            NodeError::Kms(k) => match k {
                KmsError::NotFound(_) => Code::NotFound,
                KmsError::AlreadyExists(_) => Code::AlreadyExists,
                KmsError::InvalidState(_) => Code::FailedPrecondition,
                KmsError::StaleRoot(_) => Code::Unavailable,
                _ => Code::InvalidArgument,
            },
            NodeError::Invalid(_) => Code::InvalidArgument,
            NodeError::Unavailable(_) => Code::Unavailable,
            NodeError::PermissionDenied(_) => Code::PermissionDenied,
            NodeError::NotInitialized => Code::FailedPrecondition,
            NodeError::Crypto(c) => match c {
                CryptoError::DecryptFailed => {
                    return Status::invalid_argument(
                        "decryption failed: the ciphertext was altered, belongs to another key, or the encryption context differs from the one used to encrypt",
                    )
                }
                CryptoError::MalformedCiphertext(_)
                | CryptoError::PlaintextTooLarge { .. }
                | CryptoError::InvalidSignatureEncoding
                | CryptoError::BadSignature
                | CryptoError::InvalidPublicKey(_) => Code::InvalidArgument,
                CryptoError::NotEnoughShares { .. } => Code::Unavailable,
                _ => Code::Internal,
            },
            NodeError::OutOfRegion { .. } => Code::Unavailable,
            NodeError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
