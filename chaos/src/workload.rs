//! Concurrent clients: the real client library against random nodes, every call recorded
//! with its outcome (ok, fail, or unknown when it timed out or the connection broke).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::pb;
use client::{Client, ClientOptions, ClientTlsConfig};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tonic::{Code, Status};

use crate::history::{KeyStatus, KeyView, OpKind, Outcome, Recorder, Value};
use crate::plan::{shuffle, ClientPlan, Plan};

/// Longest a client waits for one call before recording it as unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub fn alias(key: &str) -> String {
    format!("alias/{key}")
}

fn linearizable() -> Option<pb::Consistency> {
    Some(pb::Consistency { level: Some(pb::consistency::Level::Linearizable(pb::Linearizable {})) })
}

fn view(meta: Option<pb::KeyMetadata>) -> Result<KeyView, Status> {
    let meta = meta.ok_or_else(|| Status::internal("response without key metadata"))?;
    let status = match pb::KeyState::try_from(meta.state) {
        Ok(pb::KeyState::Enabled) => KeyStatus::Enabled,
        Ok(pb::KeyState::Disabled) => KeyStatus::Disabled,
        Ok(pb::KeyState::PendingDeletion) => KeyStatus::PendingDeletion,
        Ok(pb::KeyState::Destroyed) => KeyStatus::Destroyed,
        _ => return Err(Status::internal(format!("unknown key state {}", meta.state))),
    };
    Ok(KeyView { key_id: meta.key_id, status, primary: meta.primary_version })
}

fn context(key: &str) -> HashMap<String, String> {
    HashMap::from([("purpose".to_string(), format!("chaos-{key}"))])
}

/// The regions a workload key is restricted to, from its name (`Plan::key_names`).
fn allowed_regions(key: &str) -> Vec<String> {
    key.split_once("-in-").map(|(_, region)| vec![region.to_string()]).unwrap_or_default()
}

/// Whether a failed call may still have taken effect.
fn indeterminate(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal)
}

/// Runs one operation and returns its outcome.
pub async fn execute(client: &Client, key: &str, kind: &OpKind, token: &str) -> Outcome {
    let call = run(client, key, kind, token);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Outcome::Unknown("client timeout".into()),
        Ok(Ok(v)) => Outcome::Ok(v),
        Ok(Err(s)) if indeterminate(&s) => Outcome::Unknown(format!("{:?}", s.code())),
        Ok(Err(s)) => Outcome::Fail(format!("{:?}", s.code()), s.message().chars().take(120).collect()),
    }
}

async fn run(client: &Client, key: &str, kind: &OpKind, token: &str) -> Result<Value, Status> {
    let k = alias(key);
    let key_call = |r: Result<pb::KeyResponse, Status>| r.and_then(|r| view(r.key)).map(Value::Key);
    match kind {
        OpKind::Create => {
            let req = pb::CreateKeyRequest {
                spec: pb::KeySpec::Aes256GcmSiv as i32,
                usage: pb::KeyUsage::EncryptDecrypt as i32,
                alias: key.to_string(),
                idempotency_token: token.to_string(),
                allowed_regions: allowed_regions(key),
                ..Default::default()
            };
            key_call(
                client
                    .kms(|mut c| {
                        let req = req.clone();
                        async move { c.create_key(req).await }
                    })
                    .await,
            )
        }
        OpKind::Rotate => {
            let req = pb::RotateKeyRequest { key: k, idempotency_token: token.to_string() };
            key_call(
                client
                    .kms(|mut c| {
                        let req = req.clone();
                        async move { c.rotate_key(req).await }
                    })
                    .await,
            )
        }
        OpKind::Disable | OpKind::Enable | OpKind::CancelDeletion => {
            let req = pb::KeyRequest { key: k, idempotency_token: token.to_string() };
            let r = client
                .kms(|mut c| {
                    let req = req.clone();
                    let kind = kind.clone();
                    async move {
                        match kind {
                            OpKind::Disable => c.disable_key(req).await,
                            OpKind::Enable => c.enable_key(req).await,
                            _ => c.cancel_key_deletion(req).await,
                        }
                    }
                })
                .await;
            key_call(r)
        }
        OpKind::ScheduleDeletion => {
            let req =
                pb::ScheduleKeyDeletionRequest { key: k, pending_window_days: 7, idempotency_token: token.to_string() };
            key_call(
                client
                    .kms(|mut c| {
                        let req = req.clone();
                        async move { c.schedule_key_deletion(req).await }
                    })
                    .await,
            )
        }
        OpKind::Describe { .. } => {
            let req = pb::DescribeKeyRequest { key: k, consistency: linearizable() };
            key_call(
                client
                    .kms(|mut c| {
                        let req = req.clone();
                        async move { c.describe_key(req).await }
                    })
                    .await,
            )
        }
        OpKind::Encrypt { plaintext } => {
            let req = pb::EncryptRequest {
                key: k,
                plaintext: plaintext.clone(),
                encryption_context: context(key),
                consistency: linearizable(),
            };
            let r = client
                .kms(|mut c| {
                    let req = req.clone();
                    async move { c.encrypt(req).await }
                })
                .await?;
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
            let r = client
                .kms(|mut c| {
                    let req = req.clone();
                    async move { c.generate_data_key(req).await }
                })
                .await?;
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
            let r = client
                .kms(|mut c| {
                    let req = req.clone();
                    async move { c.decrypt(req).await }
                })
                .await?;
            Ok(Value::Plaintext { plaintext: r.plaintext, version: r.key_version })
        }
    }
}

