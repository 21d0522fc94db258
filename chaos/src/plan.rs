//! Everything a run does, derived from its seed: cluster size, regions and placement, link
//! latencies, how likely each fault is ("buggify" knobs), and the workload.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Independent random streams derived from one seed, one per purpose, so that adding a draw
/// to one purpose does not shift the others.
pub fn stream(seed: u64, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose);
    rng
}

pub const STREAM_PLAN: u64 = 1;
pub const STREAM_FAULTS: u64 = 2;
pub const STREAM_RAFT: u64 = 3;
pub const STREAM_REGION_LOSS: u64 = 4;
pub const STREAM_ACCESS: u64 = 5;
pub const STREAM_NODES: u64 = 1000;
/// Seeds of the clients' jitter RNGs (admin clients add their sequence number, the checker's
/// pinned clients the node id).
pub const STREAM_ADMIN_CLIENTS: u64 = 1 << 40;
pub const STREAM_CHECKER: u64 = 1 << 41;
pub const STREAM_SERVICE_CLIENTS: u64 = 1 << 42;

#[derive(Debug, Clone)]
pub struct NodePlan {
    pub id: u64,
    pub host: String,
    pub region: String,
    pub zone: String,
}

impl NodePlan {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, crate::net::PORT)
    }
}

/// Per fault tick, the chance of each kind of fault. A knob is either off or drawn from its
/// range, so some seeds hammer one kind of fault and others never inject it.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    pub partition: f64,
    pub stall: f64,
    pub latency_spike: f64,
    pub crash: f64,
    pub power_loss: f64,
    pub membership: f64,
    pub clock: f64,
    /// Chance per fault tick that every node of one region goes down together.
    pub region_loss: f64,
}

#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub name: String,
    pub region: String,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub voters: Vec<NodePlan>,
    /// A node that is not a member at first; membership faults add and remove it.
    pub spare: NodePlan,
    pub regions: Vec<String>,
    /// One-way latency between regions (and within one, keyed by the same name twice):
    /// `(base_ms, jitter_ms)`.
    pub latency: BTreeMap<(String, String), (u64, u64)>,
    pub knobs: Knobs,
    pub clients: Vec<ClientPlan>,
    /// The access workload: the owner's client that grants, revokes and puts policies, and the
    /// grantee principal's client (`workload::run_access_manager`, `run_grantee`).
    pub access: [ClientPlan; 2],
    pub keys: usize,
    /// Per key, the one region it is restricted to, if any (`key_names`).
    pub key_regions: Vec<Option<String>>,
    /// Simulated length of the fault phase.
    pub fault_phase_ms: u64,
    /// `raft.preferred_leader_region` of every node, if any.
    pub preferred_leader_region: Option<String>,
}

/// Milliseconds between two chances of a fault.
pub const FAULT_TICK_MS: u64 = 250;

