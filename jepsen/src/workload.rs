//! The client workloads, run together by every client:
//! - **register**: each key's metadata is a register — RotateKey, DescribeKey (linearizable),
//!   Disable/Enable, ScheduleKeyDeletion/CancelKeyDeletion;
//! - **crypto**: Encrypt of unique plaintexts and data keys on the same keys, and Decrypt of
//!   the client's own ciphertexts; after healing every acknowledged ciphertext must decrypt to
//!   its plaintext at every node;
//! - **create**: CreateKey without an alias under a fresh idempotency token, retried with the
//!   same token while the outcome is unknown: no duplicates, no losses;
//! - **access**: the keys' owner grants Encrypt on its own keys to a second principal
//!   (`client/grantee`) and revokes it, and puts policies that name it or not, while that
//!   principal's client encrypts: no use succeeds that began after the revoke or policy that
//!   forbids it was acknowledged (`history::check::revocation`).
//!
//! Keys are independent registers (Jepsen's `independent`): a few are active at a time, and
//! each is retired after `ops_per_key` operations for a fresh one, so every key's history
//! stays short enough for the linearizability search.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::Client;
use history::ops::execute;
use history::{OpKind, Outcome, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::recorder::Recorder;

/// Which workloads the clients mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Register,
    Crypto,
    Create,
    Access,
}

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub workloads: Vec<Workload>,
    /// Operations per second over all clients (each client sleeps a random time averaging
    /// `clients / rate` between calls).
    pub rate: f64,
    pub active_keys: usize,
    pub ops_per_key: u64,
}

/// The keys in play: `active` are used now, `all` every key ever handed out.
#[derive(Debug)]
pub struct KeyPool {
    active: Vec<(String, u64)>,
    next: u64,
    limit: u64,
    pub all: Vec<String>,
}

impl KeyPool {
    pub fn new(active: usize, limit: u64) -> Self {
        let mut pool = Self { active: Vec::new(), next: 0, limit: limit.max(1), all: Vec::new() };
        for _ in 0..active.max(1) {
            let k = pool.fresh();
            pool.active.push((k, 0));
        }
        pool
    }

    fn fresh(&mut self) -> String {
        let k = format!("k{}", self.next);
        self.next += 1;
        self.all.push(k.clone());
        k
    }

    /// A random active key; a key that reached its limit is replaced by a fresh one.
    fn pick(&mut self, rng: &mut ChaCha8Rng) -> String {
        let i = rng.gen_range(0..self.active.len());
        let key = self.active[i].0.clone();
        self.active[i].1 += 1;
        if self.active[i].1 >= self.limit {
            let k = self.fresh();
            self.active[i] = (k, 0);
        }
        key
    }
}

/// What a client may do next, by weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Describe,
    Rotate,
    Disable,
    Enable,
    ScheduleDeletion,
    CancelDeletion,
    Encrypt,
    DataKey,
    Decrypt,
    CreateByToken,
}

fn table(workloads: &[Workload]) -> Vec<(Choice, u32)> {
    let mut t = Vec::new();
    if workloads.contains(&Workload::Register) {
        t.extend([
            (Choice::Describe, 20),
            (Choice::Rotate, 15),
            (Choice::Disable, 6),
            (Choice::Enable, 12),
            (Choice::ScheduleDeletion, 2),
            (Choice::CancelDeletion, 5),
        ]);
    }
    if workloads.contains(&Workload::Crypto) {
        t.extend([(Choice::Encrypt, 20), (Choice::DataKey, 7), (Choice::Decrypt, 13)]);
    }
    if workloads.contains(&Workload::Create) {
        t.push((Choice::CreateByToken, 8));
    }
    t
}

fn choose(table: &[(Choice, u32)], rng: &mut ChaCha8Rng) -> Choice {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total.max(1));
    for (c, w) in table {
        if roll < *w {
            return *c;
        }
        roll -= w;
    }
    table.first().map(|(c, _)| *c).unwrap_or(Choice::Describe)
}

/// Attempts of one idempotent create before the client gives up on its token.
const CREATE_ATTEMPTS: usize = 4;

