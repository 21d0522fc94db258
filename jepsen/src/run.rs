//! One test run: start the cluster, run the clients and the nemesis for the time limit, heal,
//! read everything back from every node, check the history, and write the run's directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use client::{pb, Client, ClientOptions};
use history::check::idempotent_create::Listing;
use history::ops::execute_until_answered;
use history::{OpKind, Outcome};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use testbed::{region_name, LocalCluster, Spec, WanOptions};

use crate::nemesis::{self, Fault, NemesisOptions, SharedCluster};
use crate::recorder::Recorder;
use crate::results::{self, Results};
use crate::trail;
use crate::workload::{self, KeyPool, Workload, WorkloadOptions};

/// libfaketime as Debian installs it (`apt-get install faketime`, which `scripts/setup.sh`
/// does): `/usr/lib/<multiarch>/faketime/libfaketime.so.1`.
pub fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten().map(|d| d.path().join("faketime/libfaketime.so.1")).find(|p| p.exists())
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The run's directory; must not exist or be empty.
    pub out: PathBuf,
    pub nodes: u64,
    pub regions: usize,
    pub time_limit: Duration,
    pub clients: usize,
    pub workload: WorkloadOptions,
    pub nemesis: NemesisOptions,
    /// One-way latency between regions through the relay.
    pub latency_ms: u64,
    /// Seeds the workload's and the nemesis's choices (timing still differs between runs).
    pub seed: u64,
    /// The `keyquorum` binary.
    pub exe: PathBuf,
    /// More environment for every node (`FAILPOINTS` for a failpoint build).
    pub node_env: Vec<(String, String)>,
    /// How long the final reads may take in all: past it, the reads left are skipped (and
    /// reported), so a cluster that never comes back ends the run instead of hanging it.
    pub final_budget: Duration,
}

impl Options {
    /// A short run with every workload and fault: what the test suite runs.
    pub fn quick(out: PathBuf, exe: PathBuf) -> Self {
        Self {
            out,
            nodes: 5,
            regions: 3,
            time_limit: Duration::from_secs(60),
            clients: 6,
            workload: WorkloadOptions {
                workloads: vec![Workload::Register, Workload::Crypto, Workload::Create, Workload::Access],
                rate: 30.0,
                active_keys: 4,
                ops_per_key: 120,
            },
            nemesis: NemesisOptions {
                faults: vec![
                    Fault::Kill,
                    Fault::KillAll,
                    Fault::Pause,
                    Fault::Partition,
                    Fault::Clock,
                    Fault::Member,
                    Fault::Transfer,
                    Fault::RotateRoot,
                ],
                interval: Duration::from_secs(2),
                hold: (Duration::from_secs(2), Duration::from_secs(5)),
            },
            latency_ms: 0,
            seed: 1,
            exe,
            node_env: Vec::new(),
            final_budget: Duration::from_secs(180),
        }
    }
}

/// A client in region `r` (through the relay, from that region's client address).
fn client_in(cluster: &LocalCluster, r: usize, seed: u64, discover: bool) -> anyhow::Result<Client> {
    client_as(cluster, "client", r, seed, discover)
}

/// [`client_in`] presenting the certificate `stem` of the cluster's tls directory.
fn client_as(cluster: &LocalCluster, stem: &str, r: usize, seed: u64, discover: bool) -> anyhow::Result<Client> {
    let mut endpoints = cluster.endpoints();
    endpoints.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let options = ClientOptions {
        region: Some(region_name(r).to_string()),
        local_address: cluster.spec.wan.relayed().then(|| Spec::client_ip(r).into()),
        rng_seed: Some(seed),
        discover,
        ..ClientOptions::default()
    };
    Ok(Client::with_options(&endpoints, Some(cluster.tls(stem)?), options)?)
}

/// A client of node `id` alone.
fn pinned(cluster: &LocalCluster, id: u64) -> anyhow::Result<Client> {
    let m = cluster.members.iter().find(|m| m.id == id).context("no such node")?;
    let options = ClientOptions { discover: false, ..ClientOptions::default() };
    Ok(Client::with_options(std::slice::from_ref(&m.addr), Some(cluster.tls("client")?), options)?)
}

