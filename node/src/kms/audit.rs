//! Recording calls: who did what to which key, through which node, with what outcome.
//!
//! [`AuditSink`] is where records go: the node's durable, hash-chained audit log
//! (`crate::audit::AuditLog`), which also writes one `tracing` event per call (target
//! `audit`, level DEBUG, [`trace`]: `KEYQUORUM_LOG=info,audit=debug` shows them). A call is
//! answered only once its record is written: a sink that fails refuses the call.
//!
//! **Architecture Invariant:** a record names the call's principal (never the member that
//! forwarded it, which it names apart), the operation and the key; never a plaintext, key
//! material or a ciphertext. The durable record names the key by id only (`crate::audit`).

use raft::NodeId;
use uuid::Uuid;

use super::{CallContext, Context, Routed};
use crate::error::{NodeError, Result};

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
    /// The error, when the call was refused.
    pub error: Option<&'a NodeError>,
    /// The encryption context the call named.
    pub context: Option<&'a Context>,
    /// The key id and version the call used, when it used one.
    pub used: Option<(Uuid, u32)>,
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

/// Where call records go. `record` returns once the record is kept; an error refuses the call.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    async fn record(&self, record: &AuditRecord<'_>) -> Result<()>;
}

/// One `tracing` event for a call (target `audit`, level DEBUG: the durable record is the
/// audit trail; an INFO line per call cost 8 % of warm Encrypt throughput), beside its record.
pub fn trace(r: &AuditRecord<'_>) {
    tracing::debug!(
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
