//! The audit-trail check: after the run, every member's audit log is read back; each chain
//! must pass `audit::verify` against the head the cluster replicated for it, and **every
//! acknowledged operation must have a record** (by its request id) in some node's log — the
//! records were durable before the answers, so no kill -9 may lose one.

use std::collections::{BTreeMap, BTreeSet};

use history::{Op, Outcome, Violation};

use crate::nemesis::SharedCluster;
use crate::recorder::Recorder;

/// What the members' audit logs held after the run.
#[derive(Debug, Default)]
pub struct Trails {
    /// Per member: its lines in file order, or why they could not be read.
    pub logs: BTreeMap<u64, Result<Vec<audit::Line>, String>>,
    /// The chain heads the replicated log holds.
    pub heads: BTreeMap<u64, audit::Head>,
    /// Why the heads could not be read, if they could not.
    pub heads_error: Option<String>,
}

/// Reads every member's audit log (each from that node alone) and the replicated heads.
pub async fn read(cluster: &SharedCluster) -> Trails {
    let mut trails = Trails::default();
    let (ids, admins) = {
        let c = cluster.lock().await;
        let ids: Vec<u64> = c.members.iter().map(|m| m.id).collect();
        let admins: Vec<_> = ids.iter().map(|id| c.admin_for(&[*id])).collect();
        (ids, admins)
    };
    for (id, admin) in ids.iter().zip(admins) {
        let log = match admin {
            Ok(admin) => {
                if trails.heads.is_empty() && trails.heads_error.is_none() {
                    match admin.audit_heads(client::pb::AuditHeadsRequest {}).await {
                        Ok(r) => {
                            trails.heads = r
                                .heads
                                .into_iter()
                                .map(|h| (h.node, audit::Head { seq: h.seq, hash: h.hash }))
                                .collect()
                        }
                        Err(e) => trails.heads_error = Some(e.to_string()),
                    }
                }
                admin.audit_log().await.map_err(|e| e.to_string()).map(|log| {
                    log.lines
                        .into_iter()
                        .map(|l| audit::Line {
                            place: audit::Place { file: l.file, line: l.line as usize },
                            text: l.text,
                        })
                        .collect()
                })
            }
            Err(e) => Err(format!("{e:#}")),
        };
        trails.logs.insert(*id, log);
    }
    trails
}

/// Violations: a log that cannot be read, a chain that fails its check, and an acknowledged
/// operation that no node recorded.
pub fn check(ops: &[Op], trails: &Trails) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |detail: String| out.push(Violation { invariant: "audit-trail", detail });
    if let Some(e) = &trails.heads_error {
        v(format!("the replicated audit heads could not be read: {e}"));
    }
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    for (node, log) in &trails.logs {
        let lines = match log {
            Ok(lines) => lines,
            Err(e) => {
                v(format!("node {node}'s audit log could not be read: {e}"));
                continue;
            }
        };
        if let Err(broken) = audit::verify(*node, lines, trails.heads.get(node)) {
            v(format!("node {node}'s audit chain is broken at {broken}"));
        }
        for line in lines {
            if let Ok(r) = serde_json::from_str::<audit::Record>(&line.text) {
                recorded.insert(r.request_id);
            }
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if matches!(op.outcome, Some(Outcome::Ok(_))) && !recorded.contains(&Recorder::request_id(i)) {
            v(format!(
                "{} {} on {} by {} was acknowledged, but no node's audit log records it ({})",
                op.kind.name(),
                i,
                op.key,
                op.client,
                Recorder::request_id(i)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use history::{OpKind, Value};

    use super::*;

    fn record(seq: u64, prev: &str, request_id: &str) -> audit::Record {
        let mut r = audit::Record {
            seq: 0,
            prev: String::new(),
            time_ms: 1,
            node: 1,
            service: "kms".into(),
            operation: "DescribeKey".into(),
            principal: Some("client/dev".into()),
            forwarded_by: None,
            key: Some("k0".into()),
            key_id: None,
            version: None,
            context: Default::default(),
            code: "OK".into(),
            outcome: "ok".into(),
            request_id: request_id.into(),
            peer: None,
            retained_from: None,
            hash: String::new(),
        };
        r.seal(seq, prev);
        r
    }

    fn op(outcome: Outcome) -> Op {
        let mut op = Op::invoked("c0", "k0", OpKind::Describe { node: None }, 1, 0);
        op.outcome = Some(outcome);
        op
    }

    fn trails(records: &[audit::Record]) -> Trails {
        let lines = records
            .iter()
            .enumerate()
            .map(|(i, r)| audit::Line { place: audit::Place { file: "a".into(), line: i + 1 }, text: r.to_line() })
            .collect();
        let head = records.last().map(|r| audit::Head { seq: r.seq, hash: r.hash.clone() });
        Trails { logs: [(1, Ok(lines))].into(), heads: head.into_iter().map(|h| (1, h)).collect(), heads_error: None }
    }

    #[test]
    fn an_acknowledged_operation_without_a_record_is_found_and_an_unacknowledged_one_is_not() {
        let a = record(0, audit::GENESIS, &Recorder::request_id(0));
        let ops = vec![
            op(Outcome::Ok(Value::Plaintext { plaintext: vec![], version: 1 })),
            op(Outcome::Unknown("timeout".into())),
        ];
        assert!(check(&ops, &trails(std::slice::from_ref(&a))).is_empty());
        // The first op's record is missing: caught.
        let other = record(0, audit::GENESIS, "someone-else");
        let found = check(&ops, &trails(&[other]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("jepsen-op-0"), "{found:?}");
    }

    #[test]
    fn a_broken_chain_and_an_unreadable_log_are_violations() {
        let a = record(0, audit::GENESIS, &Recorder::request_id(0));
        let b = record(a.seq, &a.hash, "x");
        let mut t = trails(&[a.clone(), b]);
        // Drop the first record: the chain no longer starts at 1.
        if let Some(Ok(lines)) = t.logs.get_mut(&1) {
            lines.remove(0);
        }
        let found = check(&[], &t);
        assert!(found.iter().any(|v| v.detail.contains("broken")), "{found:?}");
        t.logs.insert(2, Err("connection refused".into()));
        assert_eq!(check(&[], &t).len(), 2);
    }
}
