//! Simulated hosts running the production node: the same `Node`, openraft, gRPC services and
//! transport as `keyquorum server`, over turmoil's network, on the memory stores (which model
//! what a power loss drops).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypto::SecureRng;
use node::config::{Limits, NodeConfig, RaftTimings};
use node::consensus::Role;
use node::custody::identity::{Identities, MemoryDisk};
use node::node::{Clock, Env, Node};
use sha2::{Digest, Sha256};
use storage::{LogCipher, MemLogStore, MemSnapshots, StateMachineStore};

use crate::history::Recorder;
use crate::net::{SimConnector, SimPki, PORT};
use crate::plan::{NodePlan, Plan, STREAM_NODES};

/// The wall clock every simulated node starts from: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// What survives a node's crash: its log store (synced part), snapshots and identity keys
/// (written through at once, as the real node fsyncs them before using one).
#[derive(Debug, Clone, Default)]
pub struct Disk {
    pub log: MemLogStore,
    pub snapshots: MemSnapshots,
    pub identities: MemoryDisk,
    pub audit: node::audit::MemoryStore,
}

/// State shared between the driver and every simulated host.
#[derive(Debug, Clone)]
pub struct World {
    pub plan: Arc<Plan>,
    pub recorder: Recorder,
    pub disks: Arc<Mutex<BTreeMap<u64, Disk>>>,
    pub running: Arc<Mutex<BTreeMap<u64, Arc<Node>>>>,
    /// Per node, milliseconds added to its wall clock (clock faults).
    pub skew_ms: Arc<Mutex<BTreeMap<u64, i64>>>,
    pub boots: Arc<Mutex<BTreeMap<u64, u64>>>,
    /// Every host registered so far (nodes and clients), in registration order.
    pub hosts: Arc<Mutex<Vec<String>>>,
    /// Certificates: every node and client talks mTLS, as in production.
    pub pki: Arc<SimPki>,
}

/// Raft timings for a WAN cluster with up to ~400 ms round trips. openraft 0.9 gives each
/// AppendEntries (heartbeats included) `heartbeat_interval` to complete, so the heartbeat must
/// exceed the slowest round trip, and elections wait several heartbeats.
pub fn timings() -> RaftTimings {
    RaftTimings {
        heartbeat_ms: 500,
        election_timeout_ms_min: 2000,
        election_timeout_ms_max: 4000,
        rpc_timeout_ms: 2000,
        snapshot_timeout_ms: 10_000,
        snapshot_every_entries: 50,
        keep_entries_after_snapshot: 10,
        request_timeout_ms: 5000,
        read_lease_ms: None,
        preferred_leader_region: String::new(),
    }
}

impl World {
    pub fn new(plan: Plan, recorder: Recorder) -> anyhow::Result<Self> {
        let pki = Arc::new(SimPki::new(&plan)?);
        Ok(Self {
            pki,
            plan: Arc::new(plan),
            recorder,
            disks: Default::default(),
            running: Default::default(),
            skew_ms: Default::default(),
            boots: Default::default(),
            hosts: Default::default(),
        })
    }

    pub fn disk(&self, id: u64) -> Disk {
        lock(&self.disks).entry(id).or_default().clone()
    }

    pub fn node(&self, id: u64) -> Option<Arc<Node>> {
        lock(&self.running).get(&id).cloned()
    }

    pub fn running_ids(&self) -> Vec<u64> {
        lock(&self.running).keys().copied().collect()
    }

    /// Registers every node's host with the simulation.
    pub fn add_hosts(&self, sim: &mut turmoil::Sim<'_>) {
        for n in self.plan.all_nodes() {
            lock(&self.hosts).push(n.host.clone());
            let world = self.clone();
            let plan = n.clone();
            sim.host(n.host.as_str(), move || {
                let world = world.clone();
                let plan = plan.clone();
                async move { world.run_node(plan).await.map_err(|e| e.to_string().into()) }
            });
        }
    }

