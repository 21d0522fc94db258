//! One simulated run: build the cluster a seed describes, run the workload under the seed's
//! faults, heal, check liveness, then check every invariant.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::pb;
use node::consensus::Role;

use crate::cluster::{mix, World};
use crate::faults::Faults;
use crate::history::{now_ms, set_driver_ms, OpKind, Outcome, Recorder, Value, Violation};
use crate::plan::{stream, Plan, STREAM_CHECKER, STREAM_FAULTS, STREAM_RAFT, STREAM_SERVICE_CLIENTS};
use crate::workload::{
    client_for, execute, execute_until_answered, pinned_client, run_access_manager, run_client, run_grantee,
};

/// How long the healed cluster has to elect a leader, converge and serve every kind of
/// request (simulated time).
pub const LIVENESS_BOUND: Duration = Duration::from_secs(90);

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub plan: String,
    pub trace_hash: String,
    pub sim_ms: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub ops: BTreeMap<&'static str, u64>,
    pub violations: Vec<Violation>,
    /// Faulty decryption shares the running nodes received, by the holder that gave them.
    pub faulty_shares: BTreeMap<u64, u64>,
    /// Region losses the failover invariant applied to (`invariants::failover`).
    pub failover_checked: usize,
}

pub fn set_link(sim: &mut turmoil::Sim<'_>, plan: &Plan, a: &str, ra: &str, b: &str, rb: &str) {
    let (base, jitter) = plan.link(ra, rb);
    sim.set_link_latency(a, b, Duration::from_millis(base));
    sim.set_link_max_message_latency(a, b, Duration::from_millis(base + jitter));
}

/// Records a newly registered client host and sets its latencies to every node.
pub fn add_client_host(sim: &mut turmoil::Sim<'_>, world: &World, host: &str, region: &str) {
    crate::cluster::lock(&world.hosts).push(host.to_string());
    set_host_latency(sim, &world.plan, host, region);
}

/// Latencies from a host in `region` to every node.
fn set_host_latency(sim: &mut turmoil::Sim<'_>, plan: &Plan, host: &str, region: &str) {
    for n in plan.all_nodes() {
        set_link(sim, plan, host, region, &n.host, &n.region);
    }
}

/// Steps the simulation until `done` or `bound` of simulated time has passed; `false` on
/// timeout. A host that fails ends the run with a violation.
fn step_until(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    mut faults: Option<&mut Faults>,
    bound: Duration,
    done: impl Fn() -> bool,
) -> Result<bool, ()> {
    let recorder = &world.recorder;
    let deadline = sim.elapsed() + bound;
    let mut next_sample = sim.elapsed();
    while !done() {
        if sim.elapsed() >= deadline {
            return Ok(false);
        }
        if sim.elapsed() >= next_sample {
            check_regions(world);
            next_sample = sim.elapsed() + REGION_SAMPLE;
        }
        if let Some(f) = faults.as_deref_mut() {
            let ms = sim.elapsed().as_millis() as u64;
            f.step(sim, Faults::tick_due(ms));
        }
        if let Err(e) = sim.step() {
            recorder.violation("host-failure", format!("a simulated host failed: {e}"));
            return Err(());
        }
        set_driver_ms(sim.elapsed().as_millis() as u64);
    }
    Ok(true)
}

/// How often (simulated ms) every node's material cache is checked against its keys' regions.
const REGION_SAMPLE: Duration = Duration::from_millis(50);

/// The region-custody invariant on every running node, once per node and run at most.
fn check_regions(world: &World) {
    for id in world.running_ids() {
        let (Some(node), Some(region)) =
            (world.node(id), world.plan.all_nodes().find(|n| n.id == id).map(|n| n.region.clone()))
        else {
            continue;
        };
        let cached = node.custody.cached_material();
        if cached.is_empty() {
            continue;
        }
        let violation = crate::invariants::regions::check(id, &region, &cached, &node.state().read().store);
        if let Some(v) = violation {
            if world.recorder.lock().violations.iter().all(|old| old.detail != v.detail) {
                world.recorder.violation(v.invariant, v.detail);
            }
        }
    }
}

/// Runs one seed. `echo` prints the trace as it happens (`--reproduce`).
pub fn run_seed(seed: u64, echo: bool) -> SeedReport {
    run_seed_with(seed, echo, |_| {})
}

