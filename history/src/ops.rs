//! The KMS calls behind each operation kind, through the production client library, and how
//! their results become outcomes: a gRPC status that leaves the effect in doubt
//! (unavailable, deadline, cancelled, unknown, internal) is `unknown`, any other refusal
//! `fail`.

use std::collections::HashMap;
use std::time::Duration;

use client::pb;
use client::{Client, Error};

use crate::{KeyStatus, KeyView, OpKind, Outcome, Value};

/// Longest a client waits for one call before recording it as unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub fn alias(key: &str) -> String {
    format!("alias/{key}")
}

fn linearizable() -> Option<pb::Consistency> {
    Some(pb::Consistency { level: Some(pb::consistency::Level::Linearizable(pb::Linearizable {})) })
}

fn view(meta: Option<pb::KeyMetadata>) -> Result<KeyView, Failure> {
    let meta = meta.ok_or_else(|| Failure::Malformed("response without key metadata".into()))?;
    let status = match pb::KeyState::try_from(meta.state) {
        Ok(pb::KeyState::Enabled) => KeyStatus::Enabled,
        Ok(pb::KeyState::Disabled) => KeyStatus::Disabled,
        Ok(pb::KeyState::PendingDeletion) => KeyStatus::PendingDeletion,
        Ok(pb::KeyState::Destroyed) => KeyStatus::Destroyed,
        _ => return Err(Failure::Malformed(format!("unknown key state {}", meta.state))),
    };
    Ok(KeyView { key_id: meta.key_id, status, primary: meta.primary_version })
}

fn context(key: &str) -> HashMap<String, String> {
    HashMap::from([("purpose".to_string(), format!("workload-{key}"))])
}

/// The regions a workload key is restricted to, from its name: `k3-in-region-b` is allowed
/// only in `region-b` (the simulator names such keys).
fn allowed_regions(key: &str) -> Vec<String> {
    key.split_once("-in-").map(|(_, region)| vec![region.to_string()]).unwrap_or_default()
}

/// Why an operation did not complete.
enum Failure {
    Call(Error),
    /// The answer did not make sense; whether the call took effect is unknown.
    Malformed(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Call(e)
    }
}

/// Runs one operation and returns its outcome.
pub async fn execute(client: &Client, key: &str, kind: &OpKind, token: &str) -> Outcome {
    let call = run(client, key, kind, token);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Outcome::Unknown("client timeout".into()),
        Ok(Ok(v)) => Outcome::Ok(v),
        // A call that was not refused outright may have taken effect (`client::ErrorKind`).
        Ok(Err(Failure::Call(e))) if e.effect_in_doubt() => Outcome::Unknown(format!("{:?}", e.code())),
        Ok(Err(Failure::Call(e))) => Outcome::Fail(format!("{:?}", e.code()), e.message().chars().take(120).collect()),
        Ok(Err(Failure::Malformed(why))) => Outcome::Unknown(why),
    }
}

