//! Multi-process tests: real `keyquorum server` processes, real RocksDB, loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use client::pb;
use common::*;
use tonic::Code;

/// Every test runs under this bound, so a hang fails instead of stalling CI.
async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_survives_leader_loss_catches_up_by_snapshot_and_a_full_restart() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        cluster.init().await;
        let c = cluster.client();

        // Keys of both specs; encrypt, data key, sign.
        let aes = create_key(&c, "app", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let ecc = create_key(&c, "signer", pb::KeySpec::EccNistP384).await.unwrap();
        assert_eq!(
            create_key(&c, "app", pb::KeySpec::Aes256GcmSiv).await.unwrap().key_id,
            aes.key_id,
            "a retried create with its token returns the same key"
        );
        let ct1 = encrypt(&c, "alias/app", b"first secret", &[("tenant", "t1")]).await.unwrap();
        assert_eq!(decrypt(&c, &ct1.ciphertext, &[("tenant", "t1")]).await.unwrap().plaintext, b"first secret");
        let req = pb::GenerateDataKeyRequest { key: "alias/app".into(), ..Default::default() };
        let dk = c.generate_data_key(req).await.unwrap();
        assert_eq!(dk.plaintext.len(), 32);
        assert_eq!(decrypt(&c, &dk.ciphertext, &[]).await.unwrap().plaintext, dk.plaintext);
        let sig = sign(&c, &ecc.key_id, b"release").await.unwrap();
        assert!(verify(&c, "alias/signer", b"release", &sig.signature, 0).await.unwrap());
        assert!(!verify(&c, "alias/signer", b"tampered", &sig.signature, 0).await.unwrap());

        // kill -9 the leader: the survivors elect another and keep serving.
        let old_leader = cluster.leader().await;
        let lagging_at = cluster.local_status(old_leader).await.unwrap().last_log_index;
        cluster.kill(old_leader);
        let survivors: Vec<u64> = cluster.addrs.keys().copied().filter(|id| *id != old_leader).collect();
        let s = cluster.client_for(&survivors);
        let ct2 = eventually("survivors encrypt", || encrypt(&s, "alias/app", b"second secret", &[])).await;
        assert_eq!(decrypt(&s, &ct1.ciphertext, &[("tenant", "t1")]).await.unwrap().plaintext, b"first secret");
        let new_leader = cluster.leader().await;
        assert_ne!(new_leader, old_leader);

        // Enough writes for the new leader to snapshot and purge its log past the dead node.
        for i in 0..30 {
            create_key(&s, &format!("bulk-{i}"), pb::KeySpec::Aes256GcmSiv).await.unwrap();
        }
        let leader_status = eventually("the leader purges its log", || async {
            let st = cluster.local_status(new_leader).await?;
            if st.purged_index > lagging_at {
                Ok(st)
            } else {
                Err(tonic::Status::unavailable("not purged yet"))
            }
        })
        .await;

        // The restarted node cannot get the purged entries: it catches up by snapshot install.
        cluster.spawn(old_leader);
        let target = leader_status.last_log_index;
        eventually("the restarted node catches up", || async {
            let st = cluster.local_status(old_leader).await?;
            if st.applied_index >= target {
                Ok(())
            } else {
                Err(tonic::Status::unavailable("behind"))
            }
        })
        .await;
        let rejoined = cluster.local_status(old_leader).await.unwrap();
        assert!(rejoined.snapshot_index > lagging_at, "expected a snapshot past {lagging_at}: {rejoined:?}");
        let alone = cluster.client_for(&[old_leader]);
        assert_eq!(decrypt(&alone, &ct2.ciphertext, &[]).await.unwrap().plaintext, b"second secret");

        // kill -9 every node, start them all: every key and ciphertext still works.
        for id in 1..=3 {
            cluster.kill(id);
        }
        for id in 1..=3 {
            cluster.spawn(id);
        }
        let c = cluster.client();
        let pt = eventually("decrypt after full restart", || decrypt(&c, &ct1.ciphertext, &[("tenant", "t1")])).await;
        assert_eq!(pt.plaintext, b"first secret");
        assert_eq!(decrypt(&c, &ct2.ciphertext, &[]).await.unwrap().plaintext, b"second secret");
        assert_eq!(decrypt(&c, &dk.ciphertext, &[]).await.unwrap().plaintext, dk.plaintext);
        assert!(verify(&c, "alias/signer", b"release", &sig.signature, 0).await.unwrap());
        let sig2 = sign(&c, "alias/signer", b"after restart").await.unwrap();
        assert!(verify(&c, &ecc.key_id, b"after restart", &sig2.signature, 1).await.unwrap());
        let req = pb::ListKeysRequest { page_size: 1000, ..Default::default() };
        let all = c.list_keys(req).await.unwrap();
        assert_eq!(all.keys.len(), 32);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_disabling_and_bad_inputs_get_the_right_answers() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        let c = cluster.client();
        for id in 1..=3 {
            eventually("node answers", || cluster.local_status(id)).await;
        }

        // Before init every node says it belongs to no initialised cluster: UNAVAILABLE, not a
        // definite failure, since a node outside the cluster cannot speak for it (seed 4818).
        let err = create_key(&c, "early", pb::KeySpec::Aes256GcmSiv).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("cluster init"), "{err:?}");
        cluster.init().await;

        let key = create_key(&c, "rot", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let other = create_key(&c, "other", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let old = encrypt(&c, "alias/rot", b"v1 data", &[("a", "b")]).await.unwrap();
        assert_eq!(old.key_version, 1);

        // Rotation: new ciphertexts carry v2, old ones still decrypt.
        let rotated = key_of(
            c.rotate_key(pb::RotateKeyRequest { key: "alias/rot".into(), idempotency_token: "rot-1".into() }).await,
        )
        .unwrap();
        assert_eq!(rotated.primary_version, 2);
        let new = encrypt(&c, &key.key_id, b"v2 data", &[]).await.unwrap();
        assert_eq!(new.key_version, 2);
        assert_eq!(decrypt(&c, &old.ciphertext, &[("a", "b")]).await.unwrap().key_version, 1);

        // A disabled version no longer decrypts; the primary cannot be disabled.
        let disable_v = |v: u32| {
            let c = &c;
            async move {
                key_of(
                    c.disable_key_version(pb::KeyVersionRequest {
                        key: "alias/rot".into(),
                        version: v,
                        ..Default::default()
                    })
                    .await,
                )
            }
        };
        disable_v(1).await.unwrap();
        assert_eq!(decrypt(&c, &old.ciphertext, &[("a", "b")]).await.unwrap_err().code(), Code::FailedPrecondition);
        assert_eq!(disable_v(2).await.unwrap_err().code(), Code::FailedPrecondition);

        // Malformed, truncated, tampered ciphertexts and a wrong context.
        assert_eq!(
            decrypt(&c, b"not a ciphertext at all, clearly not", &[]).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(decrypt(&c, &new.ciphertext[..20], &[]).await.unwrap_err().code(), Code::InvalidArgument);
        let mut tampered = new.ciphertext.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(decrypt(&c, &tampered, &[]).await.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(decrypt(&c, &new.ciphertext, &[("x", "y")]).await.unwrap_err().code(), Code::InvalidArgument);
        // A ciphertext of another key.
        let req =
            pb::DecryptRequest { ciphertext: new.ciphertext.clone(), key: other.key_id.clone(), ..Default::default() };
        let err = c.decrypt(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

        // Size limit, unknown alias, duplicate alias, invalid names and days.
        let big = vec![0u8; 64 * 1024 + 1];
        assert_eq!(encrypt(&c, "alias/rot", &big, &[]).await.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(encrypt(&c, "alias/nope", b"x", &[]).await.unwrap_err().code(), Code::NotFound);
        let dup = c
            .create_alias(pb::CreateAliasRequest { alias: "alias/other".into(), key: "alias/rot".into() })
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists);
        assert_eq!(encrypt(&c, "alias/bad name", b"x", &[]).await.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(encrypt(&c, "no-such-form", b"x", &[]).await.unwrap_err().code(), Code::InvalidArgument);
        let schedule = |days: u32| {
            let c = &c;
            async move {
                key_of(
                    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                        key: "alias/other".into(),
                        pending_window_days: days,
                        ..Default::default()
                    })
                    .await,
                )
            }
        };
        assert_eq!(schedule(3).await.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(schedule(31).await.unwrap_err().code(), Code::InvalidArgument);

        // Disabled and pending-deletion keys refuse crypto.
        key_of(c.disable_key(pb::KeyRequest { key: "alias/rot".into(), ..Default::default() }).await).unwrap();
        assert_eq!(encrypt(&c, "alias/rot", b"x", &[]).await.unwrap_err().code(), Code::FailedPrecondition);
        assert_eq!(decrypt(&c, &new.ciphertext, &[]).await.unwrap_err().code(), Code::FailedPrecondition);
        let pending = schedule(7).await.unwrap();
        assert_eq!(pending.state, pb::KeyState::PendingDeletion as i32);
        assert_eq!(encrypt(&c, "alias/other", b"x", &[]).await.unwrap_err().code(), Code::FailedPrecondition);

        // A node that lost its quorum answers UNAVAILABLE, and nothing was lost.
        let leader = cluster.leader().await;
        let survivor = cluster.addrs.keys().copied().find(|id| *id != leader).unwrap();
        for id in 1..=3 {
            if id != survivor {
                cluster.kill(id);
            }
        }
        let alone = cluster.client_for(&[survivor]);
        let err = encrypt(&alone, &other.key_id, b"x", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        for id in 1..=3 {
            if id != survivor {
                cluster.spawn(id);
            }
        }
        let c = cluster.client();
        let k = eventually("the key is back", || async {
            let req = pb::DescribeKeyRequest { key: "alias/rot".into(), consistency: None };
            c.describe_key(req).await
        })
        .await;
        assert_eq!(k.key.unwrap().state, pb::KeyState::Disabled as i32);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_added_as_learner_then_voter_serves_and_is_removed() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        cluster.init().await;
        let c = cluster.client_for(&[1, 2, 3]);
        let a = cluster.admin_for(&[1, 2, 3]);
        create_key(&c, "before", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let ct = encrypt(&c, "alias/before", b"old data", &[]).await.unwrap();

        cluster.add(4).await;
        eventually("node 4 answers", || cluster.local_status(4)).await;
        let member = pb::Member { id: 4, addr: cluster.addrs[&4].clone(), region: region(4), zone: String::new() };
        let req = pb::AddNodeRequest { member: Some(member) };
        // Sent to a follower on purpose. Operator calls are not forwarded (a member would
        // make them with its own certificate): the follower refuses, naming the leader...
        let leader = cluster.leader().await;
        let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
        let pinned = client::ClientOptions {
            discover: false,
            call_timeout: Duration::from_secs(2),
            ..client::ClientOptions::default()
        };
        let pinned = cluster.inner.client_as("admin", &[follower], pinned).unwrap();
        let refused = pinned.add_node(req.clone()).await.unwrap_err();
        let refused = tonic::Status::from(refused);
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains(&format!("the leader is node {leader}")), "{refused:?}");
        let hint = refused.metadata().get(client::LEADER_HINT).and_then(|v| v.to_str().ok());
        assert_eq!(hint, Some(cluster.addrs[&leader].as_str()));
        // ...and a client that may follow hints (the default) goes there and is served.
        let follows = cluster.inner.client_as("admin", &[follower], client::ClientOptions::default()).unwrap();
        follows.add_node(req).await.unwrap();
        eventually("every node sees node 4 as a reachable voter", || async {
            let status = a.status(pb::StatusRequest {}).await?;
            let four = status.nodes.into_iter().find(|n| n.id == 4).expect("node 4 in status");
            if four.voter && four.reachable {
                Ok(())
            } else {
                Err(tonic::Status::unavailable(format!("{four:?}")))
            }
        })
        .await;
        // Whether node 4 holds a root-key share yet depends on how far resharing got
        // (node/tests/reshare.rs follows it); it serves either way.

        // The new voter serves on its own: it unwraps from the original holders' shares.
        let alone = cluster.client_for(&[4]);
        let pt = eventually("node 4 decrypts", || decrypt(&alone, &ct.ciphertext, &[])).await;
        assert_eq!(pt.plaintext, b"old data");

        // The operator's client of every node, node 4 included: leader-only calls go to the
        // leader, wherever it is.
        let a = cluster.admin();
        // Removing the leader itself: it hands leadership to another voter, which removes it.
        // (Idempotent: a retry after a lost answer finds node 4 leading. Under CI load an
        // election may be under way when it is asked: "no leader is known; retry".)
        eventually("leadership moves to node 4", || async {
            a.transfer_leader(pb::TransferLeaderRequest { id: 4 }).await
        })
        .await;
        assert_eq!(cluster.leader().await, 4);
        a.remove_node(pb::RemoveNodeRequest { id: 4 }).await.unwrap();
        assert_ne!(cluster.leader().await, 4);
        let status = a.status(pb::StatusRequest {}).await.unwrap();
        assert_eq!(status.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        let missing = a.remove_node(pb::RemoveNodeRequest { id: 9 }).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        // Still a working 3-node cluster.
        assert_eq!(decrypt(&c, &ct.ciphertext, &[]).await.unwrap().plaintext, b"old data");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_named_node_and_back() {
    bounded(async {
        let cluster = Cluster::start(3).await;
        cluster.init().await;
        let c = cluster.client();
        let a = cluster.admin();
        create_key(&c, "k", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let first = cluster.leader().await;
        for target in [1u64, 2, 3].into_iter().filter(|id| *id != first).chain([first]) {
            // Sent through any node: followers pass it to the leader.
            a.transfer_leader(pb::TransferLeaderRequest { id: target })
                .await
                .unwrap_or_else(|e| panic!("transfer to {target}: {e:?}"));
            assert_eq!(cluster.leader().await, target);
            // The cluster keeps taking writes under its new leader.
            let rotated = key_of(
                c.rotate_key(pb::RotateKeyRequest { key: "alias/k".into(), idempotency_token: format!("t{target}") })
                    .await,
            )
            .unwrap();
            assert!(rotated.primary_version >= 2);
        }
        let err = a.transfer_leader(pb::TransferLeaderRequest { id: 7 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_material_is_counted_and_evicted_on_every_node_when_its_key_is_disabled() {
    bounded(async {
        let cluster = Cluster::start(3).await;
        cluster.init().await;
        let c = cluster.client();
        create_key(&c, "cached", pb::KeySpec::Aes256GcmSiv).await.unwrap();

        // Two encryptions through each node: the first may unwrap, the second hits the cache.
        for id in 1..=3 {
            let one = cluster.client_for(&[id]);
            for _ in 0..2 {
                encrypt(&one, "alias/cached", b"data", &[]).await.unwrap();
            }
        }
        for id in 1..=3 {
            let s = cluster.local_status(id).await.unwrap();
            assert_eq!(s.cache_entries, 1, "node {id}: {s:?}");
            assert!(s.cache_hits >= 1, "node {id}: {s:?}");
        }

        // Disabling the key evicts its material on every node, not only where it was asked.
        key_of(c.disable_key(pb::KeyRequest { key: "alias/cached".into(), ..Default::default() }).await).unwrap();
        for id in 1..=3 {
            eventually("evicted everywhere", || async {
                let s = cluster.local_status(id).await?;
                if s.cache_entries == 0 && s.cache_evictions >= 1 {
                    Ok(())
                } else {
                    Err(tonic::Status::unavailable(format!("node {id} still caches: {s:?}")))
                }
            })
            .await;
        }
    })
    .await;
}
