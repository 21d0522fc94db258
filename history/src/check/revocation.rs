//! Revoked means refused, linearizably: no call of the grantee principal succeeds unless, at
//! some moment between its invocation and its answer, a grant or a policy statement could
//! have allowed it. A grant allows from (at the earliest) the invocation of its CreateGrant
//! until (at the latest) the acknowledgement of its RevokeGrant; a policy that names the
//! grantee allows from its PutKeyPolicy's invocation until a policy without it is put
//! *after* it (invoked after it was acknowledged) and acknowledged. So a success that began
//! after a revoke or a narrowing policy was acknowledged, with no grant or allowing policy
//! that may have come since, is a violation: some node served the grantee on a state older
//! than a write acknowledged before the call began.
//!
//! The grantee is the principal [`GRANTEE_PRINCIPAL`]; the clients acting as it are named
//! `grantee…` in the history ([`is_grantee`]). The principal that owns the keys makes the
//! grants and puts the policies (`OpKind::Grant`, `Revoke`, `PutPolicy`). A CreateGrant whose
//! outcome stayed unknown may have made a grant nobody can revoke: it allows from then on.

use std::collections::BTreeMap;

use crate::{Op, OpKind, Outcome, Value, Violation};

/// The principal the access workload grants to and revokes from.
pub const GRANTEE_PRINCIPAL: &str = "client/grantee";

/// Whether the history's client acts as [`GRANTEE_PRINCIPAL`].
pub fn is_grantee(client: &str) -> bool {
    client.starts_with("grantee")
}

pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, list) in super::per_key(ops) {
        let definitely_failed = |o: &Op| matches!(o.outcome, Some(Outcome::Fail(..)));
        // Grants to the grantee that may exist: (CreateGrant invoked, grant id if known).
        let grants: Vec<(u64, Option<&str>)> = list
            .iter()
            .filter(|o| matches!(&o.kind, OpKind::Grant { grantee } if grantee == GRANTEE_PRINCIPAL))
            .filter(|o| !definitely_failed(o))
            .map(|o| match o.ok() {
                Some(Value::Grant { grant_id }) => (o.invoke, Some(grant_id.as_str())),
                _ => (o.invoke, None),
            })
            .collect();
        // When each grant was certainly gone: its earliest acknowledged revoke.
        let mut revoked: BTreeMap<&str, u64> = BTreeMap::new();
        for o in &list {
            if let (OpKind::Revoke { grant_id }, Some(_), Some(done)) = (&o.kind, o.ok(), o.complete) {
                let at = revoked.entry(grant_id.as_str()).or_insert(done);
                *at = (*at).min(done);
            }
        }
        let names_grantee = |o: &Op| match &o.kind {
            OpKind::PutPolicy { encrypters, .. } => Some(encrypters.iter().any(|e| e == GRANTEE_PRINCIPAL)),
            _ => None,
        };
        // Policies that allow the grantee: (invoked, acknowledged or u64::MAX).
        let allowing: Vec<(u64, u64)> = list
            .iter()
            .filter(|o| names_grantee(o) == Some(true) && !definitely_failed(o))
            .map(|o| (o.invoke, o.effective_complete()))
            .collect();
        // Acknowledged policies that do not: (invoked, acknowledged).
        let narrowing: Vec<(u64, u64)> = list
            .iter()
            .filter(|o| names_grantee(o) == Some(false) && o.ok().is_some())
            .filter_map(|o| o.complete.map(|c| (o.invoke, c)))
            .collect();
        for o in &list {
            let used = matches!(o.kind, OpKind::Encrypt { .. } | OpKind::Decrypt { .. } | OpKind::DataKey);
            if !is_grantee(&o.client) || !used || o.ok().is_none() {
                continue;
            }
            let Some(done) = o.complete else { continue };
            let granted = grants.iter().any(|&(invoked, id)| {
                invoked < done && id.is_none_or(|id| revoked.get(id).is_none_or(|&gone| gone > o.invoke))
            });
            let allowed = allowing.iter().any(|&(invoked, acked)| {
                invoked < done && !narrowing.iter().any(|&(n_invoked, n_acked)| acked < n_invoked && n_acked < o.invoke)
            });
            if !granted && !allowed {
                out.push(Violation {
                    invariant: "revocation",
                    detail: format!(
                        "key {key}: {} by {} ({GRANTEE_PRINCIPAL}) succeeded (#{}..#{done}) although no grant or \
                         policy could allow it then{}",
                        o.kind.name(),
                        o.client,
                        o.invoke,
                        last_removal(&revoked, &narrowing, o.invoke)
                    ),
                });
            }
        }
    }
    out
}