pub async fn run(options: Options) -> anyhow::Result<Results> {
    let out = &options.out;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} is not empty: give each run its own directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let faketime = match options.nemesis.faults.contains(&Fault::Clock) {
        true => Some(libfaketime().context("the clock nemesis needs libfaketime: run scripts/setup.sh")?),
        false => None,
    };
    let spec = Spec {
        regions: options.regions,
        wan: WanOptions { latency_ms: options.latency_ms, force_relay: true, ..Default::default() },
        faketime,
        env: options.node_env.clone(),
        ..Spec::new(out.join("cluster"), options.nodes, options.exe.clone())
    };
    println!("starting {} nodes over {} regions in {}", options.nodes, options.regions, spec.data_dir.display());
    let cluster = LocalCluster::start(spec).await?;
    cluster.wait_up(Duration::from_secs(60)).await?;
    cluster.init_if_needed().await?;
    cluster.wait_ready(Duration::from_secs(120)).await?;
    let admin_client = nemesis::admin_client(&cluster)?;
    let cluster: SharedCluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let recorder = Arc::new(Recorder::default());
    let pool = Arc::new(Mutex::new(KeyPool::new(options.workload.active_keys, options.workload.ops_per_key)));
    let stop = Arc::new(AtomicBool::new(false));

    println!("running the workload for {:?}", options.time_limit);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..options.clients {
        let seed = options.seed.wrapping_mul(1000).wrapping_add(i as u64);
        let client = client_in(&*cluster.lock().await, i % options.regions, seed, true)?;
        clients.spawn(workload::run_client(
            format!("c{i}"),
            client,
            pool.clone(),
            recorder.clone(),
            options.workload.clone(),
            options.clients,
            seed,
            stop.clone(),
        ));
    }
    if options.workload.workloads.contains(&Workload::Access) {
        // The owner near the first region, the grantee in the last: a revoke is acknowledged
        // to the one before the other's region has heard of it.
        let c = cluster.lock().await;
        c.issue_for(history::check::revocation::GRANTEE_PRINCIPAL, "grantee")?;
        let seed = options.seed.wrapping_mul(1000).wrapping_add(900);
        let manager = client_in(&c, 0, seed, true)?;
        let grantee = client_as(&c, "grantee", options.regions.saturating_sub(1), seed + 1, true)?;
        let owner = "client/dev".to_string();
        clients.spawn(workload::run_access_manager(manager, owner, recorder.clone(), seed, stop.clone()));
        clients.spawn(workload::run_grantee(grantee, recorder.clone(), seed + 1, stop.clone()));
    }
    let nemesis_stop = Arc::new(AtomicBool::new(false));
    let nemesis = tokio::spawn(nemesis::run(
        cluster.clone(),
        recorder.clone(),
        options.nemesis.clone(),
        options.seed,
        nemesis_stop.clone(),
    ));
    tokio::time::sleep(options.time_limit).await;
    nemesis_stop.store(true, Ordering::Relaxed);
    nemesis.await.context("the nemesis panicked")??;
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}

    println!("healing, then reading everything back from every node");
    // A cluster that does not come back is a finding, not a harness failure: the final reads
    // still run (within their budget) and the checkers report what is missing.
    let mut unreadable = Vec::new();
    match nemesis::heal_all(&cluster, &admin_client).await {
        Ok(()) => recorder.nemesis("final", "done", "every fault healed"),
        Err(e) => unreadable.push(format!("healing: {e:#}")),
    }
    if let Err(e) = cluster.lock().await.wait_ready(Duration::from_secs(120)).await {
        unreadable.push(format!("{e:#}"));
    }
    let mut keys = pool.lock().map(|p| p.all.clone()).unwrap_or_else(|p| p.into_inner().all.clone());
    if options.workload.workloads.contains(&Workload::Access) {
        keys.extend(workload::access_keys());
    }
    let deadline = tokio::time::Instant::now() + options.final_budget;
    let (listings, more) = final_reads(&cluster, &recorder, &keys, deadline).await?;
    unreadable.extend(more);

    let ops = recorder.ops();
    println!("reading every node's audit log back");
    let trails = trail::read(&cluster).await;
    let members: Vec<u64> = cluster.lock().await.members.iter().map(|m| m.id).collect();
    let mut results = results::check(&options, &ops, &recorder.nemesis_events(), &listings, &unreadable, &members);
    results.add(trail::check(&ops, &trails));
    results::write(out, &ops, &recorder.nemesis_events(), &results)?;
    let cluster = Arc::try_unwrap(cluster).map_err(|_| anyhow::anyhow!("the cluster is still shared"))?.into_inner();
    drop(cluster);
    Ok(results)
}

