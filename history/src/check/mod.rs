//! The checkers of a client history, one per file. Each takes the whole history and returns
//! the violations it found; a checker that finds nothing returns an empty list.

pub mod crypto_set;
pub mod disabled_unusable;
pub mod idempotent_create;
pub mod linearizable;
pub mod no_lost_writes;
pub mod revocation;
pub mod rotation;

use std::collections::BTreeMap;

use crate::Op;

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

/// Hand-made histories for the checkers' own tests (here and in the simulator's).
pub mod testing {
    use crate::{KeyStatus, KeyView, Op, OpKind, Outcome, Value};

    /// An operation on key `k0` between sequence numbers `invoke` and `complete`.
    pub fn op(kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
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

    pub fn key(status: KeyStatus, primary: u32) -> Outcome {
        Outcome::Ok(Value::Key(KeyView { key_id: "id".into(), status, primary }))
    }

    pub fn ciphertext(version: u32) -> Outcome {
        Outcome::Ok(Value::Ciphertext { ciphertext: vec![], plaintext: vec![], key_id: "id".into(), version })
    }
}