/// The latest revoke or narrowing policy acknowledged before `invoked`, for the report.
fn last_removal(revoked: &BTreeMap<&str, u64>, narrowing: &[(u64, u64)], invoked: u64) -> String {
    let revoke = revoked.iter().filter(|(_, at)| **at < invoked).max_by_key(|(_, at)| **at);
    let policy = narrowing.iter().filter(|(_, at)| *at < invoked).map(|(_, at)| *at).max();
    match (revoke, policy) {
        (Some((_, at)), Some(p)) if p > *at => format!(": a policy without it was acknowledged at #{p}"),
        (Some((id, at)), _) => format!(": grant {id} was revoked, acknowledged at #{at}"),
        (None, Some(p)) => format!(": a policy without it was acknowledged at #{p}"),
        (None, None) => ": it was never granted".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::{ciphertext, op};

    fn grantee(mut o: Op) -> Op {
        o.client = "grantee-0".into();
        o
    }

    fn grant(invoke: u64, complete: u64, id: &str) -> Op {
        let kind = OpKind::Grant { grantee: GRANTEE_PRINCIPAL.into() };
        op(kind, invoke, complete, Outcome::Ok(Value::Grant { grant_id: id.into() }))
    }

    fn revoke(invoke: u64, complete: u64, id: &str) -> Op {
        op(OpKind::Revoke { grant_id: id.into() }, invoke, complete, Outcome::Ok(Value::Done))
    }

    fn policy(invoke: u64, complete: u64, allow: bool) -> Op {
        let encrypters = if allow { vec![GRANTEE_PRINCIPAL.to_string()] } else { vec![] };
        op(OpKind::PutPolicy { owner: "client/owner".into(), encrypters }, invoke, complete, Outcome::Ok(Value::Done))
    }

    fn encrypt(invoke: u64, complete: u64) -> Op {
        grantee(op(OpKind::Encrypt { plaintext: vec![] }, invoke, complete, ciphertext(1)))
    }

    #[test]
    fn a_use_after_the_revoke_was_acknowledged_is_caught() {
        let ops = vec![grant(1, 2, "g"), encrypt(3, 4), revoke(5, 6, "g"), encrypt(7, 8)];
        let v = check(&ops);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("#7..#8") && v[0].detail.contains("revoked"), "{}", v[0].detail);
    }

    #[test]
    fn a_use_overlapping_the_revoke_may_come_before_it() {
        let ops = vec![grant(1, 2, "g"), revoke(3, 6, "g"), encrypt(4, 7), encrypt(5, 9)];
        assert_eq!(check(&ops), vec![]);
    }

    #[test]
    fn a_use_that_was_never_granted_is_caught_but_not_an_owners() {
        let owner = op(OpKind::Encrypt { plaintext: vec![] }, 1, 2, ciphertext(1));
        let ops = vec![owner, encrypt(3, 4)];
        let v = check(&ops);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("never granted"), "{}", v[0].detail);
    }

    #[test]
    fn a_grant_whose_outcome_is_unknown_may_allow_from_then_on() {
        let mut g = grant(1, 2, "g");
        g.outcome = Some(Outcome::Unknown("timeout".into()));
        let ops = vec![g, encrypt(3, 4), encrypt(90, 91)];
        assert_eq!(check(&ops), vec![]);
        let mut failed = grant(1, 2, "g");
        failed.outcome = Some(Outcome::Fail("PermissionDenied".into(), String::new()));
        assert_eq!(check(&[failed, encrypt(3, 4)]).len(), 1);
    }

    #[test]
    fn a_use_may_linearize_at_a_grant_that_overlaps_it() {
        // The second grant is invoked before the use completes: it may have come first.
        let ops = vec![grant(1, 2, "a"), revoke(3, 4, "a"), grant(6, 9, "b"), encrypt(5, 7)];
        assert_eq!(check(&ops), vec![]);
    }

    #[test]
    fn a_narrowing_policy_binds_uses_that_start_after_it() {
        let ops = vec![policy(1, 2, true), encrypt(3, 4), policy(5, 6, false), encrypt(7, 8)];
        let v = check(&ops);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("policy without it"), "{}", v[0].detail);
        // Concurrent with the narrowing put, or before it was acknowledged: allowed.
        let ops = vec![policy(1, 2, true), policy(3, 6, false), encrypt(4, 7)];
        assert_eq!(check(&ops), vec![]);
        // A narrowing put concurrent with the allowing one may have come first.
        let ops = vec![policy(1, 4, true), policy(2, 3, false), encrypt(7, 8)];
        assert_eq!(check(&ops), vec![]);
    }

    #[test]
    fn failed_uses_and_other_keys_are_not_judged() {
        let mut refused = encrypt(3, 4);
        refused.outcome = Some(Outcome::Fail("PermissionDenied".into(), String::new()));
        let mut elsewhere = grant(1, 2, "g");
        elsewhere.key = "k1".into();
        assert_eq!(check(&[elsewhere, refused]), vec![]);
    }
}
