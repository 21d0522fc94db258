//! The fault injector: at every fault tick each kind of fault happens with its seed-chosen
//! probability, and heals after a seed-chosen time. `heal_all` ends the fault phase.
//!
//! turmoil does not retransmit TCP segments: a segment sent into a partition is lost, which a
//! real TCP connection never silently does. Partitions therefore last longer than the
//! transport's keep-alive timeout, so any connection that lost data is torn down and
//! re-dialled; short "message loss" is modelled as a stall (held segments, delivered late),
//! which is what loss looks like above TCP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::pb;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cluster::{lock, World};
use crate::history::{now_ms, OpKind};
use crate::plan::{shuffle, NodePlan, FAULT_TICK_MS};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Heal {
    Repair(String, String),
    RepairOneway(String, String),
    Release(String, String),
    Latency(String, String),
    Restart(u64),
    Unskew(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkFault {
    Cut,
    OneWay { from: String, to: String },
    Held,
}

#[derive(Debug)]
pub struct Faults {
    rng: ChaCha8Rng,
    /// Region losses draw from their own stream, so adding them left every other fault of a
    /// seed where it was.
    region_rng: ChaCha8Rng,
    world: World,
    /// Due time (ms) -> heals due then, in order of scheduling.
    pending: BTreeMap<u64, Vec<Heal>>,
    /// Links currently cut or stalled, so faults do not overlap on a link.
    busy: BTreeMap<(String, String), LinkFault>,
    crashed: BTreeMap<u64, ()>,
    admin_seq: u64,
    admin_busy: Arc<AtomicBool>,
    spare_member: Arc<AtomicBool>,
    /// While the cluster initialises, the only fault is one crash during the root key
    /// generation (if the seed's crash knob is on); `None` once that has been decided.
    initialising: Option<bool>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Faults {
    pub fn new(world: World, rng: ChaCha8Rng) -> Self {
        let region_rng = crate::plan::stream(world.plan.seed, crate::plan::STREAM_REGION_LOSS);
        Self {
            rng,
            region_rng,
            world,
            pending: BTreeMap::new(),
            busy: BTreeMap::new(),
            crashed: BTreeMap::new(),
            admin_seq: 0,
            admin_busy: Default::default(),
            spare_member: Default::default(),
            initialising: Some(false),
        }
    }

    /// Ends the initialisation phase: from now on, faults come at the seed's rates.
    pub fn initialised(&mut self) {
        self.initialising = None;
    }

    /// During initialisation: once a key generation round is running, crash one node (any,
    /// the one serving Init included) with a probability set by the seed's crash knob. The
    /// round must still finish, and the crashed node must derive its share from the log.
    fn during_keygen(&mut self, sim: &mut turmoil::Sim<'_>) {
        if self.initialising != Some(false) {
            return;
        }
        let running = self.world.running_ids();
        let round_running =
            running.iter().any(|id| self.world.node(*id).is_some_and(|n| n.state().read().store.keygen().is_some()));
        if !round_running {
            return;
        }
        self.initialising = Some(true);
        let k = self.world.plan.knobs.crash;
        if k > 0.0 && self.rng.gen_bool((k * 20.0).min(1.0)) {
            let id = running[self.rng.gen_range(0..running.len())];
            let down = self.rng.gen_range(500..5000);
            self.kill(sim, id);
            self.schedule(down, Heal::Restart(id));
            self.world.recorder.fault("crash-during-keygen", format!("n{id} for {down} ms"));
        }
    }

    fn schedule(&mut self, after_ms: u64, heal: Heal) {
        self.pending.entry(now_ms() + after_ms).or_default().push(heal);
    }

    fn nodes(&self) -> Vec<NodePlan> {
        self.world.plan.all_nodes().cloned().collect()
    }

    /// Called every simulation step: applies heals that are due and, on fault ticks, new faults.
    pub fn step(&mut self, sim: &mut turmoil::Sim<'_>, tick: bool) {
        let now = now_ms();
        let due: Vec<u64> = self.pending.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for heal in self.pending.remove(&t).unwrap_or_default() {
                self.heal(sim, heal);
            }
        }
        if self.initialising.is_some() {
            self.during_keygen(sim);
        } else if tick {
            self.inject(sim);
        }
    }

    fn inject(&mut self, sim: &mut turmoil::Sim<'_>) {
        let k = self.world.plan.knobs.clone();
        if self.rng.gen_bool(k.partition) {
            self.partition(sim);
        }
        if self.rng.gen_bool(k.stall) {
            self.stall(sim);
        }
        if self.rng.gen_bool(k.latency_spike) {
            self.latency_spike(sim);
        }
        if self.rng.gen_bool(k.crash) {
            self.crash(sim, None);
        }
        // Crashes aimed at the moments that matter most: a rotation or a membership change in
        // flight (the leader is the likeliest victim).
        if k.crash > 0.0 {
            let rotating = self
                .world
                .recorder
                .lock()
                .ops
                .iter()
                .rev()
                .take(32)
                .any(|o| o.kind == OpKind::Rotate && o.outcome.is_none());
            if rotating && self.rng.gen_bool((k.crash * 3.0).min(1.0)) {
                self.crash(sim, Some("crash-during-rotation"));
            }
            if self.admin_busy.load(Ordering::Relaxed) && self.rng.gen_bool((k.crash * 3.0).min(1.0)) {
                self.crash(sim, Some("crash-during-membership"));
            }
        }
        if self.rng.gen_bool(k.power_loss) {
            self.power_loss(sim);
        }
        if self.region_rng.gen_bool(k.region_loss) {
            self.region_loss(sim);
        }
        if self.rng.gen_bool(k.membership) {
            self.membership(sim);
        }
        if self.rng.gen_bool(k.clock) {
            self.clock();
        }
    }

    fn cut(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str, oneway: bool) -> bool {
        let p = pair(a, b);
        if self.busy.contains_key(&p) {
            return false;
        }
        let fault = if oneway { LinkFault::OneWay { from: a.to_string(), to: b.to_string() } } else { LinkFault::Cut };
        self.busy.insert(p, fault);
        let heal_after = self.rng.gen_range(3000..8000);
        if oneway {
            sim.partition_oneway(a, b);
            self.schedule(heal_after, Heal::RepairOneway(a.to_string(), b.to_string()));
        } else {
            sim.partition(a, b);
            self.schedule(heal_after, Heal::Repair(a.to_string(), b.to_string()));
        }
        true
    }

    fn partition(&mut self, sim: &mut turmoil::Sim<'_>) {
        let mut nodes = self.nodes();
        shuffle(&mut nodes, &mut self.rng);
        let (kind, side): (&'static str, Vec<NodePlan>) = match self.rng.gen_range(0..4) {
            0 => {
                let cut = self.rng.gen_range(1..nodes.len());
                ("partition-random", nodes[..cut].to_vec())
            }
            1 => {
                let minority = nodes.len() / 2;
                ("partition-minority", nodes[..minority.max(1)].to_vec())
            }
            2 => {
                let regions = &self.world.plan.regions;
                let region = regions[self.rng.gen_range(0..regions.len())].clone();
                ("partition-region", nodes.iter().filter(|n| n.region == region).cloned().collect())
            }
            _ => ("partition-oneway", nodes[..1].to_vec()),
        };
        let other: Vec<NodePlan> = nodes.iter().filter(|n| !side.iter().any(|s| s.id == n.id)).cloned().collect();
        if kind == "partition-oneway" {
            let (from, to) = (&side[0], &other[self.rng.gen_range(0..other.len())]);
            if self.cut(sim, &from.host, &to.host, true) {
                self.world.recorder.fault(kind, format!("{} -/-> {}", from.host, to.host));
            }
            return;
        }
        let mut cut_any = false;
        for a in &side {
            for b in &other {
                cut_any |= self.cut(sim, &a.host, &b.host, false);
            }
        }
        if cut_any {
            let names: Vec<&str> = side.iter().map(|n| n.host.as_str()).collect();
            self.world.recorder.fault(kind, format!("[{}] | rest", names.join(" ")));
        }
    }

    fn two_nodes(&mut self) -> (NodePlan, NodePlan) {
        let mut nodes = self.nodes();
        shuffle(&mut nodes, &mut self.rng);
        (nodes[0].clone(), nodes[1].clone())
    }

    fn stall(&mut self, sim: &mut turmoil::Sim<'_>) {
        let (a, b) = self.two_nodes();
        let p = pair(&a.host, &b.host);
        if self.busy.contains_key(&p) {
            return;
        }
        self.busy.insert(p, LinkFault::Held);
        sim.hold(a.host.as_str(), b.host.as_str());
        let ms = self.rng.gen_range(50..400);
        self.schedule(ms, Heal::Release(a.host.clone(), b.host.clone()));
        self.world.recorder.fault("stall", format!("{} <-> {} for {ms} ms", a.host, b.host));
    }

    fn latency_spike(&mut self, sim: &mut turmoil::Sim<'_>) {
        let (a, b) = self.two_nodes();
        let ms = self.rng.gen_range(200..1000);
        sim.set_link_latency(a.host.as_str(), b.host.as_str(), Duration::from_millis(ms));
        let lasts = self.rng.gen_range(500..3000);
        self.schedule(lasts, Heal::Latency(a.host.clone(), b.host.clone()));
        self.world.recorder.fault("latency-spike", format!("{} <-> {} at {ms} ms for {lasts} ms", a.host, b.host));
    }

    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, label: Option<&'static str>) {
        let leader = self
            .world
            .running_ids()
            .into_iter()
            .find(|id| self.world.node(*id).is_some_and(|n| n.consensus.is_leader()));
        let running = self.world.running_ids();
        if running.is_empty() {
            return;
        }
        let id = match leader {
            Some(l) if self.rng.gen_bool(0.5) => l,
            _ => running[self.rng.gen_range(0..running.len())],
        };
        let down = self.rng.gen_range(500..5000);
        self.kill(sim, id);
        self.schedule(down, Heal::Restart(id));
        let what = label.unwrap_or(if Some(id) == leader { "crash-leader" } else { "crash" });
        self.world.recorder.fault(what, format!("n{id} for {down} ms"));
    }

    /// Crashes a node like a power cut: its connections vanish without a FIN. (turmoil would
    /// otherwise send FINs as the dying runtime drops its sockets, in an order that depends on
    /// process-global task ids, which would make a seed's trace depend on what ran before it.)
    fn kill(&mut self, sim: &mut turmoil::Sim<'_>, id: u64) {
        let Some(plan) = self.world.plan.node(id).cloned() else { return };
        let me = plan.host.clone();
        let others: Vec<String> = lock(&self.world.hosts).iter().filter(|h| **h != me).cloned().collect();
        for other in &others {
            if self.busy.get(&pair(&me, other)) != Some(&LinkFault::Cut) {
                sim.partition(me.as_str(), other.as_str());
            }
        }
        sim.crash(me.as_str());
        for other in &others {
            match self.busy.get(&pair(&me, other)).cloned() {
                Some(LinkFault::Cut) => {}
                None => sim.repair(me.as_str(), other.as_str()),
                Some(LinkFault::OneWay { from, to }) => {
                    sim.repair(me.as_str(), other.as_str());
                    sim.partition_oneway(from.as_str(), to.as_str());
                }
                Some(LinkFault::Held) => {
                    sim.repair(me.as_str(), other.as_str());
                    sim.hold(me.as_str(), other.as_str());
                }
            }
        }
        self.world.crashed(id);
        // Power loss: whatever the node had not synced is gone.
        self.world.disk(id).log.crash();
        self.crashed.insert(id, ());
    }

    fn power_loss(&mut self, sim: &mut turmoil::Sim<'_>) {
        let running = self.world.running_ids();
        if running.is_empty() {
            return; // everything is down already: not a fault worth counting
        }
        for id in &running {
            self.kill(sim, *id);
        }
        let down = self.rng.gen_range(500..3000);
        for id in &running {
            self.schedule(down, Heal::Restart(*id));
        }
        self.world.recorder.fault("power-loss", format!("all {} running nodes for {down} ms", running.len()));
    }

    /// A whole region goes dark: every running node in it crashes, and comes back together.
    /// Clients there must fail over to other regions meanwhile.
    fn region_loss(&mut self, sim: &mut turmoil::Sim<'_>) {
        let regions = &self.world.plan.regions;
        let region = regions[self.region_rng.gen_range(0..regions.len())].clone();
        let running = self.world.running_ids();
        let victims: Vec<u64> =
            running.into_iter().filter(|id| self.world.plan.node(*id).is_some_and(|n| n.region == region)).collect();
        if victims.is_empty() {
            return;
        }
        for id in &victims {
            self.kill(sim, *id);
        }
        let down = self.region_rng.gen_range(4000..16_000);
        for id in &victims {
            self.schedule(down, Heal::Restart(*id));
        }
        self.world.recorder.fault("region-loss", format!("{region}: {victims:?} for {down} ms"));
        let at_ms = crate::history::now_ms();
        let loss = crate::invariants::failover::RegionLoss { region, at_ms, until_ms: at_ms + down };
        self.world.recorder.lock().region_losses.push(loss);
    }

    fn clock(&mut self) {
        let (a, _) = self.two_nodes();
        let skew: i64 = self.rng.gen_range(-600_000..600_000);
        lock(&self.world.skew_ms).insert(a.id, skew);
        let lasts = self.rng.gen_range(1000..10_000);
        self.schedule(lasts, Heal::Unskew(a.id));
        self.world.recorder.fault("clock-skew", format!("n{} by {skew} ms for {lasts} ms", a.id));
    }

    /// Adds the spare node as a voter, removes it again, or rotates the root key, through the
    /// admin API (run by a one-shot client host, like an operator would). Each of them
    /// reshares the root key among the voters.
    fn membership(&mut self, sim: &mut turmoil::Sim<'_>) {
        if self.admin_busy.load(Ordering::Relaxed) {
            return;
        }
        let rotate = self.rng.gen_bool(0.3);
        let spare = self.world.plan.spare.clone();
        let add = !self.spare_member.load(Ordering::Relaxed);
        self.admin_busy.store(true, Ordering::Relaxed);
        self.admin_seq += 1;
        let name = format!("admin{}", self.admin_seq);
        let seed = crate::cluster::mix(self.world.plan.seed, crate::plan::STREAM_ADMIN_CLIENTS + self.admin_seq);
        let addrs: Vec<String> = self.world.plan.voters.iter().map(|n| n.addr()).collect();
        let recorder = self.world.recorder.clone();
        let busy = self.admin_busy.clone();
        let member = self.spare_member.clone();
        let admin = self.world.pki.admin.clone();
        let kind = match (rotate, add) {
            (true, _) => "rotate-root",
            (false, true) => "member-add",
            (false, false) => "member-remove",
        };
        recorder.fault(kind, format!("{} via {name}", if rotate { "the voters" } else { spare.host.as_str() }));
        sim.client(name.as_str(), async move {
            let client = crate::workload::client_for(&admin, &addrs, seed, None).map_err(|e| e.to_string())?;
            let call = async {
                if rotate {
                    client.rotate_root(pb::RotateRootRequest {}).await.map(drop)
                } else if add {
                    let m = pb::Member {
                        id: spare.id,
                        addr: spare.addr(),
                        region: spare.region.clone(),
                        zone: spare.zone.clone(),
                    };
                    let req = pb::AddNodeRequest { member: Some(m) };
                    client.add_node(req).await.map(drop)
                } else {
                    let req = pb::RemoveNodeRequest { id: spare.id };
                    client.remove_node(req).await.map(drop)
                }
            };
            let result = tokio::time::timeout(Duration::from_secs(20), call).await;
            match result {
                Ok(Ok(())) => {
                    if !rotate {
                        member.store(add, Ordering::Relaxed);
                    }
                    recorder.event(format!("{kind} {} done", spare.host));
                }
                Ok(Err(s)) => recorder.event(format!("{kind} {} failed: {:?}", spare.host, s.code())),
                Err(_) => recorder.event(format!("{kind} {} timed out", spare.host)),
            }
            busy.store(false, Ordering::Relaxed);
            Ok(())
        });
        let region = self.world.plan.regions[0].clone();
        crate::sim::add_client_host(sim, &self.world, &format!("admin{}", self.admin_seq), &region);
    }

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, heal: Heal) {
        match heal {
            Heal::Repair(a, b) => {
                sim.repair(a.as_str(), b.as_str());
                self.busy.remove(&pair(&a, &b));
            }
            Heal::RepairOneway(a, b) => {
                sim.repair_oneway(a.as_str(), b.as_str());
                self.busy.remove(&pair(&a, &b));
            }
            Heal::Release(a, b) => {
                sim.release(a.as_str(), b.as_str());
                self.busy.remove(&pair(&a, &b));
            }
            Heal::Latency(a, b) => {
                let plan = self.world.plan.clone();
                let x = plan.all_nodes().find(|n| n.host == a).cloned();
                let y = plan.all_nodes().find(|n| n.host == b).cloned();
                if let (Some(x), Some(y)) = (x, y) {
                    crate::sim::set_link(sim, &plan, &x.host, &x.region, &y.host, &y.region);
                }
            }
            Heal::Restart(id) => {
                if self.crashed.remove(&id).is_some() {
                    if let Some(plan) = self.world.plan.node(id) {
                        sim.bounce(plan.host.as_str());
                    }
                }
            }
            Heal::Unskew(id) => {
                lock(&self.world.skew_ms).remove(&id);
            }
        }
    }

    /// Ends the fault phase: every heal happens now.
    pub fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        let pending = std::mem::take(&mut self.pending);
        for heal in pending.into_values().flatten() {
            self.heal(sim, heal);
        }
        self.world.recorder.event("all faults healed");
    }

    /// Whether no admin call is in flight (shared flag, readable while the injector runs).
    pub fn admin_busy(&self) -> Arc<AtomicBool> {
        self.admin_busy.clone()
    }

    pub fn tick_due(step_ms: u64) -> bool {
        step_ms.is_multiple_of(FAULT_TICK_MS)
    }
}
