//! A node's concurrency cap on real processes: node 1 configured to serve one KMS call at a
//! time, with the other two members stopped (SIGSTOP: their connections hang rather than
//! refuse), holds that one call on its linearizable read; the calls that arrive meanwhile are
//! refused at once with `RESOURCE_EXHAUSTED` and a retry-after hint, before any work; once the
//! members resume, node 1 serves again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use client::{pb, ClientOptions};
use common::*;

/// A Kms client straight to node `id`, with no client library in between (which would wait
/// out a retry-after hint and try again).
fn direct(cluster: &Cluster, id: u64) -> pb::kms_client::KmsClient<tonic::transport::Channel> {
    let channel = client::endpoint(&cluster.addrs[&id], Some(&cluster.credentials("client")))
        .unwrap()
        .timeout(Duration::from_secs(60))
        .connect_lazy();
    pb::kms_client::KmsClient::new(channel)
}

fn request(key: &str, i: u32) -> pb::EncryptRequest {
    pb::EncryptRequest { key: key.into(), plaintext: format!("capped {i}").into_bytes(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_concurrency_cap_refuses_with_a_retry_after_hint() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3).await;
        cluster.init().await;
        let key = create_key(&cluster.client(), "capped", pb::KeySpec::Aes256GcmSiv).await.unwrap().key_id;

        cluster.configure(1, "limits = { max_concurrent_calls = 1 }");
        cluster.kill(1);
        cluster.spawn(1);
        let one = cluster.client_with(&[1], ClientOptions { discover: false, ..Default::default() });
        eventually("node 1 serves again", || encrypt(&one, &key, b"warm", &[])).await;

        // The others stop: once node 1's read lease (if it leads) has run out, its
        // linearizable reads wait on them (for a quorum's heartbeat acks, or for the stopped
        // leader's read index) and hold node 1's one permit until the round times out. Rounds
        // of eight calls at once, until one sees the cap refuse: every answer is served,
        // refused for the cap with the hint, or unavailable (the round timed out); never
        // anything else.
        cluster.pause(2, true).unwrap();
        cluster.pause(3, true).unwrap();
        let node1 = direct(&cluster, 1);
        let mut refusals = 0;
        for round in 0.. {
            assert!(round < 20, "twenty rounds of eight calls, and the cap of one never refused a call");
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..8 {
                let (mut node1, key) = (node1.clone(), key.clone());
                calls.spawn(async move { node1.encrypt(request(&key, i)).await.map(drop) });
            }
            while let Some(answer) = calls.join_next().await {
                let Err(status) = answer.unwrap() else { continue };
                match status.code() {
                    tonic::Code::ResourceExhausted => {
                        let retry_after = proto::retry_after(&status).expect("a retry-after hint");
                        assert!(retry_after > Duration::ZERO, "{status:?}");
                        assert!(
                            status.message().contains("node 1 is serving its limit of 1 calls"),
                            "{}",
                            status.message()
                        );
                        refusals += 1;
                    }
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {}
                    _ => panic!("a call to a node without its quorum: {status:?}"),
                }
            }
            if refusals > 0 {
                break;
            }
        }

        cluster.pause(2, false).unwrap();
        cluster.pause(3, false).unwrap();
        eventually("node 1 serves again once its permit is free", || encrypt(&one, &key, b"after", &[])).await;
    })
    .await
    .expect("test exceeded 240 s");
}
