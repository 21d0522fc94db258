//! Resharing on real processes: the root key's custody follows the voters (a node added, a node
//! removed), `cluster rotate-root` works under load without failing a client call, every old
//! ciphertext keeps decrypting (a disabled key's material moves too), and a removed node's
//! copy of its disk unwraps nothing: the current holders have erased every older round's
//! identity key, and the removed node is refused shares.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::pb;
use common::*;
use tonic::Code;

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

/// Waits until every node in `voters` reports root epoch `epoch` in force, holds a share of
/// it, is unsealed and keeps the identity key of one round only.
async fn custody_settles(cluster: &Cluster, voters: &[u64], epoch: u64) {
    for id in voters {
        eventually(&format!("node {id} holds a share of root epoch {epoch} and nothing older"), || async move {
            let s = cluster.local_status(*id).await?;
            if s.root_epoch == epoch
                && s.next_root_epoch == 0
                && s.holds_share
                && !s.sealed
                && s.identity_rounds.len() == 1
            {
                Ok(())
            } else {
                Err(tonic::Status::unavailable(format!(
                    "root {} next {} share {} sealed {} rounds {:?}",
                    s.root_epoch, s.next_root_epoch, s.holds_share, s.sealed, s.identity_rounds
                )))
            }
        })
        .await;
    }
}

async fn set_enabled(c: &client::Client, alias: &str, enabled: bool) {
    let req = pb::KeyRequest { key: format!("alias/{alias}"), ..Default::default() };
    if enabled {
        c.enable_key(req).await.unwrap();
    } else {
        c.disable_key(req).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custody_follows_the_voters_and_rotates_under_load() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        cluster.init().await;
        let c = cluster.client();
        create_key(&c, "kept", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let ct = encrypt(&c, "alias/kept", b"before any resharing", &[]).await.unwrap().ciphertext;
        create_key(&c, "off", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let ct_off = encrypt(&c, "alias/off", b"disabled meanwhile", &[]).await.unwrap().ciphertext;
        set_enabled(&c, "off", false).await;
        custody_settles(&cluster, &[1, 2, 3], 1).await;

        // A voter joins: custody moves to the four of them.
        cluster.add(4).await;
        eventually("node 4 answers", || cluster.local_status(4)).await;
        let member = pb::Member { id: 4, addr: cluster.addrs[&4].clone(), region: region(4), zone: String::new() };
        let req = pb::AddNodeRequest { member: Some(member) };
        cluster.admin().add_node(req).await.unwrap();
        custody_settles(&cluster, &[1, 2, 3, 4], 2).await;
        let c = cluster.client();
        assert_eq!(decrypt(&c, &ct, &[]).await.unwrap().plaintext, b"before any resharing");

        // An operator rotates the root key while clients keep working.
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let load = {
            let (c, stop, ok, failed) = (cluster.client(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let plaintext = format!("under load {i}");
                    let round_trip = async {
                        if i.is_multiple_of(5) {
                            create_key(&c, &format!("load-{i}"), pb::KeySpec::Aes256GcmSiv).await?;
                        }
                        let sealed = encrypt(&c, "alias/kept", plaintext.as_bytes(), &[]).await?;
                        let opened = decrypt(&c, &sealed.ciphertext, &[]).await?;
                        assert_eq!(opened.plaintext, plaintext.as_bytes());
                        Ok::<_, tonic::Status>(())
                    };
                    match round_trip.await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("client call failed during the rotation: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        };
        let rotated = cluster.admin().rotate_root(pb::RotateRootRequest {}).await.unwrap();
        assert_eq!((rotated.root_epoch, rotated.holders.clone(), rotated.shares_needed), (3, vec![1, 2, 3, 4], 3));
        custody_settles(&cluster, &[1, 2, 3, 4], 3).await;
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        eprintln!("client round trips during the rotation: {} ok", ok.load(Ordering::Relaxed));
        assert!(ok.load(Ordering::Relaxed) > 0, "the load made no calls");
        assert_eq!(failed.load(Ordering::Relaxed), 0, "client calls failed during the root rotation");

        // A voter leaves: custody moves to the remaining three.
        cluster.admin().remove_node(pb::RemoveNodeRequest { id: 1 }).await.unwrap();
        custody_settles(&cluster, &[2, 3, 4], 4).await;
        let c = cluster.client_for(&[2, 3, 4]);
        assert_eq!(decrypt(&c, &ct, &[]).await.unwrap().plaintext, b"before any resharing");
        set_enabled(&c, "off", true).await;
        assert_eq!(decrypt(&c, &ct_off, &[]).await.unwrap().plaintext, b"disabled meanwhile");
        for id in [2, 3, 4] {
            let s = cluster.local_status(id).await.unwrap();
            assert!(s.log_key_versions.len() >= 4, "a log key version per root: {:?}", s.log_key_versions);
        }

        // The removed node, restarted from its disk as whoever copied it would: it is no
        // member, so nobody gives it shares, and it stays sealed; the shares its identity keys
        // open are of roots every current holder has erased its own share of.
        cluster.kill(1);
        cluster.spawn(1);
        let one = eventually("node 1 answers", || cluster.local_status(1)).await;
        assert!(one.sealed, "{one:?}");
        assert!(one.root_epoch < 4, "{one:?}");
        for id in [2, 3, 4] {
            let current = cluster.local_status(id).await.unwrap().identity_rounds;
            assert!(
                one.identity_rounds.iter().all(|r| !current.contains(r)),
                "node 1's rounds {:?} overlap node {id}'s {current:?}",
                one.identity_rounds
            );
        }
        let status = cluster.admin_for(&[2, 3, 4]).status(pb::StatusRequest {}).await.unwrap();
        assert_eq!(status.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![2, 3, 4]);
        let removed = cluster.client_for(&[1]);
        let refused = removed.list_keys(pb::ListKeysRequest::default()).await;
        assert_eq!(refused.unwrap_err().code(), Code::Unavailable);
    })
    .await;
}
