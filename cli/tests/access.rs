//! Who may do what to a key, on real processes: every operation on a key, tried by its
//! owner, a principal with a grant, a principal with nothing, an administrator, a member
//! node's certificate and a non-member node's certificate, each getting the documented allow or
//! PERMISSION_DENIED; a grant's context condition; a revoked grant refused at once on every
//! node; and the CLI's policy and grant commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::process::Command;
use std::time::Duration;

use client::{pb, Client};
use common::*;
use raft::Principal;
use tonic::{Code, Status};

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(240), test).await.expect("test exceeded 240 s");
}

async fn listed(c: &Client) -> usize {
    c.list_keys(pb::ListKeysRequest::default()).await.unwrap().keys.len()
}

/// What every call of the matrix needs: the two keys (AES and P-384), a ciphertext of the AES
/// key under `tenant=acme`, a signature, the policy as it is (put back unchanged), and a grant
/// to someone else that refused principals try to revoke.
struct Fixture {
    aes: String,
    ecc: String,
    ciphertext: Vec<u8>,
    signature: Vec<u8>,
    policy: String,
    spare_grant: String,
    /// The grant the owner's CreateGrant made, for its RevokeGrant.
    made_grant: std::sync::Mutex<Option<String>>,
}

fn ok<T>(r: Result<T, client::Error>) -> Result<(), Status> {
    r.map(drop).map_err(Status::from)
}

const ACME: &[(&str, &str)] = &[("tenant", "acme")];

/// Every operation on a key, in an order the owner can run them all in (the key ends as it
/// began).
const OPERATIONS: &[&str] = &[
    "DescribeKey",
    "ListKeyVersions",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "Sign",
    "Verify",
    "GetPublicKey",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListGrants",
    "CreateGrant",
    "RevokeGrant",
    "TagKey",
    "UntagKey",
    "UpdateKeyDescription",
    "SetRotationPolicy",
    "SetAllowedRegions",
    "CreateAlias",
    "DeleteAlias",
    "RotateKey",
    "DisableKeyVersion",
    "EnableKeyVersion",
    "DisableKey",
    "EnableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
];

