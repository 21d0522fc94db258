//! Encryption at rest and sealed nodes, on real processes with RocksDB: nothing confidential
//! is readable in a node's files, and a cluster whose every node was killed unseals itself
//! once a majority is back, with no operator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::time::Duration;

use client::pb;
use common::*;
use tonic::{Code, Status};

const ALIAS: &str = "needle-alias-7f3a";
const DESCRIPTION: &str = "needle-description-91c2";
const TAG_VALUE: &str = "needle-tag-value-5d0e";

/// Every regular file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_confidential_is_on_disk_and_a_killed_cluster_unseals_itself() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3).await;
        cluster.init().await;
        let c = cluster.client();
        let req = pb::CreateKeyRequest {
            spec: pb::KeySpec::Aes256GcmSiv as i32,
            alias: ALIAS.into(),
            description: DESCRIPTION.into(),
            tags: [("owner".to_string(), TAG_VALUE.to_string())].into(),
            idempotency_token: "needle".into(),
            ..Default::default()
        };
        c.create_key(req).await.unwrap();
        let ct = encrypt(&c, &format!("alias/{ALIAS}"), b"at rest", &[("tenant", "t1")]).await.unwrap();
        // Past `snapshot_every_entries`, so snapshots are written too.
        for i in 0..25 {
            create_key(&c, &format!("{ALIAS}-{i}"), pb::KeySpec::Aes256GcmSiv).await.unwrap();
        }
        let snapshot = cluster.local_status(1).await.unwrap().snapshot_index;
        assert!(snapshot > 0, "node 1 has not written a snapshot");

        // kill -9 everything, then read every byte each node left on disk.
        for id in 1..=3 {
            cluster.kill(id);
        }
        for id in 1..=3 {
            let data = cluster.spec.data_dir.join(format!("node-{id}/data"));
            let all = files(&data);
            // The scan can see: membership (node addresses) is stored in the clear.
            assert!(
                all.iter().any(|(_, bytes)| contains(bytes, &cluster.addrs[&id])),
                "node {id}: the scan found not even the node's address; is it reading the store?"
            );
            for (path, bytes) in &all {
                for needle in [ALIAS, DESCRIPTION, TAG_VALUE] {
                    assert!(!contains(bytes, needle), "{path} holds {needle:?} in the clear");
                }
            }
        }

        // One node alone cannot unseal: it needs t+1 = 2 shares. It says so, and serves nothing.
        cluster.spawn(1);
        let status = eventually("node 1 reports itself sealed", || async {
            let s = cluster.local_status(1).await?;
            if s.sealed {
                Ok(s)
            } else {
                Err(Status::unavailable(format!("not sealed: {s:?}")))
            }
        })
        .await;
        assert_eq!(status.sealed_log_key_version, 1);
        assert!(status.log_key_versions.is_empty());
        let alone = cluster.client_for(&[1]);
        let err = decrypt(&alone, &ct.ciphertext, &[("tenant", "t1")]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("sealed"), "{err:?}");

        // A second node: together they are t+1, and both unseal from each other.
        cluster.spawn(2);
        let cluster = &cluster;
        for id in [1, 2] {
            eventually(&format!("node {id} unseals"), || async move {
                let s = cluster.local_status(id).await?;
                if !s.sealed && s.log_key_versions == [1] {
                    Ok(())
                } else {
                    Err(Status::unavailable(format!("still sealed: {s:?}")))
                }
            })
            .await;
        }
        let pt = eventually("decrypt at node 1", || decrypt(&alone, &ct.ciphertext, &[("tenant", "t1")])).await;
        assert_eq!(pt.plaintext, b"at rest");
    })
    .await
    .expect("test exceeded 240 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_file_sealed_under_a_passphrase_opens_only_with_it() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3).await;
        let pass = cluster.spec.data_dir.join("node-1-passphrase");
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        cluster.kill(1);
        cluster.configure(1, &format!("identity_passphrase_file = \"{}\"", pass.display()));
        cluster.spawn(1);
        cluster.init().await;
        let file = std::fs::read(cluster.data_dir(1).join("identity.key")).unwrap();
        assert!(file.starts_with(b"keyquorum identity keys v2 sealed\n"), "node 1's identity keys are not sealed");
        assert!(std::fs::read(cluster.data_dir(2).join("identity.key"))
            .unwrap()
            .starts_with(b"keyquorum identity keys v2 clear\n"));

        // A wrong passphrase: the node refuses to start, and says why.
        cluster.kill(1);
        std::fs::write(&pass, "correct horse battery stapler\n").unwrap();
        cluster.spawn(1);
        assert!(!cluster.exited(1).await.success());
        assert!(cluster.log(1).contains("the passphrase does not open it"), "{}", cluster.log(1));

        // The right one: it starts, unseals from its peers and holds its share again.
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        cluster.spawn(1);
        eventually("node 1 is back, unsealed, holding its share", || async {
            let s = cluster.local_status(1).await?;
            if !s.sealed && s.holds_share {
                Ok(())
            } else {
                Err(Status::unavailable(format!("{s:?}")))
            }
        })
        .await;
    })
    .await
    .expect("test exceeded 240 s");
}
