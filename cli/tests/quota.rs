//! Per-principal quotas on real processes: an operator sets them through the CLI; a principal
//! over its call rate is refused with RESOURCE_EXHAUSTED and a retry-after hint while another
//! principal is served; a principal at its key or alias limit cannot create more, until the
//! override is cleared; and only operators may set quotas.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use client::{pb, ClientOptions};
use common::*;
use raft::Principal;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_set_through_the_cli_bind_each_principal_alone() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let cluster = Cluster::start(3).await;
        cluster.init().await;
        cluster.issue(&Principal::Client("tenant".into()), "tenant");
        let tls = cluster.spec.data_dir.join("tls");
        let endpoints: Vec<String> = cluster.addrs.values().cloned().collect();
        let run = |stem: &str, args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_keyquorum"))
                .args(args)
                .env("KEYQUORUM_ENDPOINTS", endpoints.join(","))
                .env("KEYQUORUM_TLS_CA", tls.join("ca.pem"))
                .env("KEYQUORUM_TLS_CERT", tls.join(format!("{stem}.pem")))
                .env("KEYQUORUM_TLS_KEY", tls.join(format!("{stem}.key")))
                .output()
                .unwrap()
        };
        let admin = |args: &[&str]| {
            let out = run("admin", args);
            assert!(out.status.success(), "keyquorum {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };

        // An application certificate may not set quotas.
        let refused = run("client", &["cluster", "quota", "set", "--principal", "client/dev", "--crypto", "unlimited"]);
        assert!(!refused.status.success());
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(why.contains("client/dev"), "{why}");

        let set = admin(&[
            "cluster",
            "quota",
            "set",
            "--principal",
            "client/tenant",
            "--crypto",
            "1/5",
            "--max-keys",
            "2",
            "--max-aliases",
            "2",
        ]);
        assert!(set.contains("crypto 1/s (burst 5)") && set.contains("keys 2"), "{set}");
        let got = admin(&["cluster", "quota", "get", "--principal", "client/tenant", "--output", "json"]);
        let got: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
        assert_eq!(got["effective"]["from"], "client/tenant", "{got}");
        assert_eq!(got["effective"]["limits"]["crypto"]["burst"], 5, "{got}");
        assert_eq!(got["effective"]["limits"]["max_keys"], 2, "{got}");
        assert!(got["default"]["max_keys"].as_u64().unwrap() > 2, "{got}");

        // Keys and aliases: two keys (one with an alias), one more alias, and no further.
        let tenant = cluster.client_as("tenant", &[1, 2, 3]);
        let first = create_key(&tenant, "tenant-1", pb::KeySpec::Aes256GcmSiv).await.unwrap().key_id;
        let req = pb::CreateKeyRequest { spec: pb::KeySpec::Aes256GcmSiv as i32, ..Default::default() };
        tenant.create_key(req.clone()).await.unwrap();
        let over = tenant.create_key(req.clone()).await.unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
        assert!(over.message().contains("client/tenant owns 2 keys"), "{over:?}");
        assert!(proto::retry_after(&tonic::Status::from(over)).is_none(), "waiting does not make room");
        tenant.create_alias(pb::CreateAliasRequest { alias: "tenant-2".into(), key: first.clone() }).await.unwrap();
        let over = tenant.create_alias(pb::CreateAliasRequest { alias: "tenant-3".into(), key: first.clone() }).await;
        let over = over.unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
        assert!(over.message().contains("2 aliases"), "{over:?}");

        // The crypto rate at one node: a burst of 5, then 1 a second. A client that may not
        // wait (its deadline is before the next token) sees the refusal and its hint.
        let impatient =
            ClientOptions { discover: false, call_timeout: Duration::from_millis(300), ..ClientOptions::default() };
        let at_one = cluster.client_as_with("tenant", &[2], impatient);
        let started = Instant::now();
        let mut served = 0u64;
        let refusal = loop {
            match encrypt(&at_one, &first, b"metered", &[]).await {
                Ok(_) => served += 1,
                Err(status) => break status,
            }
        };
        let elapsed = started.elapsed().as_secs();
        assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
        assert!(refusal.message().contains("client/tenant is over its crypto call quota"), "{refusal:?}");
        assert!(proto::retry_after(&refusal).is_some(), "{refusal:?}");
        // Never more than the burst and what the rate refilled meanwhile.
        assert!(served >= 5 && served <= 5 + elapsed + 1, "{served} served in {elapsed} s");
        // Another principal at the same node is served: buckets are per principal.
        let dev = cluster.client_for(&[2]);
        let own = create_key(&dev, "dev-1", pb::KeySpec::Aes256GcmSiv).await.unwrap().key_id;
        encrypt(&dev, &own, b"other principal", &[]).await.unwrap();
        // A patient client waits for the hint and is served.
        encrypt(&cluster.client_as("tenant", &[2]), &first, b"patient", &[]).await.unwrap();

        // Cleared: the default applies again, and the third key can be made.
        let cleared = admin(&["cluster", "quota", "clear", "--principal", "client/tenant"]);
        assert!(cleared.contains("removed"), "{cleared}");
        // (Both writes go through the leader, so the create applies after the clear.)
        tenant.create_key(req).await.unwrap();
    })
    .await
    .expect("test exceeded 240 s");
}
