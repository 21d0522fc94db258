//! The one mapping from errors to gRPC status codes, and where the edge adds what a caller can
//! do about them. Exhaustive on purpose: a new error variant does not compile until someone
//! decides its code.

use crypto::CryptoError;
use raft::{KmsError, Unusable};
use tonic::{Code, Status};

use crate::error::NodeError;

/// What a caller can do about a key-store error, as the edge tells it.
fn advice(k: &KmsError) -> Option<&'static str> {
    match k {
        KmsError::AliasNotFound(_) => Some("create it (keyquorum key create --alias) or list the keys"),
        KmsError::AliasExists(_) => Some("choose another name or delete the alias first"),
        KmsError::KeyNotUsable { state: Unusable::Disabled, .. } => Some("enable it first (keyquorum key enable)"),
        KmsError::KeyNotUsable { state: Unusable::PendingDeletion, .. } => {
            Some("cancel the deletion first (keyquorum key cancel-deletion), then enable it")
        }
        KmsError::VersionNotUsable { state: Unusable::Disabled, .. } => {
            Some("enable the version first (keyquorum key enable-version)")
        }
        KmsError::PrimaryVersion { .. } => Some("it cannot be disabled: rotate the key first"),
        KmsError::NotInitialized => Some("run `keyquorum cluster init` (keyquorum dev does it for you)"),
        KmsError::TokenReused(_) => Some("use a new token for a new request"),
        KmsError::QuotaExceeded(_) => {
            Some("schedule unused keys for deletion or delete aliases, or ask an operator to raise the quota (keyquorum cluster quota set)")
        }
        KmsError::AccessDenied { .. } => {
            Some("ask the key's owner for a grant or a policy statement (keyquorum key policy get shows it to those who may read it)")
        }
        KmsError::KeyNotFound(_)
        | KmsError::GrantNotFound { .. }
        | KmsError::VersionNotFound { .. }
        | KmsError::NotFound(_)
        | KmsError::KeyExists(_)
        | KmsError::AlreadyExists(_)
        | KmsError::KeyNotUsable { .. }
        | KmsError::VersionNotUsable { .. }
        | KmsError::NotPendingDeletion(_)
        | KmsError::InvalidState(_)
        | KmsError::Invalid(_)
        | KmsError::StaleRoot { .. } => None,
    }
}

/// The status a caller receives for `e`: its code, and its message with what to do about it.
pub(crate) fn status(e: NodeError) -> Status {
    let code = code(&e);
    match &e {
        NodeError::Kms(k) => match advice(k) {
            Some(advice) => Status::new(code, format!("{k}; {advice}")),
            None => Status::new(code, k.to_string()),
        },
        NodeError::Crypto(CryptoError::DecryptFailed) => Status::new(
            code,
            "decryption failed: the ciphertext was altered, belongs to another key, or the encryption context differs \
             from the one used to encrypt",
        ),
        NodeError::Overloaded { retry_after_ms, .. } | NodeError::Throttled { retry_after_ms, .. } => {
            let mut status = Status::new(code, e.to_string());
            if let Ok(value) = retry_after_ms.to_string().parse() {
                status.metadata_mut().insert(proto::RETRY_AFTER_MS, value);
            }
            status
        }
        _ => Status::new(code, e.to_string()),
    }
}