/// Runs one seed with its plan adjusted first (tests that need a fault to be likely).
pub fn run_seed_with(seed: u64, echo: bool, adjust: impl FnOnce(&mut Plan)) -> SeedReport {
    set_driver_ms(0);
    raft::runtime::seed_thread_rng(mix(seed, STREAM_RAFT));
    let mut plan = Plan::from_seed(seed);
    adjust(&mut plan);
    let recorder = Recorder::new(echo);
    recorder.event(plan.describe());
    let world = match World::new(plan.clone(), recorder.clone()) {
        Ok(w) => w,
        Err(e) => {
            recorder.violation("setup", format!("cannot make the simulated cluster's certificates: {e}"));
            return finish(seed, &plan, &recorder, 0);
        }
    };
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(1))
        .tcp_capacity(1 << 16)
        .build();
    world.add_hosts(&mut sim);
    let nodes: Vec<_> = plan.all_nodes().cloned().collect();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            set_link(&mut sim, &plan, &a.host, &a.region, &b.host, &b.region);
        }
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut sim, &world, seed)));
    let sim_ms = sim.elapsed().as_millis() as u64;
    if let Err(panic) = outcome {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        recorder.violation("host-panic", format!("a simulated host panicked: {why}"));
        // Its runtimes are mid-panic; dropping them could panic again while unwinding.
        std::mem::forget(sim);
    }
    finish(seed, &plan, &recorder, sim_ms)
}

