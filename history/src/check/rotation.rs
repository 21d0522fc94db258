//! Rotation consistency:
//! - an Encrypt (or data key) invoked after a RotateKey was acknowledged uses a version at
//!   least that new;
//! - every ciphertext ever returned decrypts to its plaintext at every node after healing
//!   (the final phase decrypts each one at each member; those reads carry `node`);
//!
//! (That no two nodes hold different material for one key version is the simulator's check:
//! it reads the nodes' state directly.)

use crate::{Op, OpKind, Outcome, Value, Violation};

pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, list) in super::per_key(ops) {
        // (ack seq, version) of every acknowledged rotation.
        let rotations: Vec<(u64, u32)> = list
            .iter()
            .filter(|o| o.kind == OpKind::Rotate)
            .filter_map(|o| match (o.ok(), o.complete) {
                (Some(Value::Key(k)), Some(c)) => Some((c, k.primary)),
                _ => None,
            })
            .collect();
        for o in &list {
            let (OpKind::Encrypt { .. } | OpKind::DataKey, Some(Value::Ciphertext { version, .. })) = (&o.kind, o.ok())
            else {
                continue;
            };
            if let Some((ack, newer)) = rotations.iter().filter(|(ack, _)| *ack < o.invoke).max_by_key(|(_, v)| *v) {
                if version < newer {
                    out.push(Violation {
                        invariant: "rotation",
                        detail: format!(
                            "key {key}: {} by {} (invoke #{}) used version {version}, but rotation to version {newer} was acknowledged at #{ack}",
                            o.kind.name(),
                            o.client,
                            o.invoke
                        ),
                    });
                }
            }
        }
        for o in &list {
            let OpKind::Decrypt { plaintext, node: Some(node), .. } = &o.kind else { continue };
            match &o.outcome {
                Some(Outcome::Ok(Value::Plaintext { plaintext: got, .. })) if got == plaintext => {}
                other => out.push(Violation {
                    invariant: "rotation",
                    detail: format!(
                        "key {key}: an acknowledged ciphertext did not decrypt at n{node}: {}",
                        other.as_ref().map(crate::summary).unwrap_or_default()
                    ),
                }),
            }
        }
    }
    out
}