/// Runs one operation again and again (every 500 ms) until it is answered
/// ([`Outcome::answered`]) or `bound` has passed; the last outcome. For checks after healing,
/// where durability is the question, not availability: a node that cannot answer for now (a
/// leadership transfer under way, say) is asked again.
pub async fn execute_until_answered(
    client: &Client,
    key: &str,
    kind: &OpKind,
    token: &str,
    bound: Duration,
) -> Outcome {
    let give_up = tokio::time::Instant::now() + bound;
    loop {
        let outcome = execute(client, key, kind, token).await;
        if outcome.answered() || tokio::time::Instant::now() >= give_up {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(client: &Client, key: &str, kind: &OpKind, token: &str) -> Result<Value, Failure> {
    let k = alias(key);
    let key_call = |r: Result<pb::KeyResponse, Error>| view(r?.key).map(Value::Key);
    match kind {
        OpKind::Create | OpKind::CreateByToken => {
            let base = pb::CreateKeyRequest {
                spec: pb::KeySpec::Aes256GcmSiv as i32,
                usage: pb::KeyUsage::EncryptDecrypt as i32,
                ..Default::default()
            };
            let req = if *kind == OpKind::Create {
                pb::CreateKeyRequest {
                    alias: key.to_string(),
                    idempotency_token: token.to_string(),
                    allowed_regions: allowed_regions(key),
                    ..base
                }
            } else {
                pb::CreateKeyRequest { description: key.to_string(), idempotency_token: key.to_string(), ..base }
            };
            key_call(client.create_key(req).await)
        }
        OpKind::Rotate => {
            let req = pb::RotateKeyRequest { key: k, idempotency_token: token.to_string() };
            key_call(client.rotate_key(req).await)
        }
        OpKind::Disable | OpKind::Enable | OpKind::CancelDeletion => {
            let req = pb::KeyRequest { key: k, idempotency_token: token.to_string() };
            let r = match kind {
                OpKind::Disable => client.disable_key(req).await,
                OpKind::Enable => client.enable_key(req).await,
                _ => client.cancel_key_deletion(req).await,
            };
            key_call(r)
        }
        OpKind::ScheduleDeletion => {
            let req =
                pb::ScheduleKeyDeletionRequest { key: k, pending_window_days: 7, idempotency_token: token.to_string() };
            key_call(client.schedule_key_deletion(req).await)
        }
        OpKind::Describe { .. } => {
            let req = pb::DescribeKeyRequest { key: k, consistency: linearizable() };
            key_call(client.describe_key(req).await)
        }
        OpKind::Encrypt { plaintext } => {
            let req = pb::EncryptRequest {
                key: k,
                plaintext: plaintext.clone(),
                encryption_context: context(key),
                consistency: linearizable(),
            };
            let r = client.encrypt(req).await?;
            Ok(Value::Ciphertext {
                ciphertext: r.ciphertext,
                plaintext: plaintext.clone(),
                key_id: r.key_id,
                version: r.key_version,
            })
        }
        OpKind::DataKey => {
            let req = pb::GenerateDataKeyRequest {
                key: k,
                encryption_context: context(key),
                number_of_bytes: 32,
                consistency: linearizable(),
            };
            let r = client.generate_data_key(req).await?;
            Ok(Value::Ciphertext {
                ciphertext: r.ciphertext,
                plaintext: r.plaintext,
                key_id: r.key_id,
                version: r.key_version,
            })
        }
        OpKind::Decrypt { ciphertext, .. } => {
            let req = pb::DecryptRequest {
                ciphertext: ciphertext.clone(),
                encryption_context: context(key),
                consistency: linearizable(),
                key: k,
            };
            let r = client.decrypt(req).await?;
            Ok(Value::Plaintext { plaintext: r.plaintext, version: r.key_version })
        }
        OpKind::Grant { grantee } => {
            let req = pb::CreateGrantRequest {
                key: k,
                grantee: grantee.clone(),
                operations: vec!["Encrypt".into()],
                idempotency_token: token.to_string(),
                ..Default::default()
            };
            let grant = client.create_grant(req).await?.grant;
            let grant = grant.ok_or_else(|| Failure::Malformed("CreateGrant answered without a grant".into()))?;
            Ok(Value::Grant { grant_id: grant.grant_id })
        }
        OpKind::Revoke { grant_id } => {
            client.revoke_grant(pb::RevokeGrantRequest { key: k, grant_id: grant_id.clone() }).await?;
            Ok(Value::Done)
        }
        OpKind::PutPolicy { owner, encrypters } => {
            let policy = policy_json(owner, encrypters);
            client.put_key_policy(pb::PutKeyPolicyRequest { key: k, policy }).await?;
            Ok(Value::Done)
        }
    }
}

/// The policy `OpKind::PutPolicy` puts: the owner may do everything, the encrypters Encrypt.
fn policy_json(owner: &str, encrypters: &[String]) -> String {
    let mut statements = vec![serde_json::json!({"principals": [owner], "operations": ALL_OPERATIONS})];
    if !encrypters.is_empty() {
        statements.push(serde_json::json!({"principals": encrypters, "operations": ["Encrypt"]}));
    }
    serde_json::json!({ "statements": statements }).to_string()
}

/// Every operation a key policy can name (the owner's statement).
const ALL_OPERATIONS: [&str; 23] = [
    "Encrypt",
    "Decrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "Sign",
    "Verify",
    "GetPublicKey",
    "Describe",
    "Update",
    "Rotate",
    "Enable",
    "Disable",
    "ScheduleDeletion",
    "CancelDeletion",
    "SetAllowedRegions",
    "ManageAliases",
    "Tag",
    "GetPolicy",
    "PutPolicy",
    "CreateGrant",
    "RevokeGrant",
];

/// Runs a write until its outcome is known or `bound` has passed, as one operation: asked
/// again (with the same token) while the outcome is unknown, so the op spans every attempt and
/// took effect somewhere inside it. A revoke that finds its grant gone after an unknown
/// attempt was done by that attempt. For the access workload, whose checker needs to know
/// which grants exist (`check::revocation`).
pub async fn execute_settled(client: &Client, key: &str, kind: &OpKind, token: &str, bound: Duration) -> Outcome {
    let give_up = tokio::time::Instant::now() + bound;
    let mut in_doubt = false;
    loop {
        let outcome = execute(client, key, kind, token).await;
        match outcome {
            Outcome::Unknown(_) if tokio::time::Instant::now() < give_up => {
                in_doubt = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Outcome::Fail(code, _) if in_doubt && code == "NotFound" && matches!(kind, OpKind::Revoke { .. }) => {
                return Outcome::Ok(Value::Done)
            }
            other => return other,
        }
    }
}