/// One operation as principal `who`.
async fn call(c: &Client, f: &Fixture, op: &str, who: &str) -> Result<(), Status> {
    let key = f.aes.clone();
    let tok = || format!("{who}-{op}");
    match op {
        "DescribeKey" => ok(c.describe_key(pb::DescribeKeyRequest { key, consistency: None }).await),
        "ListKeyVersions" => ok(c.list_key_versions(pb::ListKeyVersionsRequest { key, consistency: None }).await),
        "Encrypt" => encrypt(c, &key, b"matrix", ACME).await.map(drop),
        "Decrypt" => decrypt(c, &f.ciphertext, ACME).await.map(drop),
        "ReEncrypt" => {
            let req = pb::ReEncryptRequest {
                ciphertext: f.ciphertext.clone(),
                source_encryption_context: ctx(ACME),
                destination_encryption_context: ctx(ACME),
                ..Default::default()
            };
            ok(c.re_encrypt(req).await)
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let req = pb::GenerateDataKeyRequest { key, encryption_context: ctx(ACME), ..Default::default() };
            if op == "GenerateDataKey" {
                ok(c.generate_data_key(req).await)
            } else {
                ok(c.generate_data_key_without_plaintext(req).await)
            }
        }
        "Sign" => sign(c, &f.ecc, b"matrix").await.map(drop),
        "Verify" => verify(c, &f.ecc, b"matrix", &f.signature, 0).await.map(|valid| assert!(valid)),
        "GetPublicKey" => {
            ok(c.get_public_key(pb::GetPublicKeyRequest { key: f.ecc.clone(), ..Default::default() }).await)
        }
        "GetKeyPolicy" => ok(c.get_key_policy(pb::GetKeyPolicyRequest { key, consistency: None }).await),
        "PutKeyPolicy" => ok(c.put_key_policy(pb::PutKeyPolicyRequest { key, policy: f.policy.clone() }).await),
        "ListGrants" => ok(c.list_grants(pb::ListGrantsRequest { key, consistency: None }).await),
        "CreateGrant" => {
            let req = pb::CreateGrantRequest {
                key,
                grantee: "client/temporary".into(),
                operations: vec!["Encrypt".into()],
                idempotency_token: tok(),
                ..Default::default()
            };
            let made = c.create_grant(req).await.map_err(Status::from)?;
            // Kept for the RevokeGrant that follows it in the matrix.
            *f.made_grant.lock().unwrap() = made.grant.map(|g| g.grant_id);
            Ok(())
        }
        "RevokeGrant" => {
            let made = f.made_grant.lock().unwrap().take();
            let grant_id = made.unwrap_or_else(|| f.spare_grant.clone());
            ok(c.revoke_grant(pb::RevokeGrantRequest { key, grant_id }).await)
        }
        "TagKey" => {
            let req = pb::TagKeyRequest { key, tags: ctx(&[("who", who)]), idempotency_token: tok() };
            ok(c.tag_key(req).await)
        }
        "UntagKey" => {
            let req = pb::UntagKeyRequest { key, tag_keys: vec!["who".into()], idempotency_token: tok() };
            ok(c.untag_key(req).await)
        }
        "UpdateKeyDescription" => {
            let req = pb::UpdateKeyDescriptionRequest { key, description: who.into(), idempotency_token: tok() };
            ok(c.update_key_description(req).await)
        }
        "SetRotationPolicy" => {
            let req = pb::SetRotationPolicyRequest { key, rotation_period_days: 0, idempotency_token: tok() };
            ok(c.set_rotation_policy(req).await)
        }
        "SetAllowedRegions" => ok(c
            .set_allowed_regions(pb::SetAllowedRegionsRequest {
                key,
                allowed_regions: vec![],
                idempotency_token: tok(),
            })
            .await),
        "CreateAlias" => {
            let alias = format!("alias/by-{}", who.replace('/', "-"));
            ok(c.create_alias(pb::CreateAliasRequest { alias, key }).await)
        }
        "DeleteAlias" => {
            // The key's own alias, which the owner made with it: only the owner's own
            // (just made) alias is deleted, so the refused ones try the key's first alias.
            let alias =
                if who == "client/dev" { format!("alias/by-{}", who.replace('/', "-")) } else { "alias/matrix".into() };
            ok(c.delete_alias(pb::DeleteAliasRequest { alias }).await)
        }
        "RotateKey" => ok(c.rotate_key(pb::RotateKeyRequest { key, idempotency_token: tok() }).await),
        "DisableKeyVersion" | "EnableKeyVersion" => {
            let req = pb::KeyVersionRequest { key, version: 1, idempotency_token: tok() };
            if op == "DisableKeyVersion" {
                ok(c.disable_key_version(req).await)
            } else {
                ok(c.enable_key_version(req).await)
            }
        }
        "DisableKey" => ok(c.disable_key(pb::KeyRequest { key, idempotency_token: tok() }).await),
        "EnableKey" => ok(c.enable_key(pb::KeyRequest { key, idempotency_token: tok() }).await),
        "ScheduleKeyDeletion" => {
            let req = pb::ScheduleKeyDeletionRequest { key, pending_window_days: 7, idempotency_token: tok() };
            ok(c.schedule_key_deletion(req).await)
        }
        "CancelKeyDeletion" => {
            ok(c.cancel_key_deletion(pb::KeyRequest { key, idempotency_token: tok() }).await)?;
            // Cancelling leaves the key disabled: enable it again so the key ends as it began.
            ok(c.enable_key(pb::KeyRequest { key: f.aes.clone(), idempotency_token: format!("{}-re", tok()) }).await)
        }
        other => panic!("no operation {other}"),
    }
}

