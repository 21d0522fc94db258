//! A cluster of real `keyquorum server` processes on this machine, on loopback, with RocksDB
//! and mTLS, optionally through the WAN relay: what `keyquorum dev` runs, what the
//! multi-process tests start, and what the Jepsen harness drives (kill -9 and restart, pause
//! and resume, partitions through the relay, clock offsets).
//!
//! Node `id` is in region `(id - 1) % regions`. Its process's output goes to
//! `<data_dir>/node-<id>/node.log`. Dropping the cluster stops every process it started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use client::{pb, Client, ClientOptions, ClientTlsConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use raft::Principal;

use crate::pki::Authority;

const REGIONS: [&str; 9] =
    ["region-a", "region-b", "region-c", "region-d", "region-e", "region-f", "region-g", "region-h", "region-i"];

/// How long the local cluster's certificates last.
const CERT_DAYS: u32 = 3650;

/// `[raft]` settings for tests: short timeouts and frequent snapshots, so elections, catch-up
/// by snapshot and failover happen in seconds on loopback.
pub const QUICK_RAFT: &str = "heartbeat_ms = 50\nelection_timeout_ms_min = 300\nelection_timeout_ms_max = 600\n\
    rpc_timeout_ms = 1000\nrequest_timeout_ms = 3000\nsnapshot_every_entries = 20\nkeep_entries_after_snapshot = 0\n";

/// The name of region `index` (0-based): `region-a`, ...
pub fn region_name(index: usize) -> &'static str {
    REGIONS[index % REGIONS.len()]
}

/// The emulated WAN between the regions.
#[derive(Debug, Clone, Default)]
pub struct WanOptions {
    /// One-way latency between two regions; with this and `jitter_ms` 0, no relay: nodes
    /// talk directly.
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Every node's `raft.preferred_leader_region` (empty: none).
    pub preferred_leader_region: String,
    /// Run through the relay even with no latency (to partition regions).
    pub force_relay: bool,
}

impl WanOptions {
    /// Whether the nodes run through the relay.
    pub fn relayed(&self) -> bool {
        self.force_relay || self.latency_ms > 0 || self.jitter_ms > 0
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub data_dir: PathBuf,
    pub nodes: u64,
    /// Regions the nodes go round (at most 9).
    pub regions: usize,
    /// Node `id` listens on `base_port + id - 1`; with 0, on a free port of the system's
    /// choosing.
    pub base_port: u16,
    pub wan: WanOptions,
    /// The `keyquorum` binary to run.
    pub exe: PathBuf,
    /// libfaketime's shared library: when set, every node runs under it (`LD_PRELOAD`) with
    /// its wall clock offset by [`LocalCluster::set_clock_offset`]; monotonic time (all of
    /// Raft's timers) is left alone.
    pub faketime: Option<PathBuf>,
    /// More environment for every node (`FAILPOINTS` for a failpoint build, say).
    pub env: Vec<(String, String)>,
    /// Lines for every node's `[raft]` table (e.g. [`QUICK_RAFT`]).
    pub raft: String,
}

impl Spec {
    /// `nodes` nodes, one per region (at most 9 regions), on free ports, talking directly,
    /// running `exe`, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, nodes: u64, exe: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            nodes,
            regions: (nodes as usize).clamp(1, REGIONS.len()),
            base_port: 0,
            wan: WanOptions::default(),
            exe: exe.into(),
            faketime: None,
            env: Vec::new(),
            raft: String::new(),
        }
    }
}

