//! The crypto set: every ciphertext a client was given (an acknowledged Encrypt or data key)
//! decrypts to its plaintext at every member after healing. The final phase decrypts each one
//! at each member (ops with `node` set); a ciphertext some member was never asked about counts
//! as lost there, so a final phase that skipped work cannot pass.

use std::collections::BTreeSet;

use crate::{Op, OpKind, Outcome, Value, Violation};

pub fn check(ops: &[Op], members: &[u64]) -> Vec<Violation> {
    let mut out = Vec::new();
    // (ciphertext, node) pairs that decrypted to the right plaintext.
    let mut good: BTreeSet<(&[u8], u64)> = BTreeSet::new();
    for o in ops {
        let OpKind::Decrypt { ciphertext, plaintext, node: Some(node) } = &o.kind else { continue };
        if let Some(Outcome::Ok(Value::Plaintext { plaintext: got, .. })) = &o.outcome {
            if got == plaintext {
                good.insert((ciphertext.as_slice(), *node));
            }
        }
    }
    for o in ops {
        let (OpKind::Encrypt { .. } | OpKind::DataKey, Some(Value::Ciphertext { ciphertext, plaintext, .. })) =
            (&o.kind, o.ok())
        else {
            continue;
        };
        if plaintext.is_empty() {
            continue;
        }
        let missing: Vec<u64> =
            members.iter().copied().filter(|n| !good.contains(&(ciphertext.as_slice(), *n))).collect();
        if !missing.is_empty() {
            out.push(Violation {
                invariant: "crypto-set",
                detail: format!(
                    "key {}: the ciphertext {} by {} acknowledged (#{}) does not decrypt to its plaintext at {missing:?}",
                    o.key,
                    o.kind.name(),
                    o.client,
                    o.invoke
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::op;

    fn encrypted(ct: &[u8], pt: &[u8]) -> Op {
        op(
            OpKind::Encrypt { plaintext: pt.to_vec() },
            1,
            2,
            Outcome::Ok(Value::Ciphertext {
                ciphertext: ct.to_vec(),
                plaintext: pt.to_vec(),
                key_id: "id".into(),
                version: 1,
            }),
        )
    }

    fn decrypted(ct: &[u8], pt: &[u8], got: &[u8], node: u64) -> Op {
        op(
            OpKind::Decrypt { ciphertext: ct.to_vec(), plaintext: pt.to_vec(), node: Some(node) },
            3,
            4,
            Outcome::Ok(Value::Plaintext { plaintext: got.to_vec(), version: 1 }),
        )
    }

    #[test]
    fn every_ciphertext_decrypted_everywhere_passes() {
        let ops = vec![encrypted(b"c", b"p"), decrypted(b"c", b"p", b"p", 1), decrypted(b"c", b"p", b"p", 2)];
        assert!(check(&ops, &[1, 2]).is_empty());
    }

    #[test]
    fn a_wrong_plaintext_or_an_unasked_member_fails() {
        let wrong = vec![encrypted(b"c", b"p"), decrypted(b"c", b"p", b"x", 1)];
        assert_eq!(check(&wrong, &[1]).len(), 1);
        let unasked = vec![encrypted(b"c", b"p"), decrypted(b"c", b"p", b"p", 1)];
        assert_eq!(check(&unasked, &[1, 2]).len(), 1);
    }
}
