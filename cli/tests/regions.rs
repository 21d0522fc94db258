//! Region-restricted keys on real processes, both sides: a node outside the key's regions
//! serves every call for it by forwarding to a node inside and never unwraps it (share holders
//! refuse it, its cache stays empty); the leader, outside, has a node inside re-wrap the key
//! when the root key rotates; with every node inside down, a node outside fails with a clear
//! error; moving the key's regions moves where it is unwrapped and evicts it elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use client::pb;
use common::*;
use proto::internal::internal_client::InternalClient;
use proto::internal::DecryptionShareRequest;
use raft::Principal;
use tonic::Code;

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

/// Asks node `to` for its share of `key_id` version 1, presenting node `from`'s certificate.
async fn share_request(cluster: &Cluster, from: u64, to: u64, key_id: &str) -> Result<(), tonic::Status> {
    let channel = client::endpoint(&cluster.addrs[&to], Some(&cluster.credentials(&format!("node-{from}"))))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = cluster.local_status(to).await?;
    let request = DecryptionShareRequest {
        key_id: uuid::Uuid::parse_str(key_id).unwrap().as_bytes().to_vec(),
        version: 1,
        min_applied_index: 0,
        requester: from,
        log_key: false,
        root_epoch: status.root_epoch,
        rewrap: false,
    };
    InternalClient::new(channel).decryption_share(request).await.map(drop)
}

