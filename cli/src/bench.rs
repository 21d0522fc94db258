//! `keyquorum bench`: latency of the two paths that matter for custody, against a running
//! cluster. A **cold** call is the first use of a key version at a node that has not cached it:
//! read index, t+1 decryption shares gathered over mTLS, combine, key-check, then AES. A
//! **warm** call finds the material cached and pays the read index and AES only. Keys are
//! created at the first endpoint and used at the second (with `--region`: created at a node
//! outside that region), so every first use is cold. Each call encrypts 1 KiB.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use client::{pb, Client, ClientOptions};

use crate::common::{parse_consistency, Common};
use crate::output::Output;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Cold Encrypts to time (one new key each).
    #[arg(long, default_value_t = 50)]
    cold: usize,
    /// Warm Encrypts to time.
    #[arg(long, default_value_t = 1000)]
    warm: usize,
    /// Concurrent callers of the warm Encrypts (a closed loop: each calls again as soon as it
    /// is answered); the figures are then throughput and per-call latency under that load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    clients: u64,
    /// Connections the warm callers are spread over, in turn: each its own client, as callers
    /// in separate processes would have (one, the default, multiplexes every caller over one
    /// HTTP/2 connection).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// `linearizable` (a read index at the leader per call, shared by concurrent calls) or
    /// `bounded:<ms>` (served from the node's state if it heard from the leader within ms).
    #[arg(long, default_value = "linearizable", value_parser = parse_consistency)]
    consistency: pb::Consistency,
    #[command(flatten)]
    common: Common,
}

fn describe(c: &pb::Consistency) -> String {
    match &c.level {
        Some(pb::consistency::Level::BoundedStaleness(b)) => format!("bounded staleness {} ms", b.max_staleness_ms),
        _ => "linearizable".into(),
    }
}

/// Latency figures of one kind of call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_second: f64,
}

impl Figures {
    fn of(mut samples: Vec<Duration>, wall: Duration) -> Self {
        samples.sort();
        let n = samples.len();
        // Nearest rank: the smallest sample with at least q% of the samples at or below it.
        let at = |q: usize| samples.get((n * q).div_ceil(100).max(1) - 1).copied().unwrap_or_default();
        Self { n, p50: at(50), p99: at(99), max: at(100), per_second: n as f64 / wall.as_secs_f64().max(1e-9) }
    }

    fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "n": self.n, "p50_ms": ms(self.p50), "p99_ms": ms(self.p99), "max_ms": ms(self.max),
            "per_second": self.per_second,
        })
    }

    fn line(&self, what: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{what:<44} n={:<5} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  {:>7.0}/s",
            self.n,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.per_second
        )
    }
}

async fn encrypt(c: &Client, key: &str, consistency: &pb::Consistency) -> anyhow::Result<Duration> {
    let req = pb::EncryptRequest {
        key: key.to_string(),
        plaintext: vec![0x6b; 1024],
        encryption_context: Default::default(),
        consistency: Some(*consistency),
    };
    let started = Instant::now();
    c.encrypt(req).await.map_err(|s| anyhow::anyhow!("encrypt under {key} failed: {}", s.message()))?;
    Ok(started.elapsed())
}