/// The running cluster. Dropping it stops every node (SIGTERM, then SIGKILL after 10 s).
#[derive(Debug)]
pub struct LocalCluster {
    pub spec: Spec,
    pub members: Vec<pb::Member>,
    /// `ca.pem`, `admin.pem` and `admin.key` are here.
    pub tls_dir: PathBuf,
    relay: wan::Relay,
    _fronts: Vec<wan::Front>,
    ports: BTreeMap<u64, u16>,
    configs: BTreeMap<u64, PathBuf>,
    children: BTreeMap<u64, Child>,
    /// Lines [`LocalCluster::configure`] put at the top of a node's config.
    extra_config: BTreeMap<u64, String>,
    /// The directory [`LocalCluster::start_in_temp_dir`] made; removed after the nodes stop,
    /// unless `KQ_KEEP_TEST_DIRS` is set (for debugging a failed test).
    temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Makes what is missing (certificates, configs, data dirs) and starts every node. The
    /// cluster is not initialised: see [`LocalCluster::init_if_needed`].
    pub async fn start(spec: Spec) -> anyhow::Result<Self> {
        if spec.regions == 0 || spec.regions > REGIONS.len() {
            bail!("regions must be between 1 and {}", REGIONS.len());
        }
        let data_dir = &spec.data_dir;
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let relayed = spec.wan.relayed();
        check_mode(data_dir, relayed)?;
        let relay = wan::Relay::new(rand::random());
        relay.set_default_link(wan::LinkSpec {
            latency: Duration::from_millis(spec.wan.latency_ms),
            jitter: Duration::from_millis(spec.wan.jitter_ms),
            loss: 0.0,
        });
        if relayed {
            for r in 0..spec.regions {
                relay.add_region(region_name(r), wan::region_net(r))?;
            }
        }
        let tls_dir = pki(&spec)?;
        let mut cluster = Self {
            members: Vec::new(),
            tls_dir,
            relay,
            _fronts: Vec::new(),
            ports: BTreeMap::new(),
            configs: BTreeMap::new(),
            children: BTreeMap::new(),
            extra_config: BTreeMap::new(),
            spec,
            temp: None,
        };
        for id in 1..=cluster.spec.nodes {
            cluster.add_node(id).await?;
        }
        Ok(cluster)
    }

