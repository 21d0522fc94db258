//! The invariants, one per file. Raft safety is checked as events happen (see
//! `history::Recorder::{leader, applied}`) and again here from the record; the others run on
//! the finished history; custody on the converged members' state.

pub mod custody;
pub mod disabled_unusable;
pub mod failover;
pub mod linearizable;
pub mod no_lost_writes;
pub mod raft_safety;
pub mod regions;
pub mod rotation;

use std::collections::BTreeMap;

use crate::history::Op;

/// The history split per key (keys are independent registers), each in invocation order.
pub fn per_key(ops: &[Op]) -> BTreeMap<&str, Vec<&Op>> {
    let mut out: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        out.entry(op.key.as_str()).or_default().push(op);
    }
    for list in out.values_mut() {
        list.sort_by_key(|o| o.invoke);
    }
    out
}

/// Hand-made histories for the checkers' own tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::history::{KeyStatus, KeyView, Op, OpKind, Outcome, Value};

    /// An operation on key `k0` between sequence numbers `invoke` and `complete`.
    pub(crate) fn op(kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client: "c".into(),
            key: "k0".into(),
            kind,
            invoke,
            complete: Some(complete),
            invoke_ms: 0,
            complete_ms: 0,
            outcome: Some(outcome),
        }
    }

    pub(crate) fn key(status: KeyStatus, primary: u32) -> Outcome {
        Outcome::Ok(Value::Key(KeyView { key_id: "id".into(), status, primary }))
    }

    pub(crate) fn ciphertext(version: u32) -> Outcome {
        Outcome::Ok(Value::Ciphertext { ciphertext: vec![], plaintext: vec![], key_id: "id".into(), version })
    }
}