impl Plan {
    pub fn from_seed(seed: u64) -> Plan {
        let mut rng = stream(seed, STREAM_PLAN);
        let n = rng.gen_range(3..=7u64);
        let region_count = rng.gen_range(2..=n.min(4)) as usize;
        let regions: Vec<String> = (0..region_count).map(|i| format!("r{i}")).collect();
        // Every region gets a node; the rest land anywhere.
        let mut placement: Vec<usize> = (0..region_count).collect();
        while placement.len() < n as usize {
            placement.push(rng.gen_range(0..region_count));
        }
        shuffle(&mut placement, &mut rng);
        let node = |id: u64, region: usize, rng: &mut ChaCha8Rng| NodePlan {
            id,
            host: format!("n{id}"),
            region: regions[region].clone(),
            zone: format!("{}-{}", regions[region], ["a", "b", "c"][rng.gen_range(0..3)]),
        };
        let voters: Vec<NodePlan> = (1..=n).map(|id| node(id, placement[id as usize - 1], &mut rng)).collect();
        let spare_region = rng.gen_range(0..region_count);
        let spare = node(n + 1, spare_region, &mut rng);

        let mut latency = BTreeMap::new();
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i..] {
                let base = if a == b { rng.gen_range(1..=5) } else { rng.gen_range(20..=150) };
                let jitter = rng.gen_range(0..=base / 4 + 1);
                latency.insert((a.clone(), b.clone()), (base, jitter));
            }
        }

        let mut knob = |lo: f64, hi: f64| if rng.gen_bool(0.5) { rng.gen_range(lo..hi) } else { 0.0 };
        let mut knobs = Knobs {
            partition: knob(0.01, 0.08),
            stall: knob(0.01, 0.1),
            latency_spike: knob(0.01, 0.08),
            crash: knob(0.01, 0.06),
            power_loss: knob(0.002, 0.01),
            membership: knob(0.01, 0.04),
            clock: knob(0.01, 0.05),
            region_loss: 0.0,
        };
        knobs.region_loss = knobs.crash / 3.0;

        let clients = (0..rng.gen_range(2..=4u64))
            .map(|i| ClientPlan {
                name: format!("c{i}"),
                region: regions[rng.gen_range(0..region_count)].clone(),
                seed: rng.gen(),
            })
            .collect();
        let keys = rng.gen_range(1..=3);
        let fault_phase_ms = rng.gen_range(10_000..=25_000);
        // Drawn last, so the rest of a seed's plan is what it was before region restrictions.
        let key_regions =
            (0..keys).map(|_| rng.gen_bool(0.3).then(|| regions[rng.gen_range(0..region_count)].clone())).collect();
        // Half the runs want the leader in one region (every node's config says the same).
        let preferred_leader_region = rng.gen_bool(0.5).then(|| regions[rng.gen_range(0..region_count)].clone());
        // From a stream of its own, so the access workload shifts nothing else of the plan.
        let mut access_rng = stream(seed, STREAM_ACCESS);
        let mut access_client = |name: &str| ClientPlan {
            name: name.to_string(),
            region: regions[access_rng.gen_range(0..region_count)].clone(),
            seed: access_rng.gen(),
        };
        let access = [access_client("access"), access_client("grantee")];
        Plan {
            seed,
            voters,
            spare,
            regions,
            latency,
            knobs,
            clients,
            access,
            keys,
            key_regions,
            fault_phase_ms,
            preferred_leader_region,
        }
    }

    /// The workload's key aliases: `k<i>`, or `k<i>-in-<region>` for a key restricted to
    /// that region (`workload::allowed_regions` reads it back).
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys)
            .map(|i| match self.key_regions.get(i).cloned().flatten() {
                Some(region) => format!("k{i}-in-{region}"),
                None => format!("k{i}"),
            })
            .collect()
    }

    pub fn all_nodes(&self) -> impl Iterator<Item = &NodePlan> {
        self.voters.iter().chain(std::iter::once(&self.spare))
    }

    pub fn node(&self, id: u64) -> Option<&NodePlan> {
        self.all_nodes().find(|n| n.id == id)
    }

    /// `(base_ms, jitter_ms)` between two regions.
    pub fn link(&self, a: &str, b: &str) -> (u64, u64) {
        let key = if a <= b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) };
        self.latency.get(&key).copied().unwrap_or((1, 0))
    }

    /// One line describing the run, printed first in every trace.
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self.voters.iter().map(|n| format!("{}@{}", n.host, n.region)).collect();
        format!(
            "seed {} voters [{}] spare {}@{} clients {} keys [{}] fault phase {} ms knobs {:?}",
            self.seed,
            nodes.join(" "),
            self.spare.host,
            self.spare.region,
            self.clients.len(),
            self.key_names().join(" "),
            self.fault_phase_ms,
            self.knobs
        )
    }
}

/// Fisher–Yates with our RNG (deterministic, no `SliceRandom` version coupling).
pub fn shuffle<T>(items: &mut [T], rng: &mut impl Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.gen_range(0..=i);
        items.swap(i, j);
    }
}
