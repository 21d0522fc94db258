//! The local cluster of real processes that `keyquorum dev` runs and the Jepsen harness drives:
//! kill -9 and restart, SIGSTOP and SIGCONT, a region cut off through the relay, and every
//! process gone once the cluster is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use client::{pb, Client};
use testbed::{region_name, LocalCluster, Spec, WanOptions};

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

async fn rotate(c: &Client, key: &str, token: &str) -> Result<u32, tonic::Status> {
    let req = pb::RotateKeyRequest { key: key.into(), idempotency_token: token.into() };
    c.rotate_key(req).await.map(|r| r.key.unwrap().primary_version).map_err(Into::into)
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks that the process exists (a zombie does not: the cluster reaps them).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_survives_kill_pause_and_partition_and_stops_on_drop() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            regions: 3,
            wan: WanOptions { force_relay: true, ..Default::default() },
            ..Spec::new(dir.path(), 5, env!("CARGO_BIN_EXE_keyquorum"))
        };
        let mut cluster = LocalCluster::start(spec).await.unwrap();
        let regions: Vec<&str> = cluster.members.iter().map(|m| m.region.as_str()).collect();
        assert_eq!(regions, ["region-a", "region-b", "region-c", "region-a", "region-b"]);
        cluster.wait_up(Duration::from_secs(60)).await.unwrap();
        assert!(cluster.init_if_needed().await.unwrap().is_some(), "a fresh cluster is initialised");
        assert!(cluster.init_if_needed().await.unwrap().is_none(), "and only once");
        cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
        let c = cluster.client().unwrap();
        let req = pb::CreateKeyRequest { idempotency_token: "local".into(), ..Default::default() };
        let key = c.create_key(req).await.unwrap().key.unwrap().key_id;

        // kill -9 of two nodes: three of five remain, and serve.
        let pids: Vec<u32> = (1..=5).map(|id| cluster.pid(id).unwrap()).collect();
        cluster.kill(1).unwrap();
        cluster.kill(2).unwrap();
        assert!(!alive(pids[0]) && !alive(pids[1]));
        assert_eq!(rotate(&c, &key, "after-kill").await.unwrap(), 2);
        cluster.restart(1).unwrap();
        cluster.restart(2).unwrap();
        cluster.wait_up(Duration::from_secs(60)).await.unwrap();

        // A paused node is a slow one, not a dead one: the others go on, and it resumes.
        cluster.pause(3, true).unwrap();
        assert_eq!(rotate(&c, &key, "while-paused").await.unwrap(), 3);
        cluster.pause(3, false).unwrap();

        // Region c (node 3) cut off through the relay: regions a and b hold four of five.
        cluster.relay().isolate(region_name(2));
        assert_eq!(rotate(&c, &key, "while-cut-off").await.unwrap(), 4);
        cluster.relay().heal();
        assert!(cluster.reap().is_empty(), "no node died on its own");

        let pids: Vec<u32> = (1..=5).map(|id| cluster.pid(id).unwrap()).collect();
        cluster.pause(4, true).unwrap(); // stopped nodes are stopped too
        drop(cluster);
        for pid in pids {
            assert!(!alive(pid), "process {pid} outlived its cluster");
        }
    })
    .await;
}
