//! A short Jepsen run in the test suite: five real nodes over three regions, every workload
//! and every fault for 60 s, then the checkers. Must be valid. (The checkers' ability to fail
//! is proven on hand-made histories in `history`, and on injected bugs in `failpoints.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use jepsen::nemesis::Fault;
use jepsen::results::Validity;
use jepsen::run::{run, Options};

/// `keyquorum`, built by `cargo test --workspace` next to this test's directory.
fn keyquorum() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("keyquorum");
    assert!(bin.exists(), "{} is missing: run the suite with scripts/test.sh (cargo test --workspace)", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_with_every_fault_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::quick(dir.path().join("run"), keyquorum());
    let results =
        tokio::time::timeout(Duration::from_secs(170), run(options)).await.expect("the run took over 170 s").unwrap();
    let run = dir.path().join("run");
    for file in ["history.jsonl", "results.json", "cluster/node-1/node.log"] {
        assert!(run.join(file).exists(), "{file} was not written");
    }
    assert_eq!(results.valid, Validity::Valid, "anomalies: {:#?}", results.anomalies);
    let ok = |f: &str| results.counts.get(f).and_then(|by| by.get("ok")).copied().unwrap_or(0);
    for f in ["create", "rotate", "describe", "encrypt", "decrypt", "create-by-token"] {
        assert!(ok(f) > 0, "no {f} succeeded: {:?}", results.counts);
    }
    for fault in
        [Fault::Kill, Fault::KillAll, Fault::Pause, Fault::Partition, Fault::Clock, Fault::Member, Fault::Transfer]
    {
        assert!(
            results.faults.contains_key(fault.name()),
            "{} was never injected: {:?}",
            fault.name(),
            results.nemesis
        );
    }
}
