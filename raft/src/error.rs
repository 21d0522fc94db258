use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// What a command was doing when a key's state refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Encrypt, decrypt, sign, verify, make a data key.
    Use,
    Rotate,
    Enable,
    Disable,
    ScheduleDeletion,
    SetDescription,
    Tag,
    Untag,
    SetRotationPolicy,
    ChangeVersion,
    SetAllowedRegions,
    CreateAlias,
    CreateGrant,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Use => "use it",
            Action::Rotate => "rotate it",
            Action::Enable => "enable it",
            Action::Disable => "disable it",
            Action::ScheduleDeletion => "schedule its deletion",
            Action::SetDescription => "change its description",
            Action::Tag => "tag it",
            Action::Untag => "untag it",
            Action::SetRotationPolicy => "set its rotation policy",
            Action::ChangeVersion => "change a version's state",
            Action::SetAllowedRegions => "change its allowed regions",
            Action::CreateAlias => "point an alias at it",
            Action::CreateGrant => "grant its use",
        })
    }
}

/// Why a key or a version cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unusable {
    Disabled,
    PendingDeletion,
    Destroyed,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unusable::Disabled => "disabled",
            Unusable::PendingDeletion => "pending deletion",
            Unusable::Destroyed => "destroyed",
        })
    }
}

/// A caller error from applying or checking a command. Replicated (it is part of the apply
/// outcome, and of token records in snapshots), so it says *what* went wrong as data and in
/// plain facts; what the caller can do about it is the gRPC edge's to write. Each kind maps to
/// one gRPC status.
///
/// Not `#[non_exhaustive]`: the node maps every kind to a status code exhaustively, so a new
/// kind does not compile until someone decides its code.
#[derive(Debug, Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KmsError {
    /// NOT_FOUND.
    #[error("key {0} does not exist")]
    KeyNotFound(Uuid),
    #[error("alias/{0} does not exist")]
    AliasNotFound(String),
    #[error("key {key} has no version {version}")]
    VersionNotFound { key: Uuid, version: u32 },
    /// Something of the cluster's own (a key generation part, a log key version).
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("key {0} already exists")]
    KeyExists(Uuid),
    #[error("alias/{0} already exists")]
    AliasExists(String),
    /// Something of the cluster's own (a finished key generation round, a log key version).
    #[error("{0}")]
    AlreadyExists(String),
    /// FAILED_PRECONDITION: the key's state forbids the action.
    #[error("cannot {action}: key {key} is {state}")]
    KeyNotUsable { key: Uuid, state: Unusable, action: Action },
    /// FAILED_PRECONDITION: the version's state forbids using it.
    #[error("version {version} of key {key} is {state}")]
    VersionNotUsable { key: Uuid, version: u32, state: Unusable },
    /// FAILED_PRECONDITION: the primary version cannot be disabled.
    #[error("version {version} is the primary version of key {key}")]
    PrimaryVersion { key: Uuid, version: u32 },
    /// FAILED_PRECONDITION.
    #[error("key {0} is not pending deletion")]
    NotPendingDeletion(Uuid),
    /// FAILED_PRECONDITION: no root key yet.
    #[error("the cluster is not initialised")]
    NotInitialized,
    /// FAILED_PRECONDITION: the root key's lifecycle (key generation, replacement) forbids it.
    #[error("{0}")]
    InvalidState(String),
    /// INVALID_ARGUMENT: the token names another request.
    #[error("idempotency token {0:?} was already used for a different request")]
    TokenReused(String),
    /// INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
    /// PERMISSION_DENIED: neither the key's policy nor a grant allows it. Names who, what and
    /// which key, never the policy.
    #[error("{principal} is not allowed to {operation}{}", key.map(|k| format!(" on key {k}")).unwrap_or_default())]
    AccessDenied { principal: String, operation: String, key: Option<Uuid> },
    /// RESOURCE_EXHAUSTED: the principal holds what its quota allows (keys, aliases). Waiting
    /// does not help; destroying keys or a higher quota does.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// NOT_FOUND.
    #[error("key {key} has no grant {grant}")]
    GrantNotFound { key: Uuid, grant: Uuid },
    /// The command's material is wrapped under a root key that was replaced meanwhile. Never
    /// recorded under an idempotency token: the proposer wraps again and retries (UNAVAILABLE
    /// if it ever reaches a client).
    #[error("material wrapped under root epoch {wrapped}, which epoch {root} replaced")]
    StaleRoot { wrapped: u64, root: u64 },
}

impl KmsError {
    /// A short stable name of the kind (the status family), for tests and the transition table.
    pub fn kind(&self) -> &'static str {
        match self {
            KmsError::KeyNotFound(_)
            | KmsError::AliasNotFound(_)
            | KmsError::VersionNotFound { .. }
            | KmsError::NotFound(_)
            | KmsError::GrantNotFound { .. } => "NotFound",
            KmsError::AccessDenied { .. } => "AccessDenied",
            KmsError::KeyExists(_) | KmsError::AliasExists(_) | KmsError::AlreadyExists(_) => "AlreadyExists",
            KmsError::KeyNotUsable { .. }
            | KmsError::VersionNotUsable { .. }
            | KmsError::PrimaryVersion { .. }
            | KmsError::NotPendingDeletion(_)
            | KmsError::NotInitialized
            | KmsError::InvalidState(_) => "InvalidState",
            KmsError::TokenReused(_) | KmsError::Invalid(_) => "Invalid",
            KmsError::StaleRoot { .. } => "StaleRoot",
            KmsError::QuotaExceeded(_) => "QuotaExceeded",
        }
    }
}
