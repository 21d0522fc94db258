//! The audit trail on real processes: every call leaves a record on the node that handled it,
//! `keyquorum audit query` finds a caller's calls by request id, and `keyquorum audit verify`
//! passes on an untampered cluster and names the first bad record of a node whose audit file
//! was edited, had a record deleted, had two records swapped, or was truncated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use client::pb;
use common::*;

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

/// `keyquorum audit ARGS` as the operator; (success, stdout, stderr).
fn audit_cli(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let (ca, cert, key) = cluster.admin_files();
    let out = Command::new(env!("CARGO_BIN_EXE_keyquorum"))
        .arg("audit")
        .args(args)
        .arg("--endpoints")
        .arg(cluster.addrs.values().cloned().collect::<Vec<_>>().join(","))
        .arg("--tls-ca")
        .arg(ca)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Node `id`'s one audit segment file (the test writes far less than a segment).
fn segment(cluster: &Cluster, id: u64) -> PathBuf {
    let dir = cluster.data_dir(id).join("audit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

/// The records of a segment (the open one is zero-filled past them).
fn read_lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().trim_end_matches('\0').lines().map(str::to_string).collect()
}

fn write_lines(path: &PathBuf, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// The replicated chain head of every node once each covers at least `seqs[node]`.
async fn heads_cover(cluster: &Cluster, seqs: &[(u64, u64)]) -> Vec<pb::AuditHead> {
    let admin = cluster.admin();
    eventually("every node's chain head is replicated", || async {
        let heads = admin.audit_heads(pb::AuditHeadsRequest {}).await.map_err(|e| e.to_string())?.heads;
        for (node, seq) in seqs {
            if !heads.iter().any(|h| h.node == *node && h.seq >= *seq) {
                return Err(format!("node {node}'s head is not yet at {seq}: {heads:?}"));
            }
        }
        Ok(heads)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_untampered_and_names_every_edit_deletion_reorder_and_truncation() {
    bounded(async {
        let mut cluster = Cluster::start(4).await;
        for id in 1..=4 {
            cluster.configure(id, "audit = { head_interval_ms = 200 }");
            cluster.kill(id);
            cluster.spawn(id);
        }
        cluster.init().await;
        create_key(&cluster.client(), "audited", pb::KeySpec::Aes256GcmSiv).await.unwrap();

        // Ten calls at each node, each under its own request id.
        let mut last = Vec::new();
        for id in 1..=4u64 {
            let c = cluster.client_for(&[id]);
            for i in 0..10 {
                let call = encrypt(&c, "alias/audited", b"p", &[("tenant", "t1")]);
                client::with_request_id(format!("n{id}-call{i}"), call).await.unwrap();
            }
            let log = cluster.admin_for(&[id]).audit_log().await.unwrap();
            assert_eq!(log.node, id);
            last.push((id, log.last_seq));
        }
        let heads = heads_cover(&cluster, &last).await;

        // Untampered: every chain checks out against its replicated head.
        let (ok, out, err) = audit_cli(&cluster, &["verify"]);
        assert!(ok, "verify failed on an untampered cluster:\n{out}\n{err}");
        for id in 1..=4 {
            assert!(out.contains(&format!("node {id}: ok")), "{out}");
        }
        assert!(out.contains("matches"), "{out}");

        // Query finds each call, with its principal and encryption context, and never a plaintext.
        let (ok, out, err) = audit_cli(&cluster, &["query", "--principal", "client/dev", "--output", "json"]);
        assert!(ok, "{err}");
        let records: Vec<audit::Record> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for id in 1..=4u64 {
            for i in 0..10 {
                let rid = format!("n{id}-call{i}");
                let r = records.iter().find(|r| r.request_id == rid).unwrap_or_else(|| panic!("no record of {rid}"));
                assert_eq!((r.node, r.operation.as_str(), r.code.as_str()), (id, "Encrypt", "OK"), "{r:?}");
                assert_eq!(r.context.get("tenant").map(String::as_str), Some("t1"), "{r:?}");
                assert!(r.key_id.is_some() && r.version == Some(1), "{r:?}");
            }
        }
        assert!(!out.contains("\"plaintext\""), "a record holds a plaintext: {out}");
        // Aliases are confidential at rest: records name the key by id, and a query by alias
        // looks it up.
        assert!(!out.contains("alias/audited"), "a record holds an alias: {out}");
        let (ok, by_alias, err) = audit_cli(&cluster, &["query", "--key", "alias/audited", "--output", "json"]);
        assert!(ok, "{err}");
        let encrypts = by_alias.lines().filter(|l| l.contains("\"operation\":\"Encrypt\"")).count();
        assert_eq!(encrypts, 40, "{by_alias}");
        let (ok, out, _) = audit_cli(&cluster, &["tail", "-n", "3", "--output", "json"]);
        assert!(ok && out.lines().count() == 3, "{out}");

        // Every node stopped (kill -9), then a record inside its replicated head tampered with,
        // one way per node, as someone with the disks would; then every node started again.
        for id in 1..=4 {
            cluster.kill(id);
        }
        let target = |id: u64| heads.iter().find(|h| h.node == id).unwrap().seq as usize / 2 + 1;
        let tamper = |id: u64, change: &dyn Fn(&mut Vec<String>, usize)| {
            let path = segment(&cluster, id);
            let mut lines = read_lines(&path);
            change(&mut lines, target(id) - 1);
            write_lines(&path, &lines);
        };
        // Node 1: one field of one record edited.
        tamper(1, &|lines, i| {
            assert!(lines[i].contains("\"principal\":\""), "{}", lines[i]);
            lines[i] = lines[i].replacen("\"principal\":\"", "\"principal\":\"x", 1);
        });
        // Node 2: one record deleted.
        tamper(2, &|lines, i| drop(lines.remove(i)));
        // Node 3: two records swapped.
        tamper(3, &|lines, i| lines.swap(i, i + 1));
        // Node 4: its last records cut, the replicated head among them (it continues the
        // shortened chain when it starts).
        tamper(4, &|lines, i| lines.truncate(i));
        for id in 1..=4 {
            cluster.spawn(id);
        }
        for id in 1..=4 {
            eventually("the node is back", || cluster.local_status(id)).await;
        }
        let admin = cluster.admin();
        eventually("the cluster answers", || admin.audit_heads(pb::AuditHeadsRequest {})).await;
        let (k1, k2, k3) = (target(1), target(2), target(3));

        let (ok, out, err) = audit_cli(&cluster, &["verify"]);
        assert!(!ok, "verify passed a tampered cluster:\n{out}");
        assert!(err.contains("4 of 4 audit chains failed"), "{err}");
        let line_of = |id: u64| out.lines().find(|l| l.starts_with(&format!("node {id}:"))).unwrap().to_string();
        let (l1, l2, l3, l4) = (line_of(1), line_of(2), line_of(3), line_of(4));
        assert!(l1.contains(&format!("BROKEN at record {k1} (")) && l1.contains(&format!("line {k1})")), "{l1}");
        assert!(l1.contains("edited"), "{l1}");
        assert!(l2.contains(&format!("BROKEN at record {k2} (")) && l2.contains("missing"), "{l2}");
        assert!(l3.contains(&format!("BROKEN at record {k3} (")) && l3.contains("reordered"), "{l3}");
        assert!(l4.contains("BROKEN at record"), "{l4}");
        assert!(l4.contains("replicated") || l4.contains("truncated"), "{l4}");
    })
    .await;
}
