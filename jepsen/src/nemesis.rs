//! The nemeses: faults injected into the running cluster on a schedule, each healed before
//! the next begins, so the workload sees both faulty and healthy stretches. Each round injects
//! every enabled fault once, in a random order.
//!
//! | fault | what it does | heal |
//! |---|---|---|
//! | `kill` | kill -9 of a random node, the leader, or every node of a region | restart on the same data dir |
//! | `kill-all` | kill -9 of every node at once (a power loss of the whole cluster) | restart them all |
//! | `pause` | SIGSTOP of a random node or the leader | SIGCONT |
//! | `partition` | through the WAN relay: a region isolated, the leader's region isolated (leader in the minority), a bridge (two regions cut apart, a third talks to both), or one direction between two regions | lift every block |
//! | `clock` | libfaketime: every node's wall clock bumped by up to ±5 min, or one node's by an hour | offsets back to 0 |
//! | `member` | RemoveNode of a random voter | AddNode of it again |
//! | `transfer` | TransferLeader to a random other node | (one-shot) |
//! | `rotate-root` | RotateRoot: a new root key, shares dealt afresh | (one-shot) |

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use client::{pb, Client};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use testbed::{region_name, LocalCluster};
use tokio::sync::Mutex;

use crate::recorder::Recorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    KillAll,
    Pause,
    Partition,
    Clock,
    Member,
    Transfer,
    RotateRoot,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillAll => "kill-all",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Clock => "clock",
            Fault::Member => "member",
            Fault::Transfer => "transfer",
            Fault::RotateRoot => "rotate-root",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NemesisOptions {
    pub faults: Vec<Fault>,
    /// Healthy time between two faults.
    pub interval: Duration,
    /// How long a fault lasts before it is healed: random in this range.
    pub hold: (Duration, Duration),
}

/// What must be undone to heal the current fault.
#[derive(Debug)]
enum Heal {
    Nothing,
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    Relay,
    Clocks,
    AddBack(u64),
}

pub type SharedCluster = Arc<Mutex<LocalCluster>>;

/// Admin calls fail after this long (the fault is then recorded as an error). Membership
/// changes and root rotations run a key-generation round before they answer, so one attempt
/// may take all of it.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The operator's client for the nemesis's admin calls.
pub fn admin_client(cluster: &LocalCluster) -> anyhow::Result<Client> {
    let options = client::ClientOptions {
        call_timeout: ADMIN_TIMEOUT,
        attempt_timeout: ADMIN_TIMEOUT,
        ..client::ClientOptions::default()
    };
    Ok(Client::with_options(&cluster.endpoints(), Some(cluster.admin_tls()?), options)?)
}

async fn admin<T>(call: impl std::future::Future<Output = Result<T, client::Error>>) -> anyhow::Result<T> {
    match tokio::time::timeout(ADMIN_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("timed out after {ADMIN_TIMEOUT:?}"),
    }
}

/// The current leader, as the cluster reports it.
pub async fn leader(client: &Client) -> Option<u64> {
    let status = admin(client.status(pb::StatusRequest {})).await.ok()?;
    (status.leader_id != 0).then_some(status.leader_id)
}

/// Injects faults until `stop`, healing each; the last is healed before returning.
pub async fn run(
    cluster: SharedCluster,
    recorder: Arc<Recorder>,
    options: NemesisOptions,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let admin_client = admin_client(&*cluster.lock().await)?;
    let ids: Vec<u64> = cluster.lock().await.members.iter().map(|m| m.id).collect();
    let regions = cluster.lock().await.spec.regions.min(ids.len());
    if options.faults.is_empty() {
        return Ok(());
    }
    // Every fault once per round, in a random order: a short run still sees each kind.
    let mut deck: Vec<Fault> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !sleep_unless(&stop, options.interval).await {
            break;
        }
        if deck.is_empty() {
            deck = options.faults.clone();
            deck.shuffle(&mut rng);
        }
        let Some(fault) = deck.pop() else { break };
        let heal = match inject(fault, &cluster, &admin_client, &ids, regions, &mut rng).await {
            Ok((heal, detail)) => {
                let phase = if matches!(heal, Heal::Nothing) { "done" } else { "start" };
                recorder.nemesis(fault.name(), phase, detail);
                heal
            }
            Err(e) => {
                recorder.nemesis(fault.name(), "error", format!("{e:#}"));
                continue;
            }
        };
        if matches!(heal, Heal::Nothing) {
            continue;
        }
        let hold = rng.gen_range(options.hold.0..=options.hold.1.max(options.hold.0));
        sleep_unless(&stop, hold).await;
        match undo(heal, &cluster, &admin_client).await {
            Ok(detail) => recorder.nemesis(fault.name(), "heal", detail),
            Err(e) => recorder.nemesis(fault.name(), "error", format!("heal: {e:#}")),
        }
    }
    Ok(())
}

