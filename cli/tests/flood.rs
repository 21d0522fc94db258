//! A client flood at the leader does not cost it leadership: 1,024 callers over 16 connections
//! keep both cores busy with Encrypts at the leader for several seconds (production raft
//! timings), and afterwards every node follows the same leader in the same term.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{pb, ClientOptions};
use common::*;

/// Connections, callers on each, and calls per caller: about 150,000 Encrypts, several seconds of
/// both cores busy: many election timeouts.
const CONNECTIONS: usize = 16;
const CALLERS: usize = 64;
const CALLS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flood_at_the_leader_does_not_cost_it_leadership() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let cluster = Cluster::start_with_default_raft(3).await;
        cluster.init().await;
        let key = create_key(&cluster.client(), "flood", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let leader = cluster.leader().await;
        let before = cluster.local_status(leader).await.unwrap();

        let served = Arc::new(AtomicU64::new(0));
        let mut callers = Vec::new();
        for _ in 0..CONNECTIONS {
            let client =
                Arc::new(cluster.client_with(&[leader], ClientOptions { discover: false, ..Default::default() }));
            for _ in 0..CALLERS {
                let (client, served, key) = (client.clone(), served.clone(), key.key_id.clone());
                callers.push(tokio::spawn(async move {
                    for i in 0..CALLS {
                        let request = pb::EncryptRequest {
                            key: key.clone(),
                            plaintext: format!("flood {i}").into_bytes(),
                            ..Default::default()
                        };
                        if client.encrypt(request).await.is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let served = served.load(Ordering::Relaxed);
        assert_eq!(served, (CONNECTIONS * CALLERS * CALLS) as u64, "every call of the flood was served");

        // Every node still follows the same leader in the same term.
        for id in 1..=3 {
            let s = cluster.local_status(id).await.unwrap();
            assert_eq!(
                (s.leader_id, s.term),
                (leader, before.term),
                "node {id} after {served} calls flooded node {leader}: {s:?}"
            );
        }
    })
    .await
    .expect("test exceeded 300 s");
}
