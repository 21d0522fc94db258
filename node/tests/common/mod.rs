//! A cluster of real `keyquorum server` processes on loopback, for multi-process tests.
//! Every wait is bounded; `Drop` kills whatever is still running.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use client::{pb, Client, ClientTlsConfig};
use node::tls::{Authority, Credentials, Role};
use tonic::Status;

#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
    /// The cluster CA; every node runs with mTLS.
    pub ca: Authority,
    /// With [`Cluster::start_wan`]: the relay between the regions and its front addresses.
    pub relay: Option<wan::Relay>,
    fronts: Vec<wan::Front>,
}

/// Region `index` (0-based) of node `id` in a WAN cluster: nodes go round the regions.
pub fn wan_region_index(id: u64, regions: u64) -> usize {
    ((id - 1) % regions) as usize
}

/// The address a client in region `index` connects from, under the relay.
pub fn wan_client_ip(index: usize) -> std::net::IpAddr {
    wan::region_ip(index, 200).into()
}

/// The name of WAN region `index` (0-based): `region-a`, ...
pub fn wan_region(index: usize) -> String {
    format!("region-{}", (b'a' + index as u8) as char)
}

pub fn region(id: u64) -> String {
    format!("region-{}", (b'a' + ((id - 1) % 5) as u8) as char)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Node config tuned for quick tests: short timeouts, frequent snapshots.
const RAFT: &str = "[raft]\nheartbeat_ms = 50\nelection_timeout_ms_min = 300\nelection_timeout_ms_max = 600\nrpc_timeout_ms = 1000\nrequest_timeout_ms = 3000\nsnapshot_every_entries = 20\nkeep_entries_after_snapshot = 0\n";

impl Cluster {
    pub fn start(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA", 1).unwrap();
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        ca.write(&dir.path().join("tls")).unwrap();
        let mut cluster =
            Self { dir, addrs: BTreeMap::new(), children: BTreeMap::new(), ca, relay: None, fronts: Vec::new() };
        cluster.issue(&Role::Admin("test".into()), "admin");
        for id in 1..=n {
            cluster.add(id);
        }
        cluster
    }

    /// `n` nodes over `regions` regions (`region-a`, ...; node `id` in region
    /// `wan_region_index(id)`), every link between two regions `latency_ms` one way through
    /// the WAN relay, which runs in the calling test's runtime. Node `id` listens on a private
    /// port and is reached (and dials out) at `127.0.<region+1>.<id>`.
    pub async fn start_wan(n: u64, regions: u64, latency_ms: u64) -> Self {
        Self::start_wan_with(n, regions, latency_ms, "").await
    }

    /// [`Cluster::start_wan`] with `raft_extra` appended to every node's `[raft]` table.
    pub async fn start_wan_with(n: u64, regions: u64, latency_ms: u64, raft_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA", 1).unwrap();
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        ca.write(&dir.path().join("tls")).unwrap();
        let relay = wan::Relay::new(1);
        for r in 0..regions as usize {
            relay.add_region(&wan_region(r), wan::region_net(r)).unwrap();
        }
        relay.set_default_link(wan::LinkSpec::latency(Duration::from_millis(latency_ms)));
        let mut cluster = Self {
            dir,
            addrs: BTreeMap::new(),
            children: BTreeMap::new(),
            ca,
            relay: Some(relay.clone()),
            fronts: Vec::new(),
        };
        cluster.issue(&Role::Admin("test".into()), "admin");
        for id in 1..=n {
            let r = wan_region_index(id, regions);
            let ip = wan::region_ip(r, id as u8);
            let backend = free_port();
            let front: std::net::SocketAddr =
                (ip, std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()).into();
            cluster.fronts.push(relay.listen(front, ([127, 0, 0, 1], backend).into(), &wan_region(r)).await.unwrap());
            cluster.addrs.insert(id, front.to_string());
            let extra = format!("dial_from = \"{ip}\"\n");
            cluster.write_config(
                id,
                &format!("127.0.0.1:{backend}"),
                &wan_region(r),
                &extra,
                raft_extra,
                &[ip.to_string()],
            );
            cluster.spawn(id);
        }
        cluster
    }

    /// Writes node `id`'s config (a fresh loopback port) and starts it.
    pub fn add(&mut self, id: u64) {
        let addr = format!("127.0.0.1:{}", free_port());
        self.addrs.insert(id, addr.clone());
        self.write_config(id, &addr, &region(id), "", "", &[]);
        self.spawn(id);
    }

    /// Node `id`'s certificate (naming `extra_hosts` too) and config: it listens on `listen`,
    /// advertises `self.addrs[id]`; `extra` goes at the top of the file.
    fn write_config(&self, id: u64, listen: &str, region: &str, extra: &str, raft_extra: &str, extra_hosts: &[String]) {
        let node_dir = self.node_dir(id);
        std::fs::create_dir_all(&node_dir).unwrap();
        let stem = format!("node-{id}");
        let mut hosts = vec!["127.0.0.1".to_string()];
        hosts.extend_from_slice(extra_hosts);
        self.ca.issue(&Role::Node(id), &hosts, 1).unwrap().write(&self.dir.path().join("tls"), &stem).unwrap();
        let tls = self.dir.path().join("tls");
        let config = format!(
            "id = {id}\nlisten = \"{listen}\"\nadvertise = \"{}\"\n{extra}region = \"{region}\"\ndata_dir = \"{}\"\n{RAFT}{raft_extra}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.addrs[&id],
            node_dir.join("data").display(),
            tls.join("ca.pem").display(),
            tls.join(format!("{stem}.pem")).display(),
            tls.join(format!("{stem}.key")).display(),
        );
        std::fs::write(node_dir.join("config.toml"), config).unwrap();
    }

    /// Issues a certificate for `role` into the cluster's tls dir as `<stem>.pem`/`.key`.
    pub fn issue(&self, role: &Role, stem: &str) {
        let hosts = ["127.0.0.1".to_string()];
        self.ca.issue(role, &hosts, 1).unwrap().write(&self.dir.path().join("tls"), stem).unwrap();
    }

    /// mTLS credentials from `<stem>.pem`/`.key` in the cluster's tls dir.
    pub fn credentials(&self, stem: &str) -> ClientTlsConfig {
        let tls = self.dir.path().join("tls");
        Credentials::read(&tls.join("ca.pem"), &tls.join(format!("{stem}.pem")), &tls.join(format!("{stem}.key")))
            .unwrap()
            .client_config()
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn spawn(&mut self, id: u64) {
        let node_dir = self.node_dir(id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node_dir.join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keyquorum"))
            .arg("server")
            .arg("--config")
            .arg(node_dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(id, child);
    }

    /// Waits (at most 30 s) for node `id`'s process to exit by itself; its exit status.
    pub async fn exited(&mut self, id: u64) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let child = self.children.get_mut(&id).expect("node was spawned");
            if let Some(status) = child.try_wait().unwrap() {
                self.children.remove(&id);
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {id} is still running after 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node's data dir and its log file.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("data")
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node_dir(id).join("node.log")).unwrap_or_default()
    }

    /// Puts `line` at the top of node `id`'s config (top-level keys go before the tables);
    /// takes effect at its next start.
    pub fn configure(&self, id: u64, line: &str) {
        let path = self.node_dir(id).join("config.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{line}\n{config}")).unwrap();
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn members(&self) -> Vec<pb::Member> {
        self.addrs
            .iter()
            .map(|(id, addr)| pb::Member {
                id: *id,
                addr: addr.clone(),
                region: self.region_of(*id),
                zone: String::new(),
            })
            .collect()
    }

    /// Node `id`'s region.
    pub fn region_of(&self, id: u64) -> String {
        let config = std::fs::read_to_string(self.node_dir(id).join("config.toml")).unwrap_or_default();
        config
            .lines()
            .find_map(|l| l.strip_prefix("region = \"").and_then(|r| r.strip_suffix('"')))
            .map_or_else(|| region(id), str::to_string)
    }

    pub fn client(&self) -> Client {
        self.client_for(&self.addrs.keys().copied().collect::<Vec<_>>())
    }

    /// An operator's client (role `admin/test`) for the nodes `ids`.
    pub fn client_for(&self, ids: &[u64]) -> Client {
        self.client_as("admin", ids)
    }

    /// A client presenting the certificate `<stem>` (see [`Cluster::issue`]) to the nodes `ids`
    /// and no others (no discovery).
    pub fn client_as(&self, stem: &str, ids: &[u64]) -> Client {
        let endpoints: Vec<&String> = ids.iter().map(|id| &self.addrs[id]).collect();
        let options = client::ClientOptions { discover: false, ..Default::default() };
        Client::with_options(&endpoints, Some(self.credentials(stem)), options).unwrap()
    }

    /// A region-aware client with `options`, starting from the nodes `ids`.
    pub fn client_with(&self, ids: &[u64], options: client::ClientOptions) -> Client {
        let endpoints: Vec<&String> = ids.iter().map(|id| &self.addrs[id]).collect();
        Client::with_options(&endpoints, Some(self.credentials("admin")), options).unwrap()
    }

    pub async fn local_status(&self, id: u64) -> Result<pb::NodeStatus, Status> {
        self.client_for(&[id]).local_status(pb::StatusRequest {}).await.map_err(Status::from)
    }

    /// Waits until every running node answers, then initialises through node 1.
    pub async fn init(&self) {
        for id in self.addrs.keys() {
            eventually(&format!("node {id} answers"), || async move { self.local_status(*id).await.map(drop) }).await;
        }
        let req = pb::InitRequest { members: self.members() };
        let r = self.client_for(&[1]).only(0).unwrap().init(req).await.unwrap();
        assert_eq!((r.holders, r.shares_needed), (self.addrs.len() as u32, self.addrs.len() as u32 / 2 + 1));
    }

    /// The id of the node that calls itself leader, once one does.
    pub async fn leader(&self) -> u64 {
        eventually("a leader is elected", || async {
            for id in self.children.keys() {
                if let Ok(s) = self.local_status(*id).await {
                    if s.role == "leader" {
                        return Ok(*id);
                    }
                }
            }
            Err(Status::unavailable("no leader yet"))
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // For debugging a failed test: keep the nodes' data and logs.
        if std::env::var_os("KQ_KEEP_TEST_DIRS").is_some() {
            if let Ok(placeholder) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, placeholder).keep();
                eprintln!("kept the cluster's directory: {}", kept.display());
            }
        }
    }
}

/// Retries `f` every 100 ms until it succeeds, for at most 30 s; panics with the last error.
pub async fn eventually<T, E, F, Fut>(what: &str, f: F) -> T
where
    E: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: still failing after 30 s: {e:?}"),
        }
    }
}