/// One recorded operation, asked again until answered (for a minute at most, and not past
/// `deadline`); `None` (nothing recorded) when the deadline has passed.
async fn answered(
    recorder: &Recorder,
    client: &Client,
    key: &str,
    kind: OpKind,
    token: &str,
    deadline: tokio::time::Instant,
) -> Option<Outcome> {
    let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
    let op = recorder.invoke("checker", key, kind.clone());
    let until = execute_until_answered(client, key, &kind, token, left.min(Duration::from_secs(60)));
    let outcome = client::with_request_id(Recorder::request_id(op), until).await;
    recorder.complete(op, outcome.clone());
    Some(outcome)
}

/// After healing: every key enabled again; then at every node, every key described, every
/// acknowledged ciphertext decrypted, and every key listed.
/// Returns the listings and, for nodes that could not list, why.
async fn final_reads(
    cluster: &SharedCluster,
    recorder: &Arc<Recorder>,
    keys: &[String],
    deadline: tokio::time::Instant,
) -> anyhow::Result<(Vec<Listing>, Vec<String>)> {
    let client = client_in(&*cluster.lock().await, 0, 7, true)?;
    for (i, key) in keys.iter().enumerate() {
        answered(recorder, &client, key, OpKind::Create, &format!("create-{key}"), deadline).await;
        answered(recorder, &client, key, OpKind::CancelDeletion, &format!("final-cancel-{i}"), deadline).await;
        answered(recorder, &client, key, OpKind::Enable, &format!("final-enable-{i}"), deadline).await;
    }
    let ciphertexts = history::acknowledged_ciphertexts(&recorder.ops());
    let ids: Vec<u64> = cluster.lock().await.members.iter().map(|m| m.id).collect();
    let (mut listings, mut unreadable) = (Vec::new(), Vec::new());
    for id in ids {
        let node = Arc::new(pinned(&*cluster.lock().await, id)?);
        for key in keys {
            answered(recorder, &node, key, OpKind::Describe { node: Some(id) }, "", deadline).await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in ciphertexts.chunks(ciphertexts.len().div_ceil(8).max(1)) {
            let (node, recorder, chunk) = (node.clone(), recorder.clone(), chunk.to_vec());
            tasks.spawn(async move {
                for (key, ciphertext, plaintext) in chunk {
                    let kind = OpKind::Decrypt { ciphertext, plaintext, node: Some(id) };
                    answered(&recorder, &node, &key, kind, "", deadline).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        match list_keys(&node, id).await {
            Ok(listing) => listings.push(listing),
            Err(e) => unreadable.push(format!("{e:#}")),
        }
    }
    if tokio::time::Instant::now() >= deadline {
        unreadable.push("the final reads ran out of time: the reads left were skipped".to_string());
    }
    Ok((listings, unreadable))
}

/// Every key node `id` holds, read linearizably at that node (retried for a minute).
async fn list_keys(node: &Client, id: u64) -> anyhow::Result<Listing> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match list_once(node, id).await {
            Err(_) if tokio::time::Instant::now() < give_up => tokio::time::sleep(Duration::from_millis(500)).await,
            other => return other,
        }
    }
}

async fn list_once(node: &Client, id: u64) -> anyhow::Result<Listing> {
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ListKeysRequest {
            page_size: 1000,
            page_token: page_token.clone(),
            consistency: Some(pb::Consistency {
                level: Some(pb::consistency::Level::Linearizable(pb::Linearizable {})),
            }),
        };
        let page = tokio::time::timeout(history::ops::CALL_TIMEOUT, node.list_keys(req))
            .await
            .with_context(|| format!("n{id} did not list its keys in time"))?
            .with_context(|| format!("n{id} could not list its keys"))?;
        keys.extend(page.keys.into_iter().map(|k| (k.key_id, k.description)));
        if page.next_page_token.is_empty() {
            return Ok(Listing { node: id, keys });
        }
        page_token = page.next_page_token;
    }
}