/// What `who` may do: the documented matrix.
fn allowed(who: &str, op: &str) -> bool {
    match who {
        "client/dev" => true,
        // The grants: Encrypt, Decrypt and GenerateDataKey under tenant=acme; Describe.
        "client/granted" => matches!(op, "Encrypt" | "Decrypt" | "GenerateDataKey" | "DescribeKey" | "ListKeyVersions"),
        // Administrators describe keys and read and replace policies; nothing else.
        "admin/dev" => matches!(op, "DescribeKey" | "ListKeyVersions" | "GetKeyPolicy" | "PutKeyPolicy" | "ListGrants"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_allowed_or_denied_to_each_kind_of_principal_as_documented() {
    bounded(async {
        let cluster = Cluster::start(3).await;
        cluster.init().await;
        let owner = cluster.client();
        let aes = create_key(&owner, "matrix", pb::KeySpec::Aes256GcmSiv).await.unwrap().key_id;
        let ecc = create_key(&owner, "matrix-signer", pb::KeySpec::EccNistP384).await.unwrap().key_id;
        let ciphertext = encrypt(&owner, &aes, b"secret", ACME).await.unwrap().ciphertext;
        let signature = sign(&owner, &ecc, b"matrix").await.unwrap().signature;
        let policy =
            owner.get_key_policy(pb::GetKeyPolicyRequest { key: aes.clone(), consistency: None }).await.unwrap().policy;
        let grant = |grantee: &str, operations: &[&str], context: &[(&str, &str)], key: &str| pb::CreateGrantRequest {
            key: key.into(),
            grantee: grantee.into(),
            operations: operations.iter().map(|o| o.to_string()).collect(),
            encryption_context: ctx(context),
            ..Default::default()
        };
        let spare = owner.create_grant(grant("client/other", &["Encrypt"], &[], &aes)).await.unwrap();
        let spare_grant = spare.grant.unwrap().grant_id;
        let ops = ["Encrypt", "Decrypt", "GenerateDataKey"];
        owner.create_grant(grant("client/granted", &ops, ACME, &aes)).await.unwrap();
        owner.create_grant(grant("client/granted", &["Describe"], &[], &aes)).await.unwrap();
        // A context constraint on an operation that takes no context is refused.
        let bad = owner.create_grant(grant("client/granted", &["Describe"], ACME, &aes)).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        let f = Fixture { aes, ecc, ciphertext, signature, policy, spare_grant, made_grant: Default::default() };

        cluster.issue(&Principal::Client("granted".into()), "granted");
        cluster.issue(&Principal::Client("stranger".into()), "stranger");
        cluster.issue(&Principal::Node(2), "member");
        cluster.issue(&Principal::Node(99), "outsider");
        let principals = [
            ("client/granted", cluster.client_as("granted", &[1, 2, 3])),
            ("client/stranger", cluster.client_as("stranger", &[1, 2, 3])),
            ("admin/dev", cluster.admin_for(&[1, 2, 3])),
            ("node/2", cluster.client_as("member", &[1, 2, 3])),
            ("node/99", cluster.client_as("outsider", &[1, 2, 3])),
            // The owner last: its writes change the key, and put it back as it was.
            ("client/dev", cluster.client_for(&[1, 2, 3])),
        ];
        let mut wrong = Vec::new();
        for (who, c) in &principals {
            for op in OPERATIONS {
                let out = call(c, &f, op, who).await;
                let expected = allowed(who, op);
                let fine = match (&out, expected) {
                    (Ok(()), true) => true,
                    (Err(s), false) => {
                        s.code() == Code::PermissionDenied
                            && (who.starts_with("node/")
                                || s.message().starts_with(&format!("{who} is not allowed to")))
                    }
                    _ => false,
                };
                if !fine {
                    wrong
                        .push(format!("{who} {op}: expected {}, got {out:?}", if expected { "allow" } else { "deny" }));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));

        // The grant holds only under its context.
        let granted = &principals[0].1;
        let denied = encrypt(granted, &f.aes, b"x", &[("tenant", "other")]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = encrypt(granted, &f.aes, b"x", &[]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        // A denial names the principal, the operation and the key, never the policy.
        assert!(!denied.message().contains("statements") && !denied.message().contains("client/dev"), "{denied:?}");
        // Listing shows only what the principal may describe.
        assert_eq!(listed(granted).await, 1);
        assert_eq!(listed(&principals[1].1).await, 0);
        assert_eq!(listed(&principals[2].1).await, 2, "administrators see every key");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_refused_at_once_by_every_node_and_the_cli_manages_policies_and_grants() {
    bounded(async {
        let cluster = Cluster::start(3).await;
        cluster.init().await;
        let owner = cluster.client();
        let key = create_key(&owner, "shared", pb::KeySpec::Aes256GcmSiv).await.unwrap().key_id;
        cluster.issue(&Principal::Client("batch".into()), "batch");

        // Through the CLI, as the owner: a grant to client/batch, listed, then revoked.
        let tls = cluster.spec.data_dir.join("tls");
        let endpoints: Vec<String> = cluster.addrs.values().cloned().collect();
        let run = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_keyquorum"))
                .args(args)
                .env("KEYQUORUM_ENDPOINTS", endpoints.join(","))
                .env("KEYQUORUM_TLS_CA", tls.join("ca.pem"))
                .env("KEYQUORUM_TLS_CERT", tls.join("client.pem"))
                .env("KEYQUORUM_TLS_KEY", tls.join("client.key"))
                .output()
                .unwrap()
        };
        let cli = |args: &[&str]| {
            let out = run(args);
            assert!(out.status.success(), "keyquorum {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let made = cli(&[
            "key",
            "grant",
            "create",
            "alias/shared",
            "--grantee",
            "client/batch",
            "--operations",
            "Encrypt,Decrypt",
            "--output",
            "json",
        ]);
        let made: serde_json::Value = serde_json::from_str(made.trim()).unwrap();
        let grant_id = made["grant_id"].as_str().unwrap().to_string();
        assert!(cli(&["key", "grant", "list", "alias/shared"]).contains(&grant_id));

        // The grantee uses it through every node.
        let at: Vec<Client> = (1..=3).map(|id| cluster.client_as("batch", &[id])).collect();
        for c in &at {
            encrypt(c, "alias/shared", b"batch job", &[]).await.unwrap();
        }
        cli(&["key", "grant", "revoke", "alias/shared", &grant_id]);
        // Once the revoke is acknowledged, no node serves the grantee again, cached
        // material or not.
        for (i, c) in at.iter().enumerate() {
            let denied = encrypt(c, "alias/shared", b"after revoke", &[]).await.unwrap_err();
            assert_eq!(denied.code(), Code::PermissionDenied, "node {}: {denied:?}", i + 1);
        }
        assert!(!cli(&["key", "grant", "list", "alias/shared"]).contains(&grant_id));

        // The policy round trip: what `policy get` prints, `policy put` takes; a statement for
        // client/batch allows it again.
        let printed = cli(&["key", "policy", "get", "alias/shared"]);
        let mut doc: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(doc["owner"], "client/dev");
        assert_eq!(doc["key_id"], key.as_str());
        let statement = serde_json::json!({"principals": ["client/batch"], "operations": ["Encrypt"]});
        doc["policy"]["statements"].as_array_mut().unwrap().push(statement);
        let file = cluster.spec.data_dir.join("policy.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        cli(&["key", "policy", "put", "alias/shared", file.to_str().unwrap()]);
        encrypt(&at[0], "alias/shared", b"by policy", &[]).await.unwrap();
        // A malformed policy is refused, and changes nothing.
        std::fs::write(&file, r#"{"statements":[{"principals":["node/1"],"operations":["Decrypt"]}]}"#).unwrap();
        let bad = run(&["key", "policy", "put", "alias/shared", file.to_str().unwrap()]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("node/1"), "{}", String::from_utf8_lossy(&bad.stderr));
        encrypt(&at[0], "alias/shared", b"still allowed", &[]).await.unwrap();
    })
    .await;
}