fn run(sim: &mut turmoil::Sim<'_>, world: &World, seed: u64) -> Result<(), ()> {
    let plan = world.plan.clone();
    let recorder = world.recorder.clone();

    // Initialise through the admin API, like an operator.
    let initialised = Arc::new(AtomicBool::new(false));
    {
        let done = initialised.clone();
        let first = plan.voters[0].addr();
        let members: Vec<pb::Member> = plan
            .voters
            .iter()
            .map(|n| pb::Member { id: n.id, addr: n.addr(), region: n.region.clone(), zone: n.zone.clone() })
            .collect();
        let recorder = recorder.clone();
        let admin = world.pki.admin.clone();
        sim.client("init", async move {
            let client = pinned_client(&admin, &first, mix(seed, STREAM_SERVICE_CLIENTS)).map_err(|e| e.to_string())?;
            loop {
                let req = pb::InitRequest { members: members.clone() };
                match client.init(req).await {
                    Ok(_) => break,
                    Err(s) if s.code() == tonic::Code::AlreadyExists => break,
                    Err(s) => recorder.event(format!("init: {:?}, retrying", s.code())),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            recorder.event("cluster initialised");
            done.store(true, Ordering::Relaxed);
            Ok(())
        });
        add_client_host(sim, world, "init", &plan.voters[0].region);
    }
    // The root key generation may lose a node (`Faults::during_keygen`); nothing else fails yet.
    let mut faults = Faults::new(world.clone(), stream(seed, STREAM_FAULTS));
    if !step_until(sim, world, Some(&mut faults), Duration::from_secs(30), || initialised.load(Ordering::Relaxed))? {
        recorder.violation("liveness", "the cluster did not initialise within 30 s");
        return Err(());
    }
    faults.initialised();

    // Workload and faults.
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    for c in &plan.clients {
        let (plan2, c2, rec, stop2, fin) = (plan.clone(), c.clone(), recorder.clone(), stop.clone(), finished.clone());
        let tls = world.pki.app.clone();
        sim.client(c.name.as_str(), async move {
            let r = run_client(plan2, c2, tls, rec, stop2).await;
            fin.fetch_add(1, Ordering::Relaxed);
            r
        });
        add_client_host(sim, world, &c.name, &c.region);
    }
    let [manager, grantee] = plan.access.clone();
    for (c, tls, is_manager) in [(manager, world.pki.app.clone(), true), (grantee, world.pki.grantee.clone(), false)] {
        let (plan2, c2, rec, stop2, fin) = (plan.clone(), c.clone(), recorder.clone(), stop.clone(), finished.clone());
        sim.client(c.name.as_str(), async move {
            let r = if is_manager {
                run_access_manager(plan2, c2, tls, rec, stop2).await
            } else {
                run_grantee(plan2, c2, tls, rec, stop2).await
            };
            fin.fetch_add(1, Ordering::Relaxed);
            r
        });
        add_client_host(sim, world, &c.name, &c.region);
    }
    let probing = Arc::new(AtomicBool::new(true));
    {
        let (world2, probing2) = (world.clone(), probing.clone());
        sim.client("prober", probe_sealed(world2, probing2));
        add_client_host(sim, world, "prober", &plan.voters[0].region);
    }
    let phase = Duration::from_millis(plan.fault_phase_ms);
    step_until(sim, world, Some(&mut faults), phase, || false)?;
    stop.store(true, Ordering::Relaxed);
    recorder.lock().stop_ms = Some(now_ms());
    recorder.event("fault phase over");
    faults.heal_all(sim);
    let clients = plan.clients.len() + plan.access.len();
    let admin_busy = faults.admin_busy();
    // No faults from here on: the drain and the liveness phase run on a healed cluster.
    let drained = step_until(sim, world, None, Duration::from_secs(30), || {
        finished.load(Ordering::Relaxed) == clients && !admin_busy.load(Ordering::Relaxed)
    })?;
    if !drained {
        recorder.violation("liveness", "workload clients or an admin call did not finish 30 s after healing");
    }

    // Liveness and the final reads.
    let checked = Arc::new(AtomicBool::new(false));
    {
        let (world2, done) = (world.clone(), checked.clone());
        sim.client("checker", async move {
            final_phase(&world2).await;
            done.store(true, Ordering::Relaxed);
            Ok(())
        });
        add_client_host(sim, world, "checker", &plan.voters[0].region);
    }
    if !step_until(sim, world, None, LIVENESS_BOUND, || checked.load(Ordering::Relaxed))? {
        recorder.violation(
            "liveness",
            format!("after healing, the cluster did not converge and serve every request within {LIVENESS_BOUND:?}"),
        );
    }
    probing.store(false, Ordering::Relaxed);
    Ok(())
}

/// The "no request is served by a sealed node" invariant, probed: every 200 ms, each node that
/// is sealed gets a KMS call that needs no state (GenerateRandom), which it must refuse. A
/// success counts only if the node stayed sealed from before the call until its answer (its
/// sealed watch did not change meanwhile; a restart drops the watch), so it is exact.
async fn probe_sealed(world: World, probing: Arc<AtomicBool>) -> turmoil::Result {
    let tls = world.pki.app.clone();
    let mut reported = std::collections::BTreeSet::new();
    while probing.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in world.running_ids() {
            // Only the watch is kept across the call: a crash must be free to drop the node.
            let Some(mut watch) = world.node(id).map(|n| n.state().sealed_watch()) else { continue };
            let Some(version) = *watch.borrow_and_update() else { continue };
            let Some(addr) = world.plan.all_nodes().find(|n| n.id == id).map(|n| n.addr()) else { continue };
            let Ok(client) = pinned_client(&tls, &addr, mix(world.plan.seed, STREAM_SERVICE_CLIENTS + id)) else {
                continue;
            };
            let req = pb::GenerateRandomRequest { number_of_bytes: 8 };
            let call = client.generate_random(req);
            let answered = tokio::time::timeout(Duration::from_secs(2), call).await;
            if matches!(answered, Ok(Ok(_))) && matches!(watch.has_changed(), Ok(false)) && reported.insert(id) {
                world.recorder.violation(
                    "sealed",
                    format!("n{id} answered a GenerateRandom call while sealed on log key v{version} throughout"),
                );
            }
        }
    }
    Ok(())
}

/// Members (voters and learners) as the running nodes see them, and whether they agree on
/// a leader and have all applied the leader's whole log.
fn converged(world: &World) -> Option<Vec<u64>> {
    let running = world.running_ids();
    let leader_id = running.iter().copied().find(|id| world.node(*id).is_some_and(|n| n.consensus.is_leader()))?;
    let lv = world.node(leader_id)?.consensus.view();
    if lv.role != Role::Leader || lv.last_log_index == 0 {
        return None;
    }
    let members: Vec<u64> = lv.members.keys().copied().collect();
    for id in &members {
        let v = world.node(*id)?.consensus.view();
        if v.leader != Some(leader_id) || v.applied_index != lv.last_log_index {
            return None;
        }
    }
    Some(members)
}

/// No root key generation or replacement under way at any member, no replaced root still
/// retired, and none holds an identity key of a round older than its root key's.
fn custody_settled(world: &World, members: &[u64]) -> bool {
    members.iter().all(|id| {
        world.node(*id).is_some_and(|n| {
            let s = n.state().read();
            let root_round = s.store.root().map(|r| r.transcript.epoch);
            s.store.keygen().is_none()
                && s.store.next_root().is_none()
                && s.store.retired().is_empty()
                && root_round.is_none_or(|round| n.custody.identity_rounds().iter().all(|r| *r >= round))
        })
    })
}

async fn wait_converged(world: &World) -> Vec<u64> {
    loop {
        if let Some(m) = converged(world) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After healing: converge, serve every kind of request, converge again, then read every key
/// and decrypt every acknowledged ciphertext at every member, and compare their key stores.
async fn final_phase(world: &World) {
    let plan = world.plan.clone();
    let recorder = world.recorder.clone();
    let members = wait_converged(world).await;
    recorder.event(format!("converged: members {members:?}"));
    let addrs: Vec<String> = plan.voters.iter().map(|n| n.addr()).collect();
    let Ok(client) = client_for(&world.pki.app, &addrs, mix(plan.seed, STREAM_CHECKER), None) else { return };
    let keys: Vec<String> = plan.key_names();
    let mut seq = 0;
    let mut call = |key: &str, kind: OpKind| {
        seq += 1;
        let token = format!("checker-{seq}");
        let key = key.to_string();
        let client = &client;
        let recorder = recorder.clone();
        async move {
            let op = recorder.invoke("checker", &key, kind.clone());
            let outcome = if kind == OpKind::Create {
                execute(client, &key, &kind, &format!("create-{key}")).await
            } else {
                execute(client, &key, &kind, &token).await
            };
            recorder.complete(op, outcome.clone());
            outcome
        }
    };
    // Every kind of request must be served again; failures are retried until the bound.
    for key in &keys {
        let _ = call(key, OpKind::Create).await;
        let _ = call(key, OpKind::CancelDeletion).await;
        for kind in [OpKind::Enable, OpKind::Rotate, OpKind::Describe { node: None }, OpKind::DataKey] {
            loop {
                match call(key, kind.clone()).await {
                    Outcome::Ok(_) => break,
                    other => {
                        recorder.event(format!("checker: {} {key} not served yet: {other:?}", kind.name()));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        let plaintext = format!("final-{key}").into_bytes();
        let ciphertext = loop {
            if let Outcome::Ok(Value::Ciphertext { ciphertext, .. }) =
                call(key, OpKind::Encrypt { plaintext: plaintext.clone() }).await
            {
                break ciphertext;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        while !matches!(
            call(key, OpKind::Decrypt { ciphertext: ciphertext.clone(), plaintext: plaintext.clone(), node: None })
                .await,
            Outcome::Ok(_)
        ) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let members = wait_converged(world).await;

    // Every ciphertext ever acknowledged, and every key, at every member.
    let ciphertexts = ::history::acknowledged_ciphertexts(&recorder.lock().ops);
    for id in &members {
        let Some(n) = plan.node(*id) else { continue };
        let Ok(pinned) = pinned_client(&world.pki.app, &n.addr(), mix(plan.seed, STREAM_CHECKER + *id)) else {
            continue;
        };
        let pinned = Arc::new(pinned);
        for key in &keys {
            let kind = OpKind::Describe { node: Some(*id) };
            let op = recorder.invoke("checker", key, kind.clone());
            let outcome = execute(&pinned, key, &kind, "").await;
            recorder.complete(op, outcome);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (key, ct, pt) in &ciphertexts {
            let kind = OpKind::Decrypt { ciphertext: ct.clone(), plaintext: pt.clone(), node: Some(*id) };
            let op = recorder.invoke("checker", key, kind.clone());
            let (pinned, recorder, key) = (pinned.clone(), recorder.clone(), key.clone());
            tasks.spawn(async move {
                let outcome = execute_until_answered(&pinned, &key, &kind, "", Duration::from_secs(60)).await;
                recorder.complete(op, outcome);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    // The leader may have begun a resharing round meanwhile (its duties go on): compare the
    // members' states at a moment they have all applied the same log, with no resharing
    // under way and every old identity key erased (erasure follows a root replacement by a
    // snapshot). Nothing else runs between the check and the copies (no await).
    let members = loop {
        match converged(world) {
            Some(m) if custody_settled(world, &m) => break m,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let states: Vec<(u64, raft::KeyStore)> =
        members.iter().filter_map(|id| world.node(*id).map(|n| (*id, n.state().read().store.clone()))).collect();
    for v in crate::invariants::rotation::compare_material(&states) {
        recorder.violation(v.invariant, v.detail);
    }
    check_custody(world, &members, &states);
    check_regions(world);
    for id in world.running_ids() {
        if let Some(node) = world.node(id) {
            for (holder, n) in node.custody.faulty_share_counts() {
                *recorder.lock().faulty_shares.entry(holder).or_default() += n;
            }
        }
    }
    recorder.event("final checks done");
}

/// The custody invariants on the converged members, and, if the spare node was removed and the
/// root key reshared since, whether its old share helps unwrap anything now.
fn check_custody(world: &World, members: &[u64], states: &[(u64, raft::KeyStore)]) {
    use crate::invariants::custody::{self, Custody};
    let recorder = &world.recorder;
    let custody: Vec<Custody> = states
        .iter()
        .filter_map(|(id, store)| {
            let node = world.node(*id)?;
            let newest = store.root().map_or(0, |r| r.epoch);
            let wrapped_epochs = (1..=newest).filter(|e| !store.wrapped_under(*e).is_empty()).collect();
            Some(Custody {
                id: *id,
                keyring: store.keyring(),
                wrapped_epochs,
                identity_rounds: node.custody.identity_rounds(),
            })
        })
        .collect();
    for v in custody::check(&custody) {
        recorder.violation(v.invariant, v.detail);
    }
    let spare = world.plan.spare.id;
    let Some((_, store)) = states.first() else { return };
    let (Some(current), Some(spare_node)) = (store.root(), world.node(spare)) else { return };
    if members.contains(&spare) || current.holders.contains_key(&spare) {
        return;
    }
    let Some(old_epoch) = spare_node.state().read().store.root().map(|r| r.epoch) else { return };
    let Ok(Some(old_share)) = spare_node.custody.share_holder(old_epoch) else { return };
    let Some(log_key) = store.log_keys().values().next_back().filter(|w| w.root_epoch == current.epoch) else {
        return;
    };
    let Ok(need) = crypto::threshold::shares_needed(&current.public_key_set) else { return };
    let mut shares = BTreeMap::new();
    let Ok(bogus) = old_share.decryption_share(&log_key.ciphertext) else { return };
    shares.insert(old_share.index(), bogus);
    for id in members {
        if shares.len() >= need {
            break;
        }
        let Some(Ok(Some(h))) = world.node(*id).map(|n| n.custody.share_holder(current.epoch)) else { continue };
        if let (false, Ok(share)) = (shares.contains_key(&h.index()), h.decryption_share(&log_key.ciphertext)) {
            shares.insert(h.index(), share);
        }
    }
    if shares.len() < need {
        return;
    }
    let wrapped = crypto::threshold::Wrapped { ciphertext: log_key.ciphertext.clone(), kcv: log_key.kcv };
    let unwrapped = crypto::threshold::unwrap(&current.public_key_set, &wrapped, &shares).is_ok();
    recorder.event(format!(
        "custody: removed n{spare}'s root epoch {old_epoch} share checked against epoch {}",
        current.epoch
    ));
    if let Some(v) = custody::removed_share(spare, unwrapped) {
        recorder.violation(v.invariant, v.detail);
    }
}

fn finish(seed: u64, plan: &Plan, recorder: &Recorder, sim_ms: u64) -> SeedReport {
    let (ops, mut violations, faults, faulty_shares, losses, fault_times, stop_ms) = {
        let inner = recorder.lock();
        (
            inner.ops.clone(),
            inner.violations.clone(),
            inner.faults.clone(),
            inner.faulty_shares.clone(),
            inner.region_losses.clone(),
            inner.fault_times.clone(),
            inner.stop_ms,
        )
    };
    let clients = plan.clients.iter().map(|c| (c.name.clone(), c.region.clone())).collect();
    let key_regions = plan
        .key_names()
        .into_iter()
        .zip(&plan.key_regions)
        .filter_map(|(alias, region)| Some((alias, region.clone()?)))
        .collect();
    let (failover, failover_checked) = crate::invariants::failover::check(
        &losses,
        &clients,
        &key_regions,
        &ops,
        &fault_times,
        stop_ms.unwrap_or(0),
        crate::cluster::timings().read_lease_ms(),
    );
    violations.extend(failover);
    if !losses.is_empty() {
        recorder.event(format!(
            "failover: {failover_checked} of {} region losses lasted long enough to check",
            losses.len()
        ));
    }
    violations.extend(crate::invariants::linearizable::check(&ops));
    violations.extend(crate::invariants::no_lost_writes::check(&ops));
    violations.extend(::history::check::rotation::check(&ops));
    violations.extend(crate::invariants::disabled_unusable::check(&ops));
    violations.extend(crate::invariants::revocation::check(&ops));
    for v in &violations {
        recorder.event(format!("violation {}: {}", v.invariant, v.detail));
    }
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for o in &ops {
        let k = match o.outcome {
            Some(Outcome::Ok(_)) => "ok",
            Some(Outcome::Fail(..)) => "fail",
            _ => "unknown",
        };
        *counts.entry(k).or_default() += 1;
    }
    SeedReport {
        seed,
        plan: plan.describe(),
        trace_hash: recorder.trace_hash(),
        sim_ms,
        faults,
        ops: counts,
        violations,
        faulty_shares,
        failover_checked,
    }
}
