//! No acknowledged write is lost: every acknowledged create and rotation is visible on every
//! node after healing (through the final per-node reads), and concurrent creates of one key
//! with one idempotency token yield exactly one key.

use std::collections::BTreeMap;

use crate::{Op, OpKind, Outcome, Value, Violation};

pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut ids: BTreeMap<&str, &str> = BTreeMap::new();
    for op in ops {
        if let (OpKind::Create, Some(Outcome::Ok(Value::Key(k)))) = (&op.kind, &op.outcome) {
            match ids.insert(op.key.as_str(), k.key_id.as_str()) {
                Some(prev) if prev != k.key_id => out.push(Violation {
                    invariant: "no-lost-writes",
                    detail: format!("key {} was created twice with one token: {prev} and {}", op.key, k.key_id),
                }),
                _ => {}
            }
        }
    }
    // Highest acknowledged version per key.
    let mut acked: BTreeMap<&str, u32> = BTreeMap::new();
    for op in ops {
        if let Some(Value::Key(k)) = op.ok() {
            if op.kind.is_write() {
                let v = acked.entry(op.key.as_str()).or_default();
                *v = (*v).max(k.primary);
            }
        }
    }
    for op in ops {
        let OpKind::Describe { node: Some(node) } = op.kind else { continue };
        let Some(min) = acked.get(op.key.as_str()) else { continue };
        match op.ok() {
            Some(Value::Key(k)) => {
                if k.primary < *min {
                    out.push(Violation {
                        invariant: "no-lost-writes",
                        detail: format!(
                            "after healing, n{node} shows key {} at version {} but version {min} was acknowledged",
                            op.key, k.primary
                        ),
                    });
                }
                if let Some(id) = ids.get(op.key.as_str()) {
                    if *id != k.key_id {
                        out.push(Violation {
                            invariant: "no-lost-writes",
                            detail: format!("after healing, n{node} resolves {} to {} not {id}", op.key, k.key_id),
                        });
                    }
                }
            }
            _ => out.push(Violation {
                invariant: "no-lost-writes",
                detail: format!(
                    "after healing, n{node} could not read acknowledged key {}: {}",
                    op.key,
                    op.outcome.as_ref().map(crate::summary).unwrap_or_default()
                ),
            }),
        }
    }
    out
}
