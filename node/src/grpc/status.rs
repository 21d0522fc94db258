//! The one mapping from errors to gRPC status codes, and where the edge adds what a caller can
//! do about them. Exhaustive on purpose: a new error variant does not compile until someone
//! decides its code.

use crypto::CryptoError;
use raft::KmsError;
use tonic::{Code, Status};

use crate::error::NodeError;

/// The status a caller receives for `e`.
pub(crate) fn status(e: NodeError) -> Status {
    let code =
        match &e {
            NodeError::Kms(k) => match k {
                KmsError::NotFound(_) => Code::NotFound,
                KmsError::AlreadyExists(_) => Code::AlreadyExists,
                KmsError::InvalidState(_) => Code::FailedPrecondition,
                KmsError::Invalid(_) => Code::InvalidArgument,
                // Never recorded under a token: the proposer wraps again; should it ever reach a
                // client, the call may be retried.
                KmsError::StaleRoot(_) => Code::Unavailable,
            },
            NodeError::Invalid(_) => Code::InvalidArgument,
            NodeError::Unavailable(_) => Code::Unavailable,
            NodeError::PermissionDenied(_) => Code::PermissionDenied,
            NodeError::NotInitialized => {
                return Status::failed_precondition(
                    "the cluster is not initialised yet: run `keyquorum cluster init` (keyquorum dev does it for you)",
                )
            }
            NodeError::Crypto(c) => match c {
                CryptoError::DecryptFailed => return Status::invalid_argument(
                    "decryption failed: the ciphertext was altered, belongs to another key, or the encryption context \
                     differs from the one used to encrypt",
                ),
                CryptoError::MalformedCiphertext(_)
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
            NodeError::Internal(_) => Code::Internal,
        };
    Status::new(code, e.to_string())
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
            (NodeError::Kms(KmsError::NotFound("k".into())), Code::NotFound),
            (NodeError::Kms(KmsError::InvalidState("disabled".into())), Code::FailedPrecondition),
            (NodeError::Kms(KmsError::StaleRoot("r".into())), Code::Unavailable),
            (NodeError::Crypto(CryptoError::DecryptFailed), Code::InvalidArgument),
            (NodeError::Crypto(CryptoError::NotEnoughShares { have: 1, need: 2 }), Code::Unavailable),
            (NodeError::Crypto(CryptoError::KeyCheckMismatch { faulty: vec![3] }), Code::Internal),
            (NodeError::NotInitialized, Code::FailedPrecondition),
            (NodeError::Internal("x".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let what = format!("{e:?}");
            assert_eq!(status(e).code(), code, "{what}");
        }
    }

    #[test]
    fn the_edge_says_what_to_run_when_the_cluster_is_new() {
        assert!(status(NodeError::NotInitialized).message().contains("keyquorum cluster init"));
        assert!(!NodeError::NotInitialized.to_string().contains("keyquorum"), "the domain error names no command");
    }
}
