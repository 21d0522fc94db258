use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A caller error from applying or checking a command. Replicated (it is part of the apply
/// outcome), so it carries only plain strings. Each kind maps to one gRPC status.
///
/// Not `#[non_exhaustive]`: the node maps every kind to a status code exhaustively, so a new
/// kind does not compile until someone decides its code.
#[derive(Debug, Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KmsError {
    /// NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// FAILED_PRECONDITION: the key's state forbids the operation.
    #[error("{0}")]
    InvalidState(String),
    /// INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
    /// The command's material is wrapped under a root key that was replaced meanwhile. Never
    /// recorded under an idempotency token: the proposer wraps again and retries (UNAVAILABLE
    /// if it ever reaches a client).
    #[error("{0}")]
    StaleRoot(String),
}

impl KmsError {
    /// A short stable name of the kind, for tests and the transition table.
    pub fn kind(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFound",
            KmsError::AlreadyExists(_) => "AlreadyExists",
            KmsError::InvalidState(_) => "InvalidState",
            KmsError::Invalid(_) => "Invalid",
            KmsError::StaleRoot(_) => "StaleRoot",
        }
    }
}
