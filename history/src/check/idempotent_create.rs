//! Idempotent creates: a CreateKey retried with its token after an unknown outcome makes at
//! most one key. Each `CreateByToken` op's key is its token, and the token is the new key's
//! description; after healing, every node lists the keys (`Listing`). Per token:
//! - every acknowledged attempt returned the same key;
//! - every node lists exactly one key with that description if any attempt was acknowledged
//!   (no loss), and at most one otherwise (no duplicate), never one if every attempt was
//!   definitely refused;
//! - that key is the acknowledged one.

use std::collections::BTreeMap;

use crate::{Op, OpKind, Outcome, Value, Violation};

/// What one node listed after healing: `(key id, description)` of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub node: u64,
    pub keys: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Token<'a> {
    acked: Option<&'a str>,
    possible: bool,
}

fn violation(detail: String) -> Violation {
    Violation { invariant: "idempotent-create", detail }
}

pub fn check(ops: &[Op], listings: &[Listing]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut tokens: BTreeMap<&str, Token<'_>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind == OpKind::CreateByToken) {
        let t = tokens.entry(op.key.as_str()).or_default();
        match &op.outcome {
            Some(Outcome::Ok(Value::Key(k))) => {
                t.possible = true;
                match t.acked {
                    Some(first) if first != k.key_id => out.push(violation(format!(
                        "token {}: two acknowledged attempts returned keys {first} and {}",
                        op.key, k.key_id
                    ))),
                    _ => t.acked = Some(k.key_id.as_str()),
                }
            }
            Some(Outcome::Fail(..)) => {}
            _ => t.possible = true,
        }
    }
    for listing in listings {
        let mut found: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, description) in &listing.keys {
            if tokens.contains_key(description.as_str()) {
                found.entry(description.as_str()).or_default().push(id.as_str());
            }
        }
        for (token, t) in &tokens {
            let ids = found.get(token).map(Vec::as_slice).unwrap_or_default();
            let n = listing.node;
            match (ids, t.acked) {
                ([], Some(id)) => {
                    out.push(violation(format!("token {token}: n{n} lists no key, but {id} was acknowledged")))
                }
                ([one], Some(id)) if *one != id => {
                    out.push(violation(format!("token {token}: n{n} lists {one}, but {id} was acknowledged")))
                }
                ([_], None) if !t.possible => {
                    out.push(violation(format!("token {token}: n{n} lists a key, but every attempt was refused")))
                }
                ([], _) | ([_], _) => {}
                (many, _) => out.push(violation(format!("token {token}: n{n} lists {} keys: {many:?}", many.len()))),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::op;
    use crate::{KeyStatus, KeyView};

    fn created(id: &str) -> Outcome {
        Outcome::Ok(Value::Key(KeyView { key_id: id.into(), status: KeyStatus::Enabled, primary: 1 }))
    }

    fn attempt(token: &str, outcome: Outcome) -> Op {
        let mut o = op(OpKind::CreateByToken, 1, 2, outcome);
        o.key = token.into();
        o
    }

    fn listing(node: u64, keys: &[(&str, &str)]) -> Listing {
        Listing { node, keys: keys.iter().map(|(i, d)| (i.to_string(), d.to_string())).collect() }
    }

    #[test]
    fn a_retried_create_that_made_one_key_passes() {
        let ops = vec![attempt("t1", Outcome::Unknown("timeout".into())), attempt("t1", created("a"))];
        assert!(check(&ops, &[listing(1, &[("a", "t1"), ("x", "other")])]).is_empty());
    }

    #[test]
    fn an_unknown_create_may_or_may_not_exist() {
        let ops = vec![attempt("t1", Outcome::Unknown("timeout".into()))];
        assert!(check(&ops, &[listing(1, &[])]).is_empty());
        assert!(check(&ops, &[listing(1, &[("a", "t1")])]).is_empty());
    }

    #[test]
    fn a_duplicate_a_loss_and_a_different_key_are_caught() {
        let ops = vec![attempt("t1", Outcome::Unknown("timeout".into())), attempt("t1", created("a"))];
        assert_eq!(check(&ops, &[listing(1, &[("a", "t1"), ("b", "t1")])]).len(), 1);
        assert_eq!(check(&ops, &[listing(1, &[])]).len(), 1);
        assert_eq!(check(&ops, &[listing(1, &[("b", "t1")])]).len(), 1);
    }

    #[test]
    fn a_refused_create_must_leave_no_key_and_acks_must_agree() {
        let refused = vec![attempt("t1", Outcome::Fail("InvalidArgument".into(), String::new()))];
        assert_eq!(check(&refused, &[listing(1, &[("a", "t1")])]).len(), 1);
        let split = vec![attempt("t1", created("a")), attempt("t1", created("b"))];
        assert!(!check(&split, &[]).is_empty());
    }
}
