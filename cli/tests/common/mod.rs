//! What the multi-process tests share: a [`testbed::LocalCluster`] of real `keyquorum server`
//! processes (quick Raft timings, in a temporary directory) behind a few test conveniences
//! that fail loudly, and helpers for the calls the tests make. Every wait is bounded; dropping
//! the cluster stops every node.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use client::{pb, Client, ClientOptions, ClientTlsConfig};
use raft::Principal;
use testbed::{LocalCluster, Spec, WanOptions, QUICK_RAFT};
use tonic::Status;

/// A local cluster for one test. Everything of [`LocalCluster`] is reachable through it.
#[derive(Debug)]
pub struct Cluster {
    pub inner: LocalCluster,
    /// Each node's address, as clients reach it.
    pub addrs: BTreeMap<u64, String>,
}

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.inner
    }
}

/// The name of region `index` (0-based): `region-a`, ...
pub fn wan_region(index: usize) -> String {
    testbed::region_name(index).to_string()
}

/// The address a client in region `index` connects from, under the relay.
pub fn wan_client_ip(index: usize) -> std::net::IpAddr {
    Spec::client_ip(index).into()
}

/// The region of node `id` in a cluster made by [`Cluster::start`] (five regions, in turn).
pub fn region(id: u64) -> String {
    wan_region(((id - 1) % 5) as usize)
}

fn exe() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_keyquorum").into()
}

impl Cluster {
    async fn from_spec(spec: Spec) -> Self {
        let inner = LocalCluster::start_in_temp_dir(spec).await.unwrap();
        let addrs = inner.members.iter().map(|m| (m.id, m.addr.clone())).collect();
        Self { inner, addrs }
    }

    /// `n` nodes talking directly, node `id` in region [`region`]`(id)`.
    pub async fn start(n: u64) -> Self {
        Self::from_spec(Spec { regions: 5, raft: QUICK_RAFT.into(), ..Spec::new("", n, exe()) }).await
    }

    /// `n` nodes talking directly, with the production raft timings (not the quick ones).
    pub async fn start_with_default_raft(n: u64) -> Self {
        Self::from_spec(Spec { regions: 5, ..Spec::new("", n, exe()) }).await
    }

    /// `n` nodes over `regions` regions (node `id` in region `(id - 1) % regions`), every
    /// link between two regions `latency_ms` one way through the WAN relay.
    pub async fn start_wan(n: u64, regions: usize, latency_ms: u64) -> Self {
        Self::start_wan_with(n, regions, latency_ms, "").await
    }

    /// [`Cluster::start_wan`] with `raft_extra` added to every node's `[raft]` table.
    pub async fn start_wan_with(n: u64, regions: usize, latency_ms: u64, raft_extra: &str) -> Self {
        let spec = Spec {
            regions,
            wan: WanOptions { latency_ms, force_relay: true, ..WanOptions::default() },
            raft: format!("{QUICK_RAFT}{raft_extra}\n"),
            ..Spec::new("", n, exe())
        };
        Self::from_spec(spec).await
    }

    /// Makes node `id` and starts it (not yet a member: add it through the admin API).
    pub async fn add(&mut self, id: u64) {
        let member = self.inner.add_node(id).await.unwrap();
        self.addrs.insert(id, member.addr);
    }

    /// Starts node `id` again on its data dir.
    pub fn spawn(&mut self, id: u64) {
        self.inner.restart(id).unwrap();
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        self.inner.kill(id).unwrap();
    }

    /// Waits (at most 30 s) for node `id`'s process to exit by itself; its exit status.
    pub async fn exited(&mut self, id: u64) -> std::process::ExitStatus {
        self.inner.wait_exit(id, Duration::from_secs(30)).await.expect("the node exits within 30 s")
    }

    pub fn configure(&mut self, id: u64, line: &str) {
        self.inner.configure(id, line).unwrap();
    }

    /// Issues a certificate for `principal` into the cluster's tls dir as `<stem>.pem`/`.key`.
    pub fn issue(&self, principal: &Principal, stem: &str) {
        self.inner.issue(principal, stem).unwrap();
    }

    /// mTLS credentials from `<stem>.pem`/`.key` in the cluster's tls dir.
    pub fn credentials(&self, stem: &str) -> ClientTlsConfig {
        self.inner.tls(stem).unwrap()
    }

    /// The operator's (`admin/dev`) client of every node: the Admin API.
    pub fn admin(&self) -> Client {
        self.admin_for(&self.addrs.keys().copied().collect::<Vec<_>>())
    }

    /// The operator's client of the nodes `ids` and no others.
    pub fn admin_for(&self, ids: &[u64]) -> Client {
        self.inner.admin_for(ids).unwrap()
    }

    /// The application's (`client/dev`) client of every node: the KMS API.
    pub fn client(&self) -> Client {
        self.client_for(&self.addrs.keys().copied().collect::<Vec<_>>())
    }

    /// The application's client of the nodes `ids` and no others.
    pub fn client_for(&self, ids: &[u64]) -> Client {
        self.inner.client_for(ids).unwrap()
    }

    /// A client presenting the certificate `<stem>` (see [`Cluster::issue`]) to the nodes `ids`
    /// and no others (no discovery).
    pub fn client_as(&self, stem: &str, ids: &[u64]) -> Client {
        self.inner.client_as(stem, ids, ClientOptions { discover: false, ..Default::default() }).unwrap()
    }

    /// A client presenting the certificate `<stem>` to the nodes `ids`, with `options`.
    pub fn client_as_with(&self, stem: &str, ids: &[u64], options: ClientOptions) -> Client {
        self.inner.client_as(stem, ids, options).unwrap()
    }

    /// The application's client with `options`, starting from the nodes `ids`.
    pub fn client_with(&self, ids: &[u64], options: ClientOptions) -> Client {
        self.inner.client_as("client", ids, options).unwrap()
    }

    pub async fn local_status(&self, id: u64) -> Result<pb::NodeStatus, Status> {
        self.admin_for(&[id]).local_status(pb::StatusRequest {}).await.map_err(Status::from)
    }

    /// Waits until every running node answers, then initialises through node 1.
    pub async fn init(&self) {
        self.inner.wait_up(Duration::from_secs(30)).await.unwrap();
        let r = self.inner.init_if_needed().await.unwrap().expect("a new cluster is initialised");
        assert_eq!((r.holders, r.shares_needed), (self.addrs.len() as u32, self.addrs.len() as u32 / 2 + 1));
    }

    /// The id of the node that calls itself leader, once one does.
    pub async fn leader(&self) -> u64 {
        eventually("a leader is elected", || async {
            for id in self.addrs.keys() {
                if self.pid(*id).is_none() {
                    continue;
                }
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
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
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
    key_of(c.create_key(req).await)
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
    c.verify(req).await.map(|r| r.valid).map_err(Status::from)
}

/// The key a key call answered with.
pub fn key_of(r: Result<pb::KeyResponse, client::Error>) -> Result<pb::KeyMetadata, Status> {
    r.map(|r| r.key.unwrap()).map_err(Status::from)
}
