//! What a failed call means for the caller: retry it, fix it, find out whether it happened, or
//! give up. Decided once, here, from the gRPC status, what the call was, and whether it may
//! have reached a node.

use thiserror::Error;
use tonic::{Code, Status};

use crate::options::CallKind;

/// Why a client could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("no endpoints given: pass --endpoints or set KEYQUORUM_ENDPOINTS")]
    NoEndpoints,
    #[error("invalid endpoint {0:?}: {1}")]
    InvalidEndpoint(String, String),
    #[error("TLS credentials: {0}")]
    Credentials(String),
}

/// What the caller of a failed call can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The cluster could not serve the call now (no leader or quorum, a sealed node, no node
    /// answered) and it took no effect: the same call may succeed later.
    Retry,
    /// The request was refused as it stands (invalid, not found, wrong key state, not
    /// permitted): it took no effect, and sending it again gives the same answer.
    Rejected,
    /// The call may or may not have taken effect: a write that reached a node and then timed
    /// out or lost its node. Sending it again with the same idempotency token settles it.
    Unknown,
    /// The server or this client failed in a way retrying does not fix (an internal error,
    /// data loss, a call the server does not implement).
    Fatal,
}

/// A call that failed, with what it means ([`ErrorKind`]) and the last status a node (or the
/// transport) gave.
#[derive(Debug, Clone, Error)]
#[error("{:?}: {}", .status.code(), .status.message())]
pub struct Error {
    kind: ErrorKind,
    status: Status,
}

impl Error {
    /// The error for a call of `kind` that ended with `status`; `sent`: the request may have
    /// reached a node.
    pub(crate) fn new(call: CallKind, status: Status, sent: bool) -> Self {
        let kind = match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange => ErrorKind::Rejected,
            Code::Internal | Code::DataLoss | Code::Unimplemented | Code::Ok => ErrorKind::Fatal,
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown => {
                if call == CallKind::Read || !sent {
                    ErrorKind::Retry
                } else {
                    ErrorKind::Unknown
                }
            }
        };
        Self { kind, status }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn code(&self) -> Code {
        self.status.code()
    }

    pub fn message(&self) -> &str {
        self.status.message()
    }

    /// The status the call ended with.
    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn into_status(self) -> Status {
        self.status
    }

    /// Whether the call may have taken effect (it was not refused outright).
    pub fn effect_in_doubt(&self) -> bool {
        self.kind != ErrorKind::Rejected
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_rejected_whatever_the_call() {
        for call in [CallKind::Read, CallKind::Idempotent, CallKind::Unsafe] {
            for code in [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition, Code::PermissionDenied] {
                let e = Error::new(call, Status::new(code, "no"), true);
                assert_eq!(e.kind(), ErrorKind::Rejected, "{call:?} {code:?}");
                assert!(!e.effect_in_doubt());
            }
        }
    }

    #[test]
    fn an_unanswered_write_that_was_sent_is_unknown_and_a_read_is_retried() {
        let timeout = || Status::deadline_exceeded("late");
        assert_eq!(Error::new(CallKind::Idempotent, timeout(), true).kind(), ErrorKind::Unknown);
        assert_eq!(Error::new(CallKind::Unsafe, timeout(), true).kind(), ErrorKind::Unknown);
        assert_eq!(Error::new(CallKind::Unsafe, timeout(), false).kind(), ErrorKind::Retry, "never sent");
        assert_eq!(Error::new(CallKind::Read, Status::unavailable("x"), true).kind(), ErrorKind::Retry);
        assert_eq!(Error::new(CallKind::Read, Status::internal("x"), true).kind(), ErrorKind::Fatal);
        assert!(Error::new(CallKind::Read, Status::internal("x"), true).effect_in_doubt());
    }
}