async fn set_regions(c: &client::Client, key: &str, regions: &[String]) -> pb::KeyMetadata {
    let req = pb::SetAllowedRegionsRequest { key: key.into(), allowed_regions: regions.to_vec(), ..Default::default() };
    key_of(c.set_allowed_regions(req.clone()).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_restricted_key_is_unwrapped_only_inside_its_regions() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        cluster.init().await;
        // `inside` is the only node in the key's region; `outside` and the leader are not.
        let leader = cluster.leader().await;
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
        let (inside, outside) = (others[0], others[1]);
        let at_outside = cluster.client_for(&[outside]);

        // Created through a node outside: forwarded, so the material is made inside.
        let req = pb::CreateKeyRequest {
            spec: pb::KeySpec::Aes256GcmSiv as i32,
            alias: "eu".into(),
            idempotency_token: "create-eu".into(),
            allowed_regions: vec![region(inside)],
            ..Default::default()
        };
        let key = key_of(at_outside.create_key(req.clone()).await).unwrap();
        assert_eq!(key.allowed_regions, vec![region(inside)]);
        create_key(&at_outside, "anywhere", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let bad = pb::CreateKeyRequest { allowed_regions: vec!["not a region!".into()], ..req.clone() };
        let err = key_of(at_outside.create_key(bad.clone()).await).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

        // Every crypto call at the outside node works, by forwarding.
        let ct = encrypt(&at_outside, "alias/eu", b"stays in its region", &[("app", "r")]).await.unwrap().ciphertext;
        let at_leader = cluster.client_for(&[leader]);
        let back = decrypt(&at_leader, &ct, &[("app", "r")]).await.unwrap();
        assert_eq!(back.plaintext, b"stays in its region");
        let req = pb::ReEncryptRequest {
            ciphertext: ct.clone(),
            source_encryption_context: ctx(&[("app", "r")]),
            destination_key: "alias/anywhere".into(),
            ..Default::default()
        };
        let moved = at_outside.re_encrypt(req).await.unwrap();
        assert_eq!(decrypt(&at_outside, &moved.ciphertext, &[]).await.unwrap().plaintext, b"stays in its region");
        let req = pb::GenerateDataKeyRequest { key: "alias/eu".into(), ..Default::default() };
        let dk = at_outside.generate_data_key(req).await.unwrap();
        assert_eq!(decrypt(&at_outside, &dk.ciphertext, &[]).await.unwrap().plaintext, dk.plaintext);

        // A forwarded call is served for the application that made it, not for the node that
        // forwarded it: the serving node's record names the application's certificate.
        cluster.issue(&Principal::Client("payments".into()), "payments");
        let app = cluster.client_as("payments", &[outside]);
        // Refused while the key's policy names only its owner: the node inside authorizes
        // client/payments, not the member that forwarded the call.
        let denied = encrypt(&app, "alias/eu", b"for payments", &[]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().starts_with("client/payments is not allowed to Encrypt"), "{denied:?}");
        // The owner adds a statement for client/payments (Encrypt only) to the policy.
        let req = pb::GetKeyPolicyRequest { key: "alias/eu".into(), consistency: None };
        let current = at_outside.get_key_policy(req).await.unwrap();
        assert_eq!(current.owner, "client/dev");
        let mut policy: serde_json::Value = serde_json::from_str(&current.policy).unwrap();
        let statement = serde_json::json!({"principals": ["client/payments"], "operations": ["Encrypt"]});
        policy["statements"].as_array_mut().unwrap().push(statement);
        let req = pb::PutKeyPolicyRequest { key: "alias/eu".into(), policy: policy.to_string() };
        at_outside.put_key_policy(req).await.unwrap();
        encrypt(&app, "alias/eu", b"for payments", &[]).await.unwrap();
        let denied = decrypt(&app, &ct, &[("app", "r")]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "Encrypt only: {denied:?}");
        // Each node's audit log records the call: served inside for client/payments, forwarded
        // by the outside node; forwarded outside.
        let records = |id: u64| {
            let admin = cluster.admin_for(&[id]);
            async move {
                let log = admin.audit_log().await.unwrap();
                log.lines
                    .into_iter()
                    .map(|l| serde_json::from_str::<audit::Record>(&l.text).unwrap())
                    .collect::<Vec<_>>()
            }
        };
        let payments =
            |r: &audit::Record| r.principal.as_deref() == Some("client/payments") && r.operation == "Encrypt";
        let served = records(inside)
            .await
            .iter()
            .any(|r| payments(r) && r.forwarded_by == Some(outside) && r.outcome == "ok" && r.code == "OK");
        assert!(served, "node {inside} recorded no Encrypt served for client/payments");
        let forwarded =
            records(outside).await.iter().any(|r| payments(r) && r.outcome == format!("forwarded to node {inside}"));
        assert!(forwarded, "node {outside} recorded no Encrypt forwarded for client/payments");
        // A client cannot speak for another: the metadata a member forwards with is ignored
        // from anyone else.
        let mut rogue = pb::kms_client::KmsClient::new(
            client::endpoint(&cluster.addrs[&inside], Some(&cluster.credentials("payments"))).unwrap().connect_lazy(),
        );
        let mut request = tonic::Request::new(pb::EncryptRequest {
            key: "alias/eu".into(),
            plaintext: b"claimed".to_vec(),
            ..Default::default()
        });
        request.metadata_mut().insert("x-keyquorum-forwarded-for", "admin/root".parse().unwrap());
        request.metadata_mut().insert("x-keyquorum-forwarded-by", outside.to_string().parse().unwrap());
        rogue.encrypt(request).await.unwrap();
        let claims = cluster.log(inside).lines().any(|l| l.contains("principal=admin/root"));
        assert!(!claims, "node {inside} took a client's word that it calls for admin/root");

        // The holders' side: a share of it goes to the node inside, never to one outside.
        share_request(&cluster, inside, leader, &key.key_id).await.unwrap();
        let refused = share_request(&cluster, outside, leader, &key.key_id).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains(&region(inside)), "{refused:?}");
        // Nodes outside never held it: only the unrestricted key is in their caches.
        for id in [leader, outside] {
            let s = cluster.local_status(id).await.unwrap();
            assert!(s.cache_entries <= 1, "node {id} caches {} entries", s.cache_entries);
        }

        // The root key rotates: the leader, outside, has the node inside re-wrap the key.
        let rotated = cluster.admin_for(&[leader]).rotate_root(pb::RotateRootRequest {}).await;
        assert!(rotated.unwrap().root_epoch > 1);
        assert_eq!(decrypt(&at_outside, &ct, &[("app", "r")]).await.unwrap().plaintext, b"stays in its region");
        assert!(cluster.log(leader).contains("re-wrap"), "the leader logs nothing about re-wrapping");
        assert!(cluster.log(inside).contains("re-wrapped a region-restricted key"), "no delegated re-wrap logged");

        // With no node inside up, a node outside says so.
        cluster.kill(inside);
        let err = encrypt(&at_outside, "alias/eu", b"x", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains(&region(inside)) && err.message().contains("no node there"), "{err:?}");

        // Moving the key's region moves where it is unwrapped; old ciphertexts follow.
        let moved = set_regions(&at_leader, "alias/eu", &[region(outside)]).await;
        assert_eq!(moved.allowed_regions, vec![region(outside)]);
        assert_eq!(decrypt(&at_outside, &ct, &[("app", "r")]).await.unwrap().plaintext, b"stays in its region");
        let before = cluster.local_status(outside).await.unwrap().cache_entries;
        assert!(before >= 1);
        // And away again: the outside node drops it at once.
        set_regions(&at_leader, "alias/eu", &[region(inside)]).await;
        eventually("the node outside evicts the key", || async {
            let s = cluster.local_status(outside).await?;
            if s.cache_entries < before {
                Ok(())
            } else {
                Err(tonic::Status::unavailable(format!("{} entries", s.cache_entries)))
            }
        })
        .await;
        // Lifting the restriction lets every node use it.
        set_regions(&at_leader, "alias/eu", &[]).await;
        assert_eq!(decrypt(&at_outside, &ct, &[("app", "r")]).await.unwrap().plaintext, b"stays in its region");
    })
    .await;
}