/// The gRPC code of `e`, as a caller receives it and the audit log records it.
pub(crate) fn code(e: &NodeError) -> Code {
    match e {
        NodeError::Kms(k) => match k {
            KmsError::KeyNotFound(_)
            | KmsError::AliasNotFound(_)
            | KmsError::VersionNotFound { .. }
            | KmsError::NotFound(_)
            | KmsError::GrantNotFound { .. } => Code::NotFound,
            KmsError::AccessDenied { .. } => Code::PermissionDenied,
            KmsError::KeyExists(_) | KmsError::AliasExists(_) | KmsError::AlreadyExists(_) => Code::AlreadyExists,
            KmsError::KeyNotUsable { .. }
            | KmsError::VersionNotUsable { .. }
            | KmsError::PrimaryVersion { .. }
            | KmsError::NotPendingDeletion(_)
            | KmsError::NotInitialized
            | KmsError::InvalidState(_) => Code::FailedPrecondition,
            KmsError::TokenReused(_) | KmsError::Invalid(_) => Code::InvalidArgument,
            // No retry-after hint: waiting does not make room.
            KmsError::QuotaExceeded(_) => Code::ResourceExhausted,
            // Never recorded under a token: the proposer wraps again; should it ever reach a
            // client, the call may be retried.
            KmsError::StaleRoot { .. } => Code::Unavailable,
        },
        NodeError::Invalid(_) => Code::InvalidArgument,
        NodeError::Unavailable(_) => Code::Unavailable,
        NodeError::PermissionDenied(_) => Code::PermissionDenied,
        NodeError::Crypto(c) => match c {
            CryptoError::DecryptFailed
            | CryptoError::MalformedCiphertext(_)
            | CryptoError::PlaintextTooLarge { .. }
            | CryptoError::InvalidSignatureEncoding
            | CryptoError::BadSignature
            | CryptoError::InvalidPublicKey(_) => Code::InvalidArgument,
            // Too few holders answered: another attempt (or node) may find enough.
            CryptoError::NotEnoughShares { .. } => Code::Unavailable,
            // Faults of this node or of the cluster's custody, never of the request.
            CryptoError::InvalidKeyLength { .. }
            | CryptoError::InvalidNonceLength(_)
            | CryptoError::InvalidPrivateKey
            | CryptoError::Threshold(_)
            | CryptoError::KeyCheckMismatch { .. }
            | CryptoError::Dkg(_)
            | CryptoError::Encoding(_) => Code::Internal,
        },
        NodeError::OutOfRegion { .. } => Code::Unavailable,
        NodeError::Overloaded { .. } | NodeError::Throttled { .. } => Code::ResourceExhausted,
        NodeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        NodeError::Internal(_) => Code::Internal,
    }
}

/// `code`'s name as gRPC spells it (`PERMISSION_DENIED`).
pub(crate) fn code_name(e: &NodeError) -> &'static str {
    match code(e) {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_error_has_its_code() {
        let cases = [
            (NodeError::Kms(KmsError::AliasNotFound("k".into())), Code::NotFound),
            (NodeError::Kms(KmsError::InvalidState("no round".into())), Code::FailedPrecondition),
            (NodeError::Kms(KmsError::StaleRoot { wrapped: 1, root: 2 }), Code::Unavailable),
            (NodeError::Crypto(CryptoError::DecryptFailed), Code::InvalidArgument),
            (NodeError::Crypto(CryptoError::NotEnoughShares { have: 1, need: 2 }), Code::Unavailable),
            (NodeError::Crypto(CryptoError::KeyCheckMismatch { faulty: vec![3] }), Code::Internal),
            (NodeError::Kms(KmsError::NotInitialized), Code::FailedPrecondition),
            (NodeError::Internal("x".into()), Code::Internal),
            (NodeError::DeadlineExceeded("slow".into()), Code::DeadlineExceeded),
        ];
        for (e, code) in cases {
            let what = format!("{e:?}");
            assert_eq!(status(e).code(), code, "{what}");
        }
    }

    #[test]
    fn the_edge_says_what_to_do_and_the_replicated_error_only_what_happened() {
        assert!(status(NodeError::Kms(KmsError::NotInitialized)).message().contains("keyquorum cluster init"));
        assert!(!KmsError::NotInitialized.to_string().contains("keyquorum"), "the domain error names no command");
        let key = uuid::Uuid::from_u128(7);
        let disabled = KmsError::KeyNotUsable { key, state: Unusable::Disabled, action: raft::Action::Use };
        assert_eq!(disabled.to_string(), format!("cannot use it: key {key} is disabled"));
        let s = status(NodeError::Kms(disabled));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().ends_with("enable it first (keyquorum key enable)"), "{}", s.message());
    }

    #[test]
    fn an_overloaded_node_says_how_long_to_wait_and_that_another_node_may_serve() {
        let s = status(NodeError::Overloaded { node: 2, limit: 8, retry_after_ms: 20 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("limit of 8 calls"), "{}", s.message());
        assert_eq!(proto::retry_after(&s), Some(std::time::Duration::from_millis(20)));
        assert!(proto::retry_elsewhere(&s));
        // A quota's RESOURCE_EXHAUSTED without the hint is not retried elsewhere.
        assert!(!proto::retry_elsewhere(&Status::resource_exhausted("over quota")));
    }
}