/// Runs `cold` cold Encrypts one at a time and `warm` warm ones from `clients` concurrent
/// callers, and prints the figures.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs { cold, warm, clients, connections, consistency, common } = args;
    let tls = common.tls()?;
    let output = common.output;
    let pinned = ClientOptions { discover: false, ..common.client_options() };
    let (at_creator, at_user, user, more_users) = match (&common.endpoints[..], &common.region) {
        ([first, ..], Some(region)) => {
            let at_user = Client::with_options(&common.endpoints, tls.clone(), common.client_options())?;
            // Learn the members and their regions before the first timed call.
            at_user
                .discover()
                .await
                .map_err(|s| anyhow::anyhow!("cannot learn the cluster's members: {}", s.message()))?;
            // Keys are created outside the client's region: the node that creates a key
            // caches its material, and the client's own region would then never be cold.
            let creator = at_user
                .regions()
                .into_iter()
                .find(|(_, r)| r.as_deref().is_some_and(|r| r != region))
                .map_or_else(|| first.clone(), |(addr, _)| addr);
            let at_creator = Client::with_options(&[creator], tls.clone(), pinned)?;
            let (endpoints, options) = (common.endpoints.clone(), common.client_options());
            let more = move || Client::with_options(&endpoints, tls.clone(), options.clone());
            (
                at_creator,
                at_user,
                format!("a client in {region}"),
                Box::new(more) as Box<dyn Fn() -> Result<Client, client::SetupError>>,
            )
        }
        ([creator, user, ..], None) => {
            let at_creator = Client::with_options(&[creator], tls.clone(), pinned.clone())?;
            let at_user = Client::with_options(&[user], tls.clone(), pinned.clone())?;
            let endpoint = user.clone();
            let more = move || Client::with_options(std::slice::from_ref(&endpoint), tls.clone(), pinned.clone());
            (at_creator, at_user, user.clone(), Box::new(more) as Box<dyn Fn() -> Result<Client, client::SetupError>>)
        }
        _ => anyhow::bail!(
            "bench needs two endpoints (keys are created at the first and used at the second), or --region"
        ),
    };
    let run_id: u32 = rand::random();
    let mut keys = Vec::with_capacity(cold.max(1));
    for i in 0..cold.max(1) {
        let req = pb::CreateKeyRequest {
            spec: pb::KeySpec::Aes256GcmSiv as i32,
            description: "keyquorum bench".into(),
            idempotency_token: format!("bench-{run_id:08x}-{i}"),
            ..Default::default()
        };
        let created = at_creator
            .create_key(req)
            .await
            .map_err(|s| anyhow::anyhow!("creating a bench key failed: {}", s.message()))?;
        keys.push(created.key.map(|k| k.key_id).unwrap_or_default());
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(cold);
    for key in keys.iter().take(cold) {
        samples.push(encrypt(&at_user, key, &consistency).await?);
    }
    let cold_figures = Figures::of(samples, started.elapsed());
    // One untimed call caches the material (when `cold` is 0, nothing has yet).
    encrypt(&at_user, &keys[0], &consistency).await?;
    let mut users = vec![std::sync::Arc::new(at_user)];
    for _ in 1..connections.min(clients) {
        let c = more_users()?;
        if common.region.is_some() {
            c.discover().await.map_err(|s| anyhow::anyhow!("cannot learn the cluster's members: {}", s.message()))?;
        }
        // Untimed: the connection's handshake.
        encrypt(&c, &keys[0], &consistency).await?;
        users.push(std::sync::Arc::new(c));
    }
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(warm));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (c, key, left) = (users[i as usize % users.len()].clone(), keys[0].clone(), left.clone());
        callers.spawn(async move {
            let mut samples = Vec::new();
            while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                samples.push(encrypt(&c, &key, &consistency).await?);
            }
            anyhow::Ok(samples)
        });
    }
    let mut samples = Vec::with_capacity(warm);
    while let Some(done) = callers.join_next().await {
        samples.extend(done??);
    }
    let warm_figures = Figures::of(samples, started.elapsed());
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"endpoint": user, "consistency": describe(&consistency), "clients": clients, "connections": users.len(), "cold_encrypt": cold_figures.json(), "warm_encrypt": warm_figures.json()})
        ),
        Output::Text => {
            println!("{}", cold_figures.line(&format!("cold Encrypt (unwrap with t+1 shares) at {user}")));
            println!("{}", warm_figures.line(&format!("warm Encrypt (cached material) at {user}")));
            println!(
                "cold: one call at a time; warm: {clients} concurrent callers over {} connections; {}; {} bench \
                 keys left behind (disable or schedule deletion)",
                users.len(),
                describe(&consistency),
                keys.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let f = Figures::of(samples, Duration::from_secs(1));
        let ms = Duration::from_millis;
        assert_eq!((f.n, f.p50, f.p99, f.max), (100, ms(50), ms(99), ms(100)));
        assert_eq!(f.per_second, 100.0);
        let empty = Figures::of(Vec::new(), Duration::from_secs(1));
        assert_eq!((empty.n, empty.p50), (0, Duration::ZERO));
    }
}
