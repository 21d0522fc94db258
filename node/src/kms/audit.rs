//! Recording calls: who did what to which key, through which node, with what outcome.
//!
//! [`AuditSink`] is where a durable, tamper-evident audit log plugs in; for now
//! [`TracingAudit`] writes one `tracing` event per call (target `audit`), which operators can
//! filter (`KEYQUORUM_LOG=info,audit=warn` silences it).
//!
//! **Architecture Invariant:** a record names the call's principal (never the member that
//! forwarded it, which it names apart), the operation and the key as named; never a
//! plaintext, key material or a ciphertext.

use raft::NodeId;

use super::{CallContext, Routed};
use crate::error::Result;

/// One call, as it is recorded.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// The node that recorded it.
    pub node: NodeId,
    /// `kms` or `admin`.
    pub service: &'static str,
    pub operation: &'static str,
    /// The key the call named (id or alias), if any.
    pub key: Option<&'a str>,
    pub ctx: &'a CallContext,
    pub outcome: Outcome,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Served,
    /// Sent on to one of these members.
    Forwarded(Vec<NodeId>),
    /// Refused, with the error's kind.
    Refused(&'static str),
}

impl Outcome {
    pub fn of<T, O>(result: &Result<Routed<T, O>>) -> Self {
        match result {
            Ok(Routed::Served(_)) => Outcome::Served,
            Ok(Routed::Forward(f, _)) => Outcome::Forwarded(f.to.iter().map(|(id, _)| *id).collect()),
            Err(e) => Outcome::Refused(e.kind()),
        }
    }

    /// The outcome of a call served here or refused (operator calls are never forwarded).
    pub fn served<T>(result: &Result<T>) -> Self {
        match result {
            Ok(_) => Outcome::Served,
            Err(e) => Outcome::Refused(e.kind()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Served => write!(f, "ok"),
            Outcome::Forwarded(to) => {
                let to: Vec<String> = to.iter().map(|id| id.to_string()).collect();
                write!(f, "forwarded to node {}", to.join(" or "))
            }
            Outcome::Refused(kind) => write!(f, "refused: {kind}"),
        }
    }
}

/// Where call records go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn record(&self, record: &AuditRecord<'_>);
}

/// Records calls as `tracing` events (target `audit`, level INFO).
#[derive(Debug, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record(&self, r: &AuditRecord<'_>) {
        tracing::info!(
            target: "audit",
            node = r.node,
            service = r.service,
            operation = r.operation,
            principal = %r.ctx.caller,
            forwarded_by = r.ctx.forwarded_by,
            key = r.key,
            outcome = %r.outcome,
            "call"
        );
    }
}