    fn clock(&self, id: u64) -> Clock {
        let skew = self.skew_ms.clone();
        Arc::new(move || {
            let offset = lock(&skew).get(&id).copied().unwrap_or(0);
            (EPOCH_MS + crate::history::now_ms()).saturating_add_signed(offset)
        })
    }

    async fn run_node(&self, plan: NodePlan) -> anyhow::Result<()> {
        let id = plan.id;
        let boot = {
            let mut boots = lock(&self.boots);
            let b = boots.entry(id).or_default();
            *b += 1;
            *b
        };
        let seed = self.plan.seed;
        let config = NodeConfig {
            id,
            listen: (IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT).into(),
            advertise: Some(plan.addr()),
            region: plan.region.clone(),
            zone: plan.zone.clone(),
            dial_from: None,
            data_dir: Default::default(),
            raft: RaftTimings {
                preferred_leader_region: self.plan.preferred_leader_region.clone().unwrap_or_default(),
                ..timings()
            },
            limits: Limits::default(),
            material_cache_ttl_ms: 60_000,
            tls: Default::default(),
            identity_passphrase_file: None,
            audit: Default::default(),
        };
        let credentials = self.pki.node(id)?;
        let disk = self.disk(id);
        let recorder = self.recorder.clone();
        let observer: storage::ApplyObserver = Arc::new(move |entry| {
            let digest: [u8; 32] = Sha256::digest(postcard::to_stdvec(&entry.payload).unwrap_or_default()).into();
            if std::env::var("CHAOS_DEBUG_APPLY").is_ok() {
                let what = match &entry.payload {
                    openraft::EntryPayload::Normal(c) => format!("{c:?}").chars().take(90).collect::<String>(),
                    other => format!("{other:?}").chars().take(60).collect(),
                };
                eprintln!(
                    "{:>8} APPLY n{id} {}-{} {what}",
                    crate::history::now_ms(),
                    entry.log_id.leader_id.term,
                    entry.log_id.index
                );
            }
            recorder.applied(id, entry.log_id.index, entry.log_id.leader_id.term, digest);
        });
        // The log key lives in the process's memory only: every boot starts sealed.
        let cipher = LogCipher::new(SecureRng::from_seed_u64(mix(mix(seed, (STREAM_NODES + id) << 16 | boot), 1)));
        let log = disk.log.with_cipher(cipher.clone());
        let sm = StateMachineStore::open(disk.snapshots.clone(), cipher)?.with_observer(observer);
        let state = sm.state();
        let connector = Arc::new(SimConnector {
            connect_timeout: Duration::from_millis(config.raft.rpc_timeout_ms),
            tls: Some(credentials.client_config()),
        });
        // Identity keys persist on the node's disk; the node's randomness differs per boot, as
        // it would after a real restart.
        let identities = Identities::in_memory(disk.identities.clone())?;
        let rng = SecureRng::from_seed_u64(mix(seed, (STREAM_NODES + id) << 16 | boot));
        let env = Env::new(self.clock(id), rng);
        let audit = Box::new(disk.audit.clone());
        let node = Node::start(config, env, connector, (log, sm, state), identities, audit).await?;
        lock(&self.running).insert(id, node.clone());
        self.recorder.event(format!("n{id} boots ({boot})"));
        tokio::spawn(watch_leadership(node.clone(), self.recorder.clone()));
        let listener = turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
        Ok(node::server::serve(node, crate::net::incoming(listener), Some(credentials), std::future::pending()).await?)
    }

    /// Forgets a node the driver just crashed.
    pub fn crashed(&self, id: u64) {
        lock(&self.running).remove(&id);
    }
}

async fn watch_leadership(node: Arc<Node>, recorder: Recorder) {
    let mut watch = node.consensus.watch();
    let id = node.id();
    drop(node);
    let mut last = None;
    loop {
        let view = watch.view();
        if view.role == Role::Leader && last != Some(view.term) {
            recorder.leader(view.term, id);
            last = Some(view.term);
        }
        if !watch.changed().await {
            return;
        }
    }
}

/// A seed for one purpose, mixed from the run's seed (splitmix64 finaliser).
pub fn mix(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
