//! mTLS between real processes: who may call what, and what happens without a certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use client::{pb, Client, ClientTlsConfig};
use common::*;
use proto::internal::internal_client::InternalClient;
use proto::internal::DecryptionShareRequest;
use raft::Principal;
use testbed::Authority;
use tonic::transport::{Certificate, Endpoint, Identity};
use tonic::Code;

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

/// The node-to-node service at `addr`, as whoever `tls` names.
fn internal(addr: &str, tls: ClientTlsConfig) -> InternalClient<tonic::transport::Channel> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    InternalClient::new(endpoint.connect_lazy())
}

async fn status(c: &Client) -> Result<pb::NodeStatus, tonic::Status> {
    c.only(0).unwrap().local_status(pb::StatusRequest {}).await.map_err(Into::into)
}

async fn list_keys(c: &Client) -> Result<pb::ListKeysResponse, tonic::Status> {
    let req = pb::ListKeysRequest::default();
    c.list_keys(req).await.map_err(Into::into)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_needs_a_certificate_from_the_cluster_ca_with_the_right_role() {
    bounded(async {
        let cluster = Cluster::start(3).await;
        cluster.init().await;
        let key = create_key(&cluster.client(), "mtls", pb::KeySpec::Aes256GcmSiv).await.unwrap();
        let key_id = uuid::Uuid::parse_str(&key.key_id).unwrap().as_bytes().to_vec();
        let addr = cluster.addrs[&1].clone();
        let share_request = |requester| DecryptionShareRequest {
            key_id: key_id.clone(),
            version: 1,
            min_applied_index: 0,
            requester,
            log_key: false,
            root_epoch: 1,
            rewrap: false,
        };

        // An application certificate: KMS yes, admin and node-to-node no. It lists only the
        // keys it may describe, and may not use another principal's key.
        cluster.issue(&Principal::Client("app".into()), "app");
        let app = cluster.client_as("app", &[1]);
        assert_eq!(list_keys(&app).await.unwrap().keys.len(), 0, "client/app sees client/dev's key");
        assert_eq!(list_keys(&cluster.client()).await.unwrap().keys.len(), 1);
        let denied = encrypt(&app, "alias/mtls", b"x", &[]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let expected = format!("client/app is not allowed to Encrypt on key {}", key.key_id);
        assert!(denied.message().starts_with(&expected), "{denied:?}");
        let denied = status(&app).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("needs an admin certificate"), "{denied:?}");
        let denied = internal(&addr, cluster.credentials("app")).decryption_share(share_request(2)).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

        // An operator may describe every key, but not use one (separation of duties), nor
        // create one.
        let admin = cluster.admin_for(&[1]);
        assert_eq!(list_keys(&admin).await.unwrap().keys.len(), 1);
        let denied = encrypt(&admin, "alias/mtls", b"x", &[]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = create_key(&admin, "by-admin", pb::KeySpec::Aes256GcmSiv).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

        // An operator certificate may not ask for decryption shares either.
        let denied =
            internal(&addr, cluster.credentials("admin")).decryption_share(share_request(2)).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

        // A member node gets its share; it may not ask in another node's name; a node
        // certificate for a non-member gets nothing.
        cluster.issue(&Principal::Node(2), "node-2-again");
        let share = internal(&addr, cluster.credentials("node-2-again")).decryption_share(share_request(2)).await;
        assert!(!share.unwrap().into_inner().share.is_empty());
        // A member's certificate is no KMS principal: it forwards calls, never makes them.
        let member = cluster.client_as("node-2-again", &[1]);
        let denied = list_keys(&member).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = encrypt(&member, "alias/mtls", b"x", &[]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        // Nor an operator: operator calls are never forwarded, so no member needs the Admin
        // service, and a stolen node certificate cannot change the membership.
        let denied = status(&member).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("needs an admin certificate"), "{denied:?}");
        let removal = member.remove_node(pb::RemoveNodeRequest { id: 3 }).await.unwrap_err();
        assert_eq!(tonic::Status::from(removal).code(), Code::PermissionDenied);
        let denied =
            internal(&addr, cluster.credentials("node-2-again")).decryption_share(share_request(3)).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("on behalf of node 3"), "{denied:?}");
        cluster.issue(&Principal::Node(99), "node-99");
        let denied =
            internal(&addr, cluster.credentials("node-99")).decryption_share(share_request(99)).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("node 99 is not a member"), "{denied:?}");

        // No client certificate, one from another CA, or plaintext: no service at all.
        let ca = std::fs::read_to_string(cluster.spec.data_dir.join("tls/ca.pem")).unwrap();
        let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
        let c = Client::new(&[addr.as_str()], Some(anonymous)).unwrap();
        assert!(list_keys(&c).await.is_err(), "a client without a certificate was served");
        let rogue = Authority::generate("rogue CA", 1).unwrap();
        let forged = rogue.issue(&Principal::Admin("mallory".into()), &[], 1).unwrap();
        let forged = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(Identity::from_pem(&forged.cert, forged.key.as_bytes()));
        let c = Client::new(&[addr.as_str()], Some(forged)).unwrap();
        assert!(list_keys(&c).await.is_err(), "a certificate from another CA was accepted");
        let c = Client::new(&[addr.as_str()], None).unwrap();
        assert!(list_keys(&c).await.is_err(), "a plaintext client was served");

        // The cluster still works for its own application.
        list_keys(&cluster.client()).await.unwrap();

        // And `keyquorum bench` measures it over mTLS (a smoke test: figures are for the note).
        let tls = cluster.spec.data_dir.join("tls");
        let out = Command::new(env!("CARGO_BIN_EXE_keyquorum"))
            .args(["bench", "--cold", "2", "--warm", "5", "--output", "json", "--endpoints"])
            .arg(format!("{},{}", cluster.addrs[&1], cluster.addrs[&2]))
            .arg("--tls-ca")
            .arg(tls.join("ca.pem"))
            .arg("--tls-cert")
            .arg(tls.join("client.pem"))
            .arg("--tls-key")
            .arg(tls.join("client.key"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((figures["cold_encrypt"]["n"].as_u64(), figures["warm_encrypt"]["n"].as_u64()), (Some(2), Some(5)));
        assert!(figures["warm_encrypt"]["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{figures}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_tls_refuses_to_start_unless_plaintext_is_asked_for_and_then_says_so() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let port = testbed::free_port().unwrap();
        let base = format!(
            "id = 1\nlisten = \"127.0.0.1:{port}\"\nregion = \"r\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        );
        let run = |config: &str| {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, config).unwrap();
            Command::new(env!("CARGO_BIN_EXE_keyquorum"))
                .args(["server", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };

        // No [tls]: a clear error, no server.
        let out = run(&base).wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no TLS configured") && err.contains("insecure_plaintext"), "{err}");

        // Plaintext on request: it serves plaintext clients and warns at start.
        let mut child = run(&format!("{base}\n[tls]\ninsecure_plaintext = true\n"));
        let c = Client::new(&[format!("127.0.0.1:{port}")], None).unwrap();
        eventually("the plaintext node answers", || status(&c)).await;
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("PLAINTEXT MODE"), "{log}");
    })
    .await;
}
