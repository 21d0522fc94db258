//! Disabled means unusable: no Encrypt, Decrypt or data key succeeds on a key if it was
//! invoked after a DisableKey was acknowledged, unless some EnableKey could have taken effect
//! between the two: one not definitely refused, invoked before the crypto call completed, and
//! completed (if ever) after the DisableKey was invoked — a DisableKey takes effect somewhere
//! between its invocation and its acknowledgement, so an EnableKey overlapping that window may
//! come after it.

use crate::{Op, OpKind, Outcome, Violation};

pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, list) in super::per_key(ops) {
        // (invoked, acknowledged) of every acknowledged DisableKey.
        let disables: Vec<(u64, u64)> = list
            .iter()
            .filter(|o| o.kind == OpKind::Disable && o.ok().is_some())
            .filter_map(|o| o.complete.map(|c| (o.invoke, c)))
            .collect();
        let enables: Vec<&&Op> = list
            .iter()
            .filter(|o| matches!(o.kind, OpKind::Enable) && !matches!(o.outcome, Some(Outcome::Fail(..))))
            .collect();
        for o in &list {
            if !matches!(o.kind, OpKind::Encrypt { .. } | OpKind::Decrypt { .. } | OpKind::DataKey) || o.ok().is_none()
            {
                continue;
            }
            let Some(done) = o.complete else { continue };
            for &(invoked, d) in &disables {
                if o.invoke <= d {
                    continue;
                }
                let re_enabled = enables.iter().any(|e| e.invoke < done && e.effective_complete() > invoked);
                if !re_enabled {
                    out.push(Violation {
                        invariant: "disabled-unusable",
                        detail: format!(
                            "key {key}: {} by {} succeeded (#{}..#{done}) after DisableKey was acknowledged at #{d} with no EnableKey in between",
                            o.kind.name(),
                            o.client,
                            o.invoke
                        ),
                    });
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::{self, op};
    use crate::KeyStatus;

    fn key(status: KeyStatus) -> Outcome {
        testing::key(status, 1)
    }

    fn encrypted() -> Outcome {
        testing::ciphertext(1)
    }

    #[test]
    fn encrypt_after_acknowledged_disable_is_caught() {
        let ops = vec![
            op(OpKind::Disable, 1, 2, key(KeyStatus::Disabled)),
            op(OpKind::Encrypt { plaintext: vec![] }, 3, 4, encrypted()),
        ];
        assert_eq!(check(&ops).len(), 1);
    }

    #[test]
    fn an_enable_overlapping_the_disable_may_come_after_it() {
        let ops = vec![
            op(OpKind::Disable, 1, 6, key(KeyStatus::Disabled)),
            op(OpKind::Enable, 3, 5, key(KeyStatus::Enabled)),
            op(OpKind::Encrypt { plaintext: vec![] }, 7, 8, encrypted()),
        ];
        assert!(check(&ops).is_empty());
    }

    #[test]
    fn an_enable_finished_before_the_disable_began_does_not_count() {
        let ops = vec![
            op(OpKind::Enable, 1, 2, key(KeyStatus::Enabled)),
            op(OpKind::Disable, 3, 4, key(KeyStatus::Disabled)),
            op(OpKind::Encrypt { plaintext: vec![] }, 5, 6, encrypted()),
        ];
        assert_eq!(check(&ops).len(), 1);
    }
}
