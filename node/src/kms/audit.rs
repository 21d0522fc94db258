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
pub struct AuditRecord<'a, T, O> {
    /// The node that recorded it.
    pub node: NodeId,
    pub operation: &'static str,
    /// The key the call named (id or alias), if any.
    pub key: Option<&'a str>,
    pub ctx: &'a CallContext,
    pub result: &'a Result<Routed<T, O>>,
}

/// How a call ended, as a record says it.
pub fn outcome<T, O>(result: &Result<Routed<T, O>>) -> String {
    match result {
        Ok(Routed::Served(_)) => "ok".into(),
        Ok(Routed::Forward(f, _)) => {
            let to: Vec<String> = f.to.iter().map(|(id, _)| id.to_string()).collect();
            format!("forwarded to node {}", to.join(" or "))
        }
        Err(e) => format!("refused: {}", e.kind()),
    }
}

/// Where call records go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn record_kms(&self, record: &AuditRecord<'_, super::Out, super::Op>);
    fn record_admin(&self, record: &AuditRecord<'_, crate::admin::AdminOut, crate::admin::AdminOp>);
}

/// Records calls as `tracing` events (target `audit`, level INFO).
#[derive(Debug, Default)]
pub struct TracingAudit;

impl TracingAudit {
    fn log<T, O>(&self, kind: &str, r: &AuditRecord<'_, T, O>) {
        tracing::info!(
            target: "audit",
            node = r.node,
            service = kind,
            operation = r.operation,
            principal = %r.ctx.caller,
            forwarded_by = r.ctx.forwarded_by,
            key = r.key,
            outcome = %outcome(r.result),
            "call"
        );
    }
}

impl AuditSink for TracingAudit {
    fn record_kms(&self, record: &AuditRecord<'_, super::Out, super::Op>) {
        self.log("kms", record);
    }

    fn record_admin(&self, record: &AuditRecord<'_, crate::admin::AdminOut, crate::admin::AdminOp>) {
        self.log("admin", record);
    }
}
