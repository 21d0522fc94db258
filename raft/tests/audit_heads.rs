//! Audit chain heads as the log applies them: they only move forward, so a node whose audit
//! files were cut or rewritten cannot make the cluster forget what it committed to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use raft::{Command, KeyStore};

fn head(node: u64, seq: u64, hash: &str) -> Command {
    Command::AuditHead { node, seq, hash: hash.repeat(64 / hash.len()), now_ms: 1_000 + seq }
}

#[test]
fn a_chain_head_moves_forward_only() {
    let mut s = KeyStore::default();
    s.apply(&head(1, 10, "a")).unwrap();
    s.apply(&head(2, 3, "b")).unwrap();
    // The same head again is fine (a retried report); a later one replaces it.
    s.apply(&head(1, 10, "a")).unwrap();
    s.apply(&head(1, 12, "c")).unwrap();
    assert_eq!((s.audit_heads()[&1].seq, s.audit_heads()[&2].seq), (12, 3));
    // Back to an older record, or another hash for the same one: refused, nothing changes.
    let before = s.clone();
    assert!(s.apply(&head(1, 11, "d")).is_err());
    assert!(s.apply(&head(1, 12, "e")).is_err());
    assert_eq!(s, before);
    // Not a SHA-256 in hex: refused.
    let bad = Command::AuditHead { node: 3, seq: 1, hash: "zz".into(), now_ms: 1 };
    assert!(s.apply(&bad).is_err());
    assert!(!s.audit_heads().contains_key(&3));
}