/// Sleeps `d` or until `stop`; whether the whole time passed.
async fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100).min(end - tokio::time::Instant::now())).await;
    }
    true
}

async fn inject(
    fault: Fault,
    cluster: &SharedCluster,
    admin_client: &Client,
    ids: &[u64],
    regions: usize,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<(Heal, String)> {
    let random_node = |rng: &mut ChaCha8Rng| ids[rng.gen_range(0..ids.len())];
    match fault {
        Fault::Kill => {
            let (targets, what) = match rng.gen_range(0..3) {
                0 => {
                    let r = rng.gen_range(0..regions);
                    let c = cluster.lock().await;
                    (
                        ids.iter().copied().filter(|id| c.spec.region_index(*id) == r).collect(),
                        region_name(r).to_string(),
                    )
                }
                1 => match leader(admin_client).await {
                    Some(l) => (vec![l], "the leader".to_string()),
                    None => (vec![random_node(rng)], "a node (no leader known)".to_string()),
                },
                _ => (vec![random_node(rng)], "a random node".to_string()),
            };
            let mut c = cluster.lock().await;
            for id in &targets {
                c.kill(*id)?;
            }
            Ok((Heal::Restart(targets.clone()), format!("kill -9 {what}: {targets:?}")))
        }
        Fault::KillAll => {
            let mut c = cluster.lock().await;
            for id in ids {
                c.kill(*id)?;
            }
            Ok((Heal::Restart(ids.to_vec()), format!("kill -9 every node: {ids:?}")))
        }
        Fault::Pause => {
            let (id, what) = match rng.gen_bool(0.5) {
                true => match leader(admin_client).await {
                    Some(l) => (l, "the leader"),
                    None => (random_node(rng), "a node (no leader known)"),
                },
                false => (random_node(rng), "a random node"),
            };
            cluster.lock().await.pause(id, true)?;
            Ok((Heal::Resume(vec![id]), format!("SIGSTOP {what}: n{id}")))
        }
        Fault::Partition => {
            let c = cluster.lock().await;
            let relay = c.relay();
            let names: Vec<&str> = (0..regions).map(region_name).collect();
            let pick = rng.gen_range(0..4);
            let detail = match pick {
                0 | 1 => {
                    let r = if pick == 1 {
                        drop(c);
                        let l = leader(admin_client).await;
                        let c = cluster.lock().await;
                        let r = l.map(|l| c.spec.region_index(l)).unwrap_or(0);
                        c.relay().isolate(names[r]);
                        return Ok((Heal::Relay, format!("isolate the leader's region {}", names[r])));
                    } else {
                        rng.gen_range(0..regions)
                    };
                    relay.isolate(names[r]);
                    format!("isolate {}", names[r])
                }
                2 if regions >= 3 => {
                    let mut order = names.clone();
                    order.shuffle(rng);
                    relay.block(order[0], order[1]);
                    relay.block(order[1], order[0]);
                    format!("bridge: {} and {} cut apart, {} talks to both", order[0], order[1], order[2])
                }
                _ => {
                    let mut order = names.clone();
                    order.shuffle(rng);
                    let (from, to) = (order[0], order[order.len().min(2) - 1]);
                    relay.block(from, to);
                    format!("one way: {from} -> {to} blocked")
                }
            };
            Ok((Heal::Relay, detail))
        }
        Fault::Clock => {
            let c = cluster.lock().await;
            let detail = if rng.gen_bool(0.3) {
                let id = random_node(rng);
                let offset = if rng.gen_bool(0.5) { 3600 } else { -3600 };
                c.set_clock_offset(id, offset)?;
                format!("n{id} {offset:+}s")
            } else {
                let mut parts = Vec::new();
                for id in ids {
                    let offset = rng.gen_range(-300..=300);
                    c.set_clock_offset(*id, offset)?;
                    parts.push(format!("n{id} {offset:+}s"));
                }
                parts.join(", ")
            };
            Ok((Heal::Clocks, detail))
        }
        Fault::Member => {
            let id = random_node(rng);
            let req = pb::RemoveNodeRequest { id };
            admin(admin_client.remove_node(req)).await?;
            Ok((Heal::AddBack(id), format!("remove n{id}")))
        }
        Fault::Transfer => {
            let current = leader(admin_client).await;
            let others: Vec<u64> = ids.iter().copied().filter(|id| Some(*id) != current).collect();
            let id = *others.choose(rng).context("no node to transfer to")?;
            let req = pb::TransferLeaderRequest { id };
            admin(admin_client.transfer_leader(req)).await?;
            Ok((Heal::Nothing, format!("leadership n{} -> n{id}", current.unwrap_or(0))))
        }
        Fault::RotateRoot => {
            let r = admin(admin_client.rotate_root(pb::RotateRootRequest {})).await?;
            Ok((Heal::Nothing, format!("root epoch {} over {:?}", r.root_epoch, r.holders)))
        }
    }
}

async fn undo(heal: Heal, cluster: &SharedCluster, admin_client: &Client) -> anyhow::Result<String> {
    match heal {
        Heal::Nothing => Ok(String::new()),
        Heal::Restart(ids) => {
            let mut c = cluster.lock().await;
            for id in &ids {
                c.restart(*id)?;
            }
            Ok(format!("restarted {ids:?}"))
        }
        Heal::Resume(ids) => {
            let c = cluster.lock().await;
            for id in &ids {
                c.pause(*id, false)?;
            }
            Ok(format!("SIGCONT {ids:?}"))
        }
        Heal::Relay => {
            cluster.lock().await.relay().heal();
            Ok("partition healed".into())
        }
        Heal::Clocks => {
            let c = cluster.lock().await;
            for m in &c.members {
                c.set_clock_offset(m.id, 0)?;
            }
            Ok("clocks reset".into())
        }
        Heal::AddBack(id) => {
            add_back(cluster, admin_client, id).await?;
            Ok(format!("n{id} added back"))
        }
    }
}

/// AddNode of member `id` (it may be a voter again already).
pub async fn add_back(cluster: &SharedCluster, admin_client: &Client, id: u64) -> anyhow::Result<()> {
    let member = cluster.lock().await.members.iter().find(|m| m.id == id).cloned().context("no such member")?;
    let req = pb::AddNodeRequest { member: Some(member) };
    admin(admin_client.add_node(req)).await.map(drop)
}

/// Undoes every fault there may be: every node running and resumed, the relay healed, the
/// clocks reset, every node a voter.
pub async fn heal_all(cluster: &SharedCluster, admin_client: &Client) -> anyhow::Result<()> {
    let ids: BTreeSet<u64> = {
        let mut c = cluster.lock().await;
        c.relay().heal();
        let ids: BTreeSet<u64> = c.members.iter().map(|m| m.id).collect();
        for id in &ids {
            c.restart(*id)?;
            c.pause(*id, false)?;
            if c.spec.faketime.is_some() {
                c.set_clock_offset(*id, 0)?;
            }
        }
        ids
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = admin(admin_client.status(pb::StatusRequest {})).await;
        let missing: Vec<u64> = match &status {
            Ok(s) => {
                let voters: BTreeSet<u64> = s.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect();
                ids.difference(&voters).copied().collect()
            }
            Err(_) => Vec::new(),
        };
        if status.is_ok() && missing.is_empty() {
            return Ok(());
        }
        for id in missing {
            let _ = add_back(cluster, admin_client, id).await;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the cluster did not take every node back as a voter in 120 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