    /// [`LocalCluster::start`] in a new temporary directory (`spec.data_dir` is ignored),
    /// removed when the cluster is dropped.
    pub async fn start_in_temp_dir(mut spec: Spec) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        spec.data_dir = temp.path().to_path_buf();
        let mut cluster = Self::start(spec).await?;
        cluster.temp = Some(temp);
        Ok(cluster)
    }

    /// Makes node `id` (its address, certificate, config and data dir, if missing) and starts
    /// it. A node beyond the spec's first ones is not a member of the cluster until it is
    /// added through the admin API.
    pub async fn add_node(&mut self, id: u64) -> anyhow::Result<pb::Member> {
        if self.ports.contains_key(&id) {
            bail!("node {id} exists");
        }
        let spec = &self.spec;
        let port = if spec.base_port == 0 {
            free_port()?
        } else {
            spec.base_port.checked_add((id - 1) as u16).context("port out of range")?
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is in use: stop whatever holds it or pass another base port");
        }
        let region = region_name(spec.region_index(id));
        let addr = if spec.wan.relayed() {
            let front = std::net::SocketAddr::new(spec.front_ip(id).into(), port);
            self._fronts.push(self.relay.listen(front, ([127, 0, 0, 1], port).into(), region).await?);
            front.to_string()
        } else {
            format!("127.0.0.1:{port}")
        };
        self.ports.insert(id, port);
        let member = pb::Member { id, addr, region: region.into(), zone: String::new() };
        self.members.push(member.clone());
        let ca = self.authority()?;
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string(), self.spec.front_ip(id).to_string()];
        ca.issue(&Principal::Node(id), &hosts, CERT_DAYS)?.write(&self.tls_dir, &format!("node-{id}"))?;
        let config = self.write_config(id)?;
        self.configs.insert(id, config);
        self.spawn(id)?;
        Ok(member)
    }

    /// The relay between the regions (partitions, latency); inert without one.
    pub fn relay(&self) -> &wan::Relay {
        &self.relay
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("node.log")
    }

    /// What node `id` has logged so far (empty if nothing).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Node `id`'s directory: its config, log and data.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.spec.data_dir.join(format!("node-{id}"))
    }

    /// Node `id`'s data dir (`data_dir` in its config).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("data")
    }

    /// Puts `line` at the top of node `id`'s config (top-level keys go before the tables); it
    /// takes effect at the node's next start.
    pub fn configure(&mut self, id: u64, line: &str) -> anyhow::Result<()> {
        if !self.configs.contains_key(&id) {
            bail!("no node {id}");
        }
        self.extra_config.entry(id).or_default().push_str(&format!("{line}\n"));
        self.write_config(id).map(drop)
    }

    /// Waits (at most `bound`) for node `id`'s process to exit by itself; its exit status, or
    /// `None` if it still runs (or never ran).
    pub async fn wait_exit(&mut self, id: u64, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let status = self.children.get_mut(&id)?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.children.remove(&id);
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's mTLS configuration.
    pub fn admin_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        self.tls("admin")
    }

    /// The cluster's CA, from its files.
    pub fn authority(&self) -> anyhow::Result<Authority> {
        Authority::read(&self.tls_dir.join("ca.pem"), &self.tls_dir.join("ca.key"))
    }

    /// Issues a certificate for `principal` as `<stem>.pem` and `<stem>.key` in the cluster's
    /// tls directory.
    pub fn issue(&self, principal: &Principal, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let hosts = ["127.0.0.1".to_string()];
        self.authority()?.issue(principal, &hosts, CERT_DAYS)?.write(&self.tls_dir, stem)
    }

    /// [`LocalCluster::issue`] for a principal given as text (`client/NAME`, `admin/NAME`).
    pub fn issue_for(&self, principal: &str, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue(&Principal::parse(principal).map_err(anyhow::Error::msg)?, stem)
    }

    /// mTLS presenting the certificate `<stem>` of the cluster's tls directory.
    pub fn tls(&self, stem: &str) -> anyhow::Result<ClientTlsConfig> {
        let dir = &self.tls_dir;
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        Ok(client::tls_config_from_files(&dir.join("ca.pem"), &cert, &key)?)
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u64) -> anyhow::Result<String> {
        self.members.iter().find(|m| m.id == id).map(|m| m.addr.clone()).with_context(|| format!("no node {id}"))
    }

    /// Node `id`'s region.
    pub fn region_of(&self, id: u64) -> String {
        region_name(self.spec.region_index(id)).to_string()
    }

    /// A client presenting the certificate `<stem>` ([`LocalCluster::issue`]), starting from
    /// the nodes `ids`, with `options`.
    pub fn client_as(&self, stem: &str, ids: &[u64], options: ClientOptions) -> anyhow::Result<Client> {
        let endpoints = ids.iter().map(|id| self.addr(*id)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Client::with_options(&endpoints, Some(self.tls(stem)?), options)?)
    }

    /// The operator's (`admin/dev`) client of the nodes `ids` and no others (no discovery).
    pub fn admin_for(&self, ids: &[u64]) -> anyhow::Result<Client> {
        self.client_as("admin", ids, ClientOptions { discover: false, ..ClientOptions::default() })
    }

    /// The application's (`client/dev`) client of the nodes `ids` and no others (no
    /// discovery).
    pub fn client_for(&self, ids: &[u64]) -> anyhow::Result<Client> {
        self.client_as("client", ids, ClientOptions { discover: false, ..ClientOptions::default() })
    }

    /// Node `id`'s own status, as its operator sees it.
    pub async fn local_status(&self, id: u64) -> anyhow::Result<pb::NodeStatus> {
        Ok(self.admin_for(&[id])?.local_status(pb::StatusRequest {}).await?)
    }

    /// `ca.pem`, `admin.pem`, `admin.key`: the operator's (`admin/dev`) files.
    pub fn admin_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        (self.tls_dir.join("ca.pem"), self.tls_dir.join("admin.pem"), self.tls_dir.join("admin.key"))
    }

    /// `ca.pem`, `client.pem`, `client.key`: the application's (`client/dev`) files.
    pub fn client_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        (self.tls_dir.join("ca.pem"), self.tls_dir.join("client.pem"), self.tls_dir.join("client.key"))
    }

    /// A region-aware client of every node, as the operator (`admin/dev`): the Admin API.
    pub fn admin(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.endpoints(), Some(self.admin_tls()?))?)
    }

    /// A region-aware client of every node, as the application (`client/dev`): the KMS API.
    /// Administrators cannot create or use keys (separation of duties).
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.endpoints(), Some(self.tls("client")?))?)
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    /// Waits until every running node answers (at most `bound`).
    pub async fn wait_up(&self, bound: Duration) -> anyhow::Result<()> {
        let client = self.admin()?;
        for (i, m) in self.members.iter().enumerate() {
            if !self.children.contains_key(&m.id) {
                continue;
            }
            let node = client.only(i)?;
            let up = tokio::time::timeout(bound, async {
                while node.local_status(pb::StatusRequest {}).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            if up.await.is_err() {
                bail!("node {} did not come up in {bound:?}; see {}", m.id, self.log_path(m.id).display());
            }
        }
        Ok(())
    }

    /// Initialises the cluster through node 1 unless it already is; returns whether it did.
    pub async fn init_if_needed(&self) -> anyhow::Result<Option<pb::InitResponse>> {
        let first = self.admin()?.only(0)?;
        let status = first.local_status(pb::StatusRequest {}).await?;
        if status.initialized {
            return Ok(None);
        }
        let req = pb::InitRequest { members: self.members.clone() };
        Ok(Some(first.init(req).await?))
    }

    /// Waits (at most `bound`) until a linearizable read succeeds.
    pub async fn wait_ready(&self, bound: Duration) -> anyhow::Result<()> {
        let client = self.client()?;
        let ready = tokio::time::timeout(bound, async {
            loop {
                let req = pb::ListKeysRequest { page_size: 1, page_token: String::new(), consistency: None };
                let listed = client.list_keys(req);
                if listed.await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        if ready.await.is_err() {
            bail!(
                "the cluster did not become ready in {bound:?}; see the node logs in {}",
                self.spec.data_dir.display()
            );
        }
        Ok(())
    }

    /// kill -9 of node `id` (a no-op if it is not running).
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut child) = self.children.remove(&id) {
            child.kill().with_context(|| format!("cannot kill node {id}"))?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts node `id` again on its data dir (a no-op if it is running).
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.children.contains_key(&id) {
            return Ok(());
        }
        self.spawn(id)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `id`.
    pub fn pause(&self, id: u64, stop: bool) -> anyhow::Result<()> {
        let pid = self.pid(id).with_context(|| format!("node {id} is not running"))?;
        let pid = Pid::from_raw(i32::try_from(pid)?);
        kill(pid, if stop { Signal::SIGSTOP } else { Signal::SIGCONT })
            .with_context(|| format!("cannot signal node {id}"))
    }

    /// Sets node `id`'s wall clock `offset_secs` from the real one (the cluster must run under
    /// libfaketime, `Spec::faketime`); takes effect within a second, and survives restarts.
    pub fn set_clock_offset(&self, id: u64, offset_secs: i64) -> anyhow::Result<()> {
        if self.spec.faketime.is_none() {
            bail!("the nodes do not run under libfaketime");
        }
        let file = self.clock_file(id);
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset_secs:+}\n"))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.spec.data_dir.join(format!("node-{id}/faketime.rc"))
    }

    /// The nodes that exited since the last call, with how.
    pub fn reap(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        let mut gone = Vec::new();
        self.children.retain(|id, child| match child.try_wait() {
            Ok(Some(status)) => {
                gone.push((*id, status));
                false
            }
            _ => true,
        });
        gone
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let config = self.configs.get(&id).with_context(|| format!("no node {id}"))?;
        let log_path = self.log_path(id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut command = Command::new(&self.spec.exe);
        // The nodes' config is the file; a client's settings in this shell must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("KEYQUORUM_") && k != "KEYQUORUM_LOG") {
                command.env_remove(&k);
            }
        }
        if let Some(lib) = &self.spec.faketime {
            let file = self.clock_file(id);
            if !file.exists() {
                std::fs::write(&file, "+0\n")?;
            }
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                // Re-read the offset at most once a second.
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        command.envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .arg("server")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Writes node `id`'s config file and returns its path. Through the relay, the node
    /// advertises (and dials from) its region's front address.
    fn write_config(&self, id: u64) -> anyhow::Result<PathBuf> {
        let spec = &self.spec;
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let port = self.ports[&id];
        let region = region_name(spec.region_index(id));
        let wan = if spec.wan.relayed() {
            let front = spec.front_ip(id);
            format!("advertise = \"{front}:{port}\"\ndial_from = \"{front}\"\n")
        } else {
            String::new()
        };
        let preferred = &spec.wan.preferred_leader_region;
        let mut raft = spec.raft.clone();
        if !preferred.is_empty() {
            raft.push_str(&format!("preferred_leader_region = \"{preferred}\"\n"));
        }
        let raft = if raft.is_empty() { raft } else { format!("[raft]\n{raft}\n") };
        let tls = &self.tls_dir;
        let config = format!(
            "id = {id}\nlisten = \"127.0.0.1:{port}\"\n{wan}region = \"{region}\"\ndata_dir = \"{}\"\n\n{raft}[tls]\n\
             ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("data").display(),
            tls.join("ca.pem").display(),
            tls.join(format!("node-{id}.pem")).display(),
            tls.join(format!("node-{id}.key")).display(),
        );
        let path = dir.join("config.toml");
        let extra = self.extra_config.get(&id).map(String::as_str).unwrap_or_default();
        std::fs::write(&path, format!("{extra}{config}"))?;
        Ok(path)
    }
}

impl Spec {
    pub fn region_index(&self, id: u64) -> usize {
        ((id - 1) as usize) % self.regions
    }

    /// Through the relay, where node `id` is reached and dials from: host `(id - 1) / regions
    /// + 1` of its region's /24.
    pub fn front_ip(&self, id: u64) -> std::net::Ipv4Addr {
        let host = ((id - 1) as usize / self.regions + 1) as u8;
        wan::region_ip(self.region_index(id), host)
    }

    /// Where a client in region `index` connects from, through the relay.
    pub fn client_ip(index: usize) -> std::net::Ipv4Addr {
        wan::region_ip(index, 200)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.values() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // A paused node must be resumed to act on SIGTERM.
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for (id, child) in &mut self.children {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        eprintln!("node {id} did not stop in 10 s; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(temp) = self.temp.take() {
            if std::env::var_os("KQ_KEEP_TEST_DIRS").is_some() {
                eprintln!("kept the cluster's directory: {}", temp.keep().display());
            }
        }
    }
}

/// A port for a node of a cluster without a base port: from 20000-31999, below Linux's
/// ephemeral range (32768-60999) where outgoing connections take their source ports, so a port
/// found free here stays free until its node binds it (a port the system hands out for port 0
/// may be taken by one of the many outgoing connections of the clusters running beside it
/// before the node binds it). A counter per process, started where the process id puts it,
/// keeps the clusters of one test binary, and of test binaries beside each other, apart.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {LOW}-{}", LOW + SPAN - 1)
}

/// The cluster's PKI in `<data_dir>/tls`: a CA (made once, kept) and a certificate for the
/// operator (`admin/dev`) and one for an application (`client/dev`), made when missing.
fn pki(spec: &Spec) -> anyhow::Result<PathBuf> {
    let dir = spec.data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let ca = if dir.join("ca.key").exists() {
        Authority::read(&dir.join("ca.pem"), &dir.join("ca.key"))?
    } else {
        let ca = Authority::generate("keyquorum dev CA", CERT_DAYS)?;
        ca.write(&dir)?;
        ca
    };
    // Node certificates are made afresh on every start (the CA stays, `add_node`): they
    // name the WAN relay's front address too.
    if !dir.join("admin.pem").exists() {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        ca.issue(&Principal::Admin("dev".into()), &hosts, CERT_DAYS)?.write(&dir, "admin")?;
    }
    if !dir.join("client.pem").exists() {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        ca.issue(&Principal::Client("dev".into()), &hosts, CERT_DAYS)?.write(&dir, "client")?;
    }
    Ok(dir)
}

/// Records whether `data_dir` was made with the relay: the members' addresses live in the
/// replicated log, so a cluster cannot switch later.
fn check_mode(data_dir: &Path, relayed: bool) -> anyhow::Result<()> {
    let marker = data_dir.join("wan");
    let made = data_dir.join("node-1").exists();
    match (made, marker.exists(), relayed) {
        (false, _, true) => std::fs::write(&marker, "this cluster runs through the WAN relay\n")?,
        (false, true, false) => std::fs::remove_file(&marker)?,
        (true, had, relayed) if had != relayed => bail!(
            "{} holds a cluster made {} the WAN relay: its members' addresses are in its log; use another data dir",
            data_dir.display(),
            if had { "with" } else { "without" }
        ),
        _ => {}
    }
    Ok(())
}
