//! Proof that a Jepsen run can fail: nodes built with injected bugs must be caught by the
//! checkers. Runs only with `--features failpoints`, against `keyquorum-failpoints` (the node
//! built with its `failpoints` feature), which scripts/test.sh builds next to `keyquorum`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::time::Duration;

use jepsen::nemesis::Fault;
use jepsen::results::Validity;
use jepsen::run::{run, Options};
use jepsen::workload::Workload;

fn failpoint_build() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("keyquorum-failpoints");
    assert!(
        bin.exists(),
        "{} is missing: scripts/test.sh builds it (cargo build -p cli --bin keyquorum --features failpoints, copied)",
        bin.display()
    );
    bin
}

/// A run of failpoint-built nodes with `failpoints` active, `faults` only, and `workloads`.
fn options(dir: &std::path::Path, failpoints: &str, faults: Vec<Fault>, workloads: Vec<Workload>) -> Options {
    let mut options = Options::quick(dir.join("run"), failpoint_build());
    options.workload.workloads = workloads;
    options.nemesis.faults = faults;
    options.node_env = vec![("FAILPOINTS".into(), failpoints.into())];
    options
}

/// Nodes that answer linearizable reads from local state, skipping the read index: a node
/// cut off with its region's clients keeps answering them while the majority moves on, and
/// the per-key linearizability checker must report the stale reads. A run in which no
/// partition happened to separate a reader from a rotation is repeated (at most three runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_of_a_node_that_skips_the_read_index_are_caught() {
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(
            dir.path(),
            "node::read-without-read-index=return",
            vec![Fault::Partition],
            vec![Workload::Register],
        );
        options.time_limit = Duration::from_secs(40);
        options.nemesis.interval = Duration::from_secs(2);
        options.nemesis.hold = (Duration::from_secs(6), Duration::from_secs(10));
        options.seed = attempt;
        let results = tokio::time::timeout(Duration::from_secs(170), run(options))
            .await
            .expect("the run took over 170 s")
            .unwrap();
        if let Some((n, first)) = results.anomalies.get("linearizable") {
            assert_eq!(results.valid, Validity::Invalid);
            eprintln!("run {attempt}: {n} keys with stale reads, e.g. {}", first[0]);
            return;
        }
        eprintln!("run {attempt}: not caught ({:?}); again", results.anomalies.keys().collect::<Vec<_>>());
    }
    panic!("three runs of a node that skips the read index, and no stale read was caught");
}

/// Nodes whose RocksDB acknowledges Raft's writes before they are durable (no WAL, memtables
/// flushed once a second: `storage::log-writes-unsynced`): kill -9 of every node at once loses
/// up to the last second of acknowledged writes, as a power loss loses what was never
/// fsynced, and the checkers must report it (lost or stale versions, ciphertexts that no
/// longer decrypt, or a cluster that cannot recover). At most three runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_before_they_are_durable_are_lost_on_power_loss_and_caught() {
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(
            dir.path(),
            "storage::log-writes-unsynced=return",
            vec![Fault::KillAll],
            vec![Workload::Register, Workload::Crypto],
        );
        options.time_limit = Duration::from_secs(30);
        options.nemesis.interval = Duration::from_secs(4);
        options.nemesis.hold = (Duration::from_secs(1), Duration::from_secs(2));
        options.final_budget = Duration::from_secs(60);
        options.seed = attempt;
        let results = tokio::time::timeout(Duration::from_secs(600), run(options))
            .await
            .expect("the run took over 600 s")
            .unwrap();
        if results.valid == Validity::Invalid {
            for (checker, (n, first)) in &results.anomalies {
                eprintln!("run {attempt}: {checker}: {n}, e.g. {}", first[0]);
            }
            return;
        }
        eprintln!("run {attempt}: not caught ({:?}); again", results.valid);
    }
    panic!("three runs with writes acknowledged before they were durable, and no loss was caught");
}

/// Nodes that answer a call before its audit record is durable (the record is written a second
/// later: `node::audit-answer-before-durable`): kill -9 of every node loses records of answered
/// calls, and the audit-trail check must name them. At most three runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_lost_by_answering_before_they_are_durable_are_caught() {
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(
            dir.path(),
            "node::audit-answer-before-durable=return",
            vec![Fault::KillAll],
            vec![Workload::Crypto],
        );
        options.time_limit = Duration::from_secs(20);
        options.nemesis.interval = Duration::from_secs(3);
        options.nemesis.hold = (Duration::from_secs(1), Duration::from_secs(2));
        options.final_budget = Duration::from_secs(60);
        options.seed = attempt;
        let results = tokio::time::timeout(Duration::from_secs(300), run(options))
            .await
            .expect("the run took over 300 s")
            .unwrap();
        if let Some((n, first)) = results.anomalies.get("audit-trail") {
            assert_eq!(results.valid, Validity::Invalid);
            eprintln!("run {attempt}: audit-trail: {n}, e.g. {}", first[0]);
            return;
        }
        eprintln!("run {attempt}: not caught ({:?}); again", results.anomalies.keys().collect::<Vec<_>>());
    }
    panic!("three runs of nodes that answer before their audit records are durable, and no lost record was caught");
}

/// Nodes that serve a call without authorizing its principal (`node::skip-authorization`):
/// the grantee's Encrypts go through while it holds no grant and no policy statement, and
/// the revocation checker must name them. No faults are needed; one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_served_without_authorization_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path(), "node::skip-authorization=return", vec![], vec![Workload::Access]);
    options.time_limit = Duration::from_secs(15);
    let results =
        tokio::time::timeout(Duration::from_secs(170), run(options)).await.expect("the run took over 170 s").unwrap();
    let (n, first) = results.anomalies.get("revocation").expect("no unauthorized call was caught");
    assert_eq!(results.valid, Validity::Invalid);
    eprintln!("{n} unauthorized calls served, e.g. {}", first[0]);
}