pub fn ctx(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub async fn create_key(c: &Client, alias: &str, spec: pb::KeySpec) -> Result<pb::KeyMetadata, Status> {
    let req = pb::CreateKeyRequest {
        spec: spec as i32,
        alias: alias.into(),
        idempotency_token: format!("create-{alias}"),
        ..Default::default()
    };
    c.create_key(req).await.map_err(Status::from).map(|r| r.key.unwrap())
}

pub async fn encrypt(
    c: &Client,
    key: &str,
    plaintext: &[u8],
    context: &[(&str, &str)],
) -> Result<pb::EncryptResponse, Status> {
    let req = pb::EncryptRequest {
        key: key.into(),
        plaintext: plaintext.to_vec(),
        encryption_context: ctx(context),
        consistency: None,
    };
    c.encrypt(req).await.map_err(Status::from)
}

pub async fn decrypt(c: &Client, ciphertext: &[u8], context: &[(&str, &str)]) -> Result<pb::DecryptResponse, Status> {
    let req =
        pb::DecryptRequest { ciphertext: ciphertext.to_vec(), encryption_context: ctx(context), ..Default::default() };
    c.decrypt(req).await.map_err(Status::from)
}

pub async fn sign(c: &Client, key: &str, message: &[u8]) -> Result<pb::SignResponse, Status> {
    let req = pb::SignRequest { key: key.into(), message: message.to_vec(), consistency: None };
    c.sign(req).await.map_err(Status::from)
}

pub async fn verify(c: &Client, key: &str, message: &[u8], signature: &[u8], key_version: u32) -> Result<bool, Status> {
    let req = pb::VerifyRequest {
        key: key.into(),
        message: message.to_vec(),
        signature: signature.to_vec(),
        key_version,
        consistency: None,
    };
    c.verify(req).await.map_err(Status::from).map(|r| r.valid)
}

/// The key a key call answered with.
pub fn key_of(r: Result<pb::KeyResponse, client::Error>) -> Result<pb::KeyMetadata, Status> {
    r.map(|r| r.key.unwrap()).map_err(Status::from)
}
