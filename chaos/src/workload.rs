//! Concurrent clients: the real client library against random nodes, every call recorded
//! with its outcome (ok, fail, or unknown when it timed out or the connection broke).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{Client, ClientOptions, ClientTlsConfig};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::history::{OpKind, Outcome, Recorder, Value};
use crate::plan::{shuffle, ClientPlan, Plan};
pub use ::history::ops::{execute, execute_until_answered, CALL_TIMEOUT};

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
            .map_err(|e| client::SetupError::InvalidEndpoint(addr.to_string(), e.to_string()))
    });
    Ok(Client::with_connector(addrs, options, connect)?)
}

/// A workload client's RNG (from its seed) and its client, starting from the voters in a
/// seeded order and preferring its region.
fn seeded_client(plan: &Plan, me: &ClientPlan, tls: &ClientTlsConfig) -> Result<(ChaCha8Rng, Client), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(me.seed);
    let mut addrs: Vec<String> = plan.voters.iter().map(|n| n.addr()).collect();
    shuffle(&mut addrs, &mut rng);
    let client = client_for(tls, &addrs, me.seed, Some(&me.region)).map_err(|e| e.to_string())?;
    Ok((rng, client))
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
    let (mut rng, client) = seeded_client(&plan, &me, &tls)?;
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

/// The access workload's owner side (the keys' owner principal, like the other workload
/// clients): `history::access::AccessManager` on the plan's keys.
pub async fn run_access_manager(
    plan: Arc<Plan>,
    me: ClientPlan,
    tls: ClientTlsConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut rng, client) = seeded_client(&plan, &me, &tls)?;
    // (The other clients create the keys: a grant on one not made yet fails, NotFound.)
    let mut manager = ::history::access::AccessManager::new(plan.key_names(), crate::net::APP_PRINCIPAL);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (i, key, kind) = manager.next(&mut rng);
        let op = recorder.invoke(&me.name, &key, kind.clone());
        let outcome = manager.run(&client, i, &kind, &format!("{}-{n}", me.name)).await;
        recorder.complete(op, outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
    }
    Ok(())
}

/// The access workload's grantee side: Encrypts on random keys as the grantee principal, which
/// may do only what the manager's grants and policies allow at the time.
pub async fn run_grantee(
    plan: Arc<Plan>,
    me: ClientPlan,
    tls: ClientTlsConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut rng, client) = seeded_client(&plan, &me, &tls)?;
    let keys: Vec<String> = plan.key_names();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = &keys[rng.gen_range(0..keys.len())];
        let kind = OpKind::Encrypt { plaintext: format!("{}-{n}", me.name).into_bytes() };
        let op = recorder.invoke(&me.name, key, kind.clone());
        let outcome = execute(&client, key, &kind, "").await;
        recorder.complete(op, outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..50))).await;
    }
    Ok(())
}
