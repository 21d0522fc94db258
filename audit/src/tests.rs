#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn record(i: u64) -> Record {
    Record {
        seq: 0,
        prev: String::new(),
        time_ms: 1_000 + i,
        node: 1,
        service: "kms".into(),
        operation: "Encrypt".into(),
        principal: Some("client/app".into()),
        forwarded_by: None,
        key: Some("alias/k".into()),
        key_id: Some("00000000-0000-0000-0000-000000000001".into()),
        version: Some(1),
        context: [("tenant".to_string(), format!("t{i}"))].into(),
        code: "OK".into(),
        outcome: "ok".into(),
        request_id: format!("r{i}"),
        peer: Some("127.0.0.1:5000".into()),
        retained_from: None,
        hash: String::new(),
    }
}

/// `n` chained records as lines.
fn chain(n: u64) -> Vec<Line> {
    let (mut seq, mut hash) = (0, GENESIS.to_string());
    (1..=n)
        .map(|i| {
            let mut r = record(i);
            r.seal(seq, &hash);
            (seq, hash) = (r.seq, r.hash.clone());
            Line { place: Place { file: "audit-1.jsonl".into(), line: i as usize }, text: r.to_line() }
        })
        .collect()
}

fn head_of(lines: &[Line], seq: u64) -> Head {
    let r: Record = serde_json::from_str(&lines[seq as usize - 1].text).unwrap();
    Head { seq, hash: r.hash }
}

#[test]
fn an_untampered_chain_verifies_against_its_head() {
    let lines = chain(10);
    let v = verify(1, &lines, Some(&head_of(&lines, 8))).unwrap();
    assert_eq!((v.first, v.last, v.records, v.head_matched), (Some(1), Some(10), 10, true));
    assert!(verify(1, &[], None).is_ok());
}

#[test]
fn every_single_field_edit_is_caught() {
    let lines = chain(5);
    let original: serde_json::Value = serde_json::from_str(&lines[2].text).unwrap();
    let fields: Vec<String> = original.as_object().unwrap().keys().cloned().collect();
    for field in fields {
        let mut edited = original.clone();
        let v = &mut edited[&field];
        *v = match v {
            serde_json::Value::String(s) => serde_json::Value::String(format!("{s}x")),
            serde_json::Value::Number(n) => serde_json::json!(n.as_u64().unwrap() + 1),
            serde_json::Value::Object(_) => serde_json::json!({"tenant": "other"}),
            other => panic!("unexpected field type {other:?}"),
        };
        let mut tampered = lines.clone();
        tampered[2].text = edited.to_string();
        let broken = verify(1, &tampered, None).expect_err(&field);
        assert!(broken.seq == 3 || broken.seq == 4, "{field}: {broken}");
    }
}

#[test]
fn deletion_reorder_insertion_and_truncation_are_caught() {
    let lines = chain(6);
    let head = head_of(&lines, 6);
    // A record deleted in the middle.
    let mut deleted = lines.clone();
    deleted.remove(2);
    let b = verify(1, &deleted, Some(&head)).unwrap_err();
    assert!(b.seq == 3 && b.why.contains("record 3 is missing"), "{b}");
    // Two records swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let b = verify(1, &swapped, Some(&head)).unwrap_err();
    assert!(b.why.contains("reordered"), "{b}");
    assert_eq!(b.seq, 2, "{b}");
    // A record repeated.
    let mut repeated = lines.clone();
    repeated.insert(3, lines[2].clone());
    assert!(verify(1, &repeated, Some(&head)).unwrap_err().why.contains("reordered or repeated"));
    // The first record deleted.
    let b = verify(1, &lines[1..], Some(&head)).unwrap_err();
    assert!(b.why.contains("should start at 1"), "{b}");
    // The tail cut off before the replicated head.
    let b = verify(1, &lines[..4], Some(&head)).unwrap_err();
    assert!(b.seq == 6 && b.why.contains("truncated"), "{b}");
    // A whole chain rewritten consistently from record 3 on: only the head tells.
    let mut rewritten = lines[..2].to_vec();
    let r2: Record = serde_json::from_str(&lines[1].text).unwrap();
    let (mut seq, mut hash) = (r2.seq, r2.hash);
    for i in 3..=6 {
        let mut r = record(i);
        r.outcome = "refused: AccessDenied".into();
        r.seal(seq, &hash);
        (seq, hash) = (r.seq, r.hash.clone());
        rewritten.push(Line { place: Place { file: "f".into(), line: i as usize }, text: r.to_line() });
    }
    assert!(verify(1, &rewritten, None).is_ok());
    let b = verify(1, &rewritten, Some(&head)).unwrap_err();
    assert!(b.seq == 6 && b.why.contains("rewritten"), "{b}");
    // Another node's record, or a line that is no record.
    assert!(verify(2, &lines, None).unwrap_err().why.contains("names node 1"));
    let mut garbage = lines.clone();
    garbage[4].text = "{\"seq\": 5".into();
    assert!(verify(1, &garbage, None).unwrap_err().why.contains("not a record"));
    let mut extra = lines.clone();
    extra[4].text = extra[4].text.replacen('{', "{\"note\":\"hi\",", 1);
    assert!(verify(1, &extra, None).unwrap_err().why.contains("not a record"));
}

#[test]
fn a_retention_record_allows_the_chain_to_start_later_and_only_there() {
    let mut lines = chain(6);
    let last: Record = serde_json::from_str(&lines[5].text).unwrap();
    let mut retention = record(7);
    retention.service = "audit".into();
    retention.operation = RETENTION.into();
    retention.retained_from = Some(4);
    retention.seal(last.seq, &last.hash);
    lines.push(Line { place: Place { file: "f".into(), line: 7 }, text: retention.to_line() });
    let head = head_of(&lines, 2);
    let kept = verify(1, &lines[3..], Some(&head)).unwrap();
    assert_eq!((kept.first, kept.last, kept.head_matched), (Some(4), Some(7), false));
    // Deleting one more than the retention record says is caught.
    assert!(verify(1, &lines[4..], None).unwrap_err().why.contains("should start at 4"));
}

#[test]
fn sealing_to_a_line_in_one_serialization_matches_seal_then_to_line() {
    // With and without the optional fields, and with strings that JSON must escape.
    let mut bare = record(2);
    (bare.principal, bare.key, bare.key_id, bare.version, bare.peer) = (None, None, None, None, None);
    bare.context.clear();
    let mut escaped = record(3);
    escaped.context.insert("quote\"and\\slash".into(), "line\nbreak}".into());
    for r in [record(1), bare, escaped] {
        let (mut one, mut two) = (r.clone(), r);
        let line = one.seal_to_line(41, GENESIS);
        two.seal(41, GENESIS);
        assert_eq!((line, &one), (two.to_line(), &two));
        assert_eq!(one.hash, one.compute_hash());
    }
}