/// The production client over the simulated network, starting from `addrs`: it discovers the
/// rest of the cluster, prefers `region`, and draws its jitter from `seed`.
pub fn client_for(tls: &ClientTlsConfig, addrs: &[String], seed: u64, region: Option<&str>) -> anyhow::Result<Client> {
    let options =
        ClientOptions { region: region.map(str::to_string), rng_seed: Some(seed), ..ClientOptions::default() };
    make_client(tls, addrs, options)
}

/// A client that talks to `addr` only (no discovery): checks of one node.
pub fn pinned_client(tls: &ClientTlsConfig, addr: &str, seed: u64) -> anyhow::Result<Client> {
    let options = ClientOptions { discover: false, rng_seed: Some(seed), ..ClientOptions::default() };
    make_client(tls, &[addr.to_string()], options)
}

fn make_client(tls: &ClientTlsConfig, addrs: &[String], options: ClientOptions) -> anyhow::Result<Client> {
    let tls = tls.clone();
    let connect: client::Connect = Arc::new(move |addr: &str| {
        crate::net::client_channel(addr, &tls)
            .map_err(|e| client::ClientError::InvalidEndpoint(addr.to_string(), e.to_string()))
    });
    Ok(Client::with_connector(addrs, options, connect)?)
}

/// One workload client: creates every key (with a shared idempotency token, so concurrent
/// creates of one key must yield one key), then issues random operations until `stop`.
pub async fn run_client(
    plan: Arc<Plan>,
    me: ClientPlan,
    tls: ClientTlsConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(me.seed);
    let mut addrs: Vec<String> = plan.voters.iter().map(|n| n.addr()).collect();
    shuffle(&mut addrs, &mut rng);
    let client = client_for(&tls, &addrs, me.seed, Some(&me.region)).map_err(|e| e.to_string())?;
    let keys: Vec<String> = plan.key_names();
    for key in &keys {
        let op = recorder.invoke(&me.name, key, OpKind::Create);
        let outcome = execute(&client, key, &OpKind::Create, &format!("create-{key}")).await;
        recorder.complete(op, outcome);
    }
    let mut mine: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = keys[rng.gen_range(0..keys.len())].clone();
        let roll = rng.gen_range(0..100);
        let kind = match roll {
            0..=19 => OpKind::Describe { node: None },
            20..=39 => OpKind::Encrypt { plaintext: format!("{}-{n}", me.name).into_bytes() },
            40..=52 if !mine.is_empty() => {
                let (k, ct, pt) = mine[rng.gen_range(0..mine.len())].clone();
                let op = recorder.invoke(
                    &me.name,
                    &k,
                    OpKind::Decrypt { ciphertext: ct.clone(), plaintext: pt.clone(), node: None },
                );
                let kind = OpKind::Decrypt { ciphertext: ct, plaintext: pt, node: None };
                let outcome = execute(&client, &k, &kind, "").await;
                recorder.complete(op, outcome);
                continue;
            }
            40..=59 => OpKind::DataKey,
            60..=74 => OpKind::Rotate,
            75..=82 => OpKind::Disable,
            83..=93 => OpKind::Enable,
            94..=96 => OpKind::ScheduleDeletion,
            _ => OpKind::CancelDeletion,
        };
        let token = format!("{}-{n}", me.name);
        let op = recorder.invoke(&me.name, &key, kind.clone());
        let outcome = execute(&client, &key, &kind, &token).await;
        if let Outcome::Ok(Value::Ciphertext { ciphertext, plaintext, .. }) = &outcome {
            mine.push((key.clone(), ciphertext.clone(), plaintext.clone()));
        }
        recorder.complete(op, outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..50))).await;
    }
    Ok(())
}