/// One client: random operations until `stop`, each recorded with its outcome.
#[allow(clippy::too_many_arguments)]
pub async fn run_client(
    name: String,
    client: Client,
    pool: Arc<Mutex<KeyPool>>,
    recorder: Arc<Recorder>,
    options: WorkloadOptions,
    clients: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let table = table(&options.workloads);
    if table.is_empty() {
        return;
    }
    let mean_gap = Duration::from_secs_f64(clients as f64 / options.rate.max(0.001));
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut mine: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(mean_gap.mul_f64(rng.gen_range(0.0..2.0))).await;
        n += 1;
        let choice = choose(&table, &mut rng);
        if choice == Choice::CreateByToken {
            let token = format!("t-{name}-{n}");
            for _ in 0..CREATE_ATTEMPTS {
                let outcome = record(&recorder, &client, &name, &token, OpKind::CreateByToken, "").await;
                if !matches!(outcome, Outcome::Unknown(_)) {
                    break;
                }
            }
            continue;
        }
        if choice == Choice::Decrypt && !mine.is_empty() {
            let (key, ciphertext, plaintext) = mine[rng.gen_range(0..mine.len())].clone();
            record(&recorder, &client, &name, &key, OpKind::Decrypt { ciphertext, plaintext, node: None }, "").await;
            continue;
        }
        let key = match pool.lock() {
            Ok(mut p) => p.pick(&mut rng),
            Err(p) => p.into_inner().pick(&mut rng),
        };
        if created.insert(key.clone()) {
            // Every client creates each key it uses with the key's one token: one key results.
            record(&recorder, &client, &name, &key, OpKind::Create, &format!("create-{key}")).await;
        }
        let kind = match choice {
            Choice::Describe => OpKind::Describe { node: None },
            Choice::Rotate => OpKind::Rotate,
            Choice::Disable => OpKind::Disable,
            Choice::Enable => OpKind::Enable,
            Choice::ScheduleDeletion => OpKind::ScheduleDeletion,
            Choice::CancelDeletion => OpKind::CancelDeletion,
            Choice::DataKey => OpKind::DataKey,
            _ => OpKind::Encrypt { plaintext: format!("{name}-{n}").into_bytes() },
        };
        let outcome = record(&recorder, &client, &name, &key, kind, &format!("{name}-{n}")).await;
        if let Outcome::Ok(Value::Ciphertext { ciphertext, plaintext, .. }) = outcome {
            mine.push((key, ciphertext, plaintext));
        }
    }
}

/// Runs one operation through the client and records it.
pub async fn record(recorder: &Recorder, client: &Client, who: &str, key: &str, kind: OpKind, token: &str) -> Outcome {
    let op = recorder.invoke(who, key, kind.clone());
    let outcome = client::with_request_id(Recorder::request_id(op), execute(client, key, &kind, token)).await;
    recorder.complete(op, outcome.clone());
    outcome
}

/// The access workload's keys (its own, created by its owner, never retired).
pub fn access_keys() -> Vec<String> {
    (0..2).map(|i| format!("access-{i}")).collect()
}

/// The access workload's owner: creates its keys, then grants, revokes and puts policies
/// (`history::access::AccessManager`) until `stop`. `owner` is its client's principal.
pub async fn run_access_manager(
    client: Client,
    owner: String,
    recorder: Arc<Recorder>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let name = "access";
    let keys = access_keys();
    for key in &keys {
        while !stop.load(Ordering::Relaxed) {
            let outcome = record(&recorder, &client, name, key, OpKind::Create, &format!("create-{key}")).await;
            if matches!(outcome, Outcome::Ok(_)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut manager = history::access::AccessManager::new(keys, &owner);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (i, key, kind) = manager.next(&mut rng);
        let op = recorder.invoke(name, &key, kind.clone());
        let token = format!("{name}-{n}");
        let run = manager.run(&client, i, &kind, &token);
        let outcome = client::with_request_id(Recorder::request_id(op), run).await;
        recorder.complete(op, outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
    }
}

/// The access workload's grantee: Encrypts on the access keys as `client/grantee` until `stop`.
pub async fn run_grantee(client: Client, recorder: Arc<Recorder>, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keys = access_keys();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = &keys[rng.gen_range(0..keys.len())];
        let kind = OpKind::Encrypt { plaintext: format!("grantee-{n}").into_bytes() };
        record(&recorder, &client, "grantee", key, kind, "").await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
    }
}
