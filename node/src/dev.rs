//! `keyquorum dev`: a local cluster of real node processes, one per region, on loopback with
//! RocksDB and mTLS (its CA and certificates are made on first run, in `<data_dir>/tls`). A second run on the same data dir reuses the cluster and its keys.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use client::{pb, Client};

use crate::tls::{Authority, Credentials, Role};

const REGIONS: [&str; 9] =
    ["region-a", "region-b", "region-c", "region-d", "region-e", "region-f", "region-g", "region-h", "region-i"];

struct Children(Vec<(u64, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
        }
        for (id, child) in &mut self.0 {
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
    }
}

/// How long the dev cluster's certificates last.
const DEV_CERT_DAYS: u32 = 3650;

/// The dev cluster's PKI in `<data_dir>/tls`: a CA (made once, kept), a certificate per node
/// and one for the operator (`admin/dev`), each made when missing.
fn dev_pki(data_dir: &Path, nodes: u64) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let ca = if dir.join("ca.key").exists() {
        Authority::read(&dir.join("ca.pem"), &dir.join("ca.key"))?
    } else {
        let ca = Authority::generate("keyquorum dev CA", DEV_CERT_DAYS)?;
        ca.write(&dir)?;
        ca
    };
    // Node certificates are made afresh on every start (the CA stays): they name the WAN
    // relay's front address too.
    for id in 1..=nodes {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string(), front_ip(id).to_string()];
        ca.issue(&Role::Node(id), &hosts, DEV_CERT_DAYS)?.write(&dir, &format!("node-{id}"))?;
    }
    if !dir.join("admin.pem").exists() {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        ca.issue(&Role::Admin("dev".into()), &hosts, DEV_CERT_DAYS)?.write(&dir, "admin")?;
    }
    Ok(dir)
}

/// With the WAN relay, where node `id` (region `id - 1`) is reached and dials from.
fn front_ip(id: u64) -> std::net::Ipv4Addr {
    wan::region_ip((id - 1) as usize, 1)
}

/// Where a client in region `index` connects from, with the WAN relay.
fn client_ip(index: usize) -> std::net::Ipv4Addr {
    wan::region_ip(index, 200)
}

/// Writes node `id`'s config file and returns its path. With the WAN relay, the node
/// advertises (and dials from) its region's front address.
fn write_config(
    data_dir: &Path,
    tls: &Path,
    id: u64,
    port: u16,
    wan: bool,
    preferred: &str,
) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let region = REGIONS[(id - 1) as usize];
    let wan = if wan {
        format!("advertise = \"{}:{port}\"\ndial_from = \"{}\"\n", front_ip(id), front_ip(id))
    } else {
        String::new()
    };
    let raft = if preferred.is_empty() {
        String::new()
    } else {
        format!("[raft]\npreferred_leader_region = \"{preferred}\"\n\n")
    };
    let config = format!(
        "id = {id}\nlisten = \"127.0.0.1:{port}\"\n{wan}region = \"{region}\"\ndata_dir = \"{}\"\n\n{raft}[tls]\n\
         ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("data").display(),
        tls.join("ca.pem").display(),
        tls.join(format!("node-{id}.pem")).display(),
        tls.join(format!("node-{id}.key")).display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// The emulated WAN between the dev cluster's regions (`--wan-latency-ms`).
#[derive(Debug, Clone, Default)]
pub struct WanOptions {
    /// One-way latency between two regions; 0: no relay, nodes talk directly.
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Every node's `raft.preferred_leader_region` (empty: none).
    pub preferred_leader_region: String,
}

/// Records whether `data_dir` was made with the relay: the members' addresses live in the
/// replicated log, so a cluster cannot switch later.
fn check_mode(data_dir: &Path, wan: bool) -> anyhow::Result<()> {
    let marker = data_dir.join("wan");
    let made = data_dir.join("node-1").exists();
    match (made, marker.exists(), wan) {
        (false, _, true) => std::fs::write(&marker, "this dev cluster runs through the WAN relay\n")?,
        (false, true, false) => std::fs::remove_file(&marker)?,
        (true, had, wan) if had != wan => bail!(
            "{} holds a dev cluster made {} --wan-latency-ms: its members' addresses are in its log; \
             use another --data-dir",
            data_dir.display(),
            if had { "with" } else { "without" }
        ),
        _ => {}
    }
    Ok(())
}

pub async fn run(data_dir: PathBuf, nodes: u64, base_port: u16, wan: WanOptions) -> anyhow::Result<()> {
    let preferred = wan.preferred_leader_region.clone();
    let exe = std::env::current_exe().context("cannot find the keyquorum binary")?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let with_wan = wan.latency_ms > 0 || wan.jitter_ms > 0;
    check_mode(&data_dir, with_wan)?;
    let relay = wan::Relay::new(rand::random());
    relay.set_default_link(wan::LinkSpec {
        latency: Duration::from_millis(wan.latency_ms),
        jitter: Duration::from_millis(wan.jitter_ms),
        loss: 0.0,
    });
    let mut fronts = Vec::new();
    let mut members = Vec::new();
    for id in 1..=nodes {
        let port = base_port.checked_add((id - 1) as u16).context("port out of range")?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is in use: stop whatever holds it or pass --base-port");
        }
        let region = REGIONS[(id - 1) as usize];
        let addr = if with_wan {
            relay.add_region(region, wan::region_net((id - 1) as usize))?;
            let front = std::net::SocketAddr::new(front_ip(id).into(), port);
            fronts.push(relay.listen(front, ([127, 0, 0, 1], port).into(), region).await?);
            front.to_string()
        } else {
            format!("127.0.0.1:{port}")
        };
        members.push(pb::Member { id, addr, region: region.into(), zone: String::new() });
    }
    let tls = dev_pki(&data_dir, nodes)?;
    let mut children = Children(Vec::new());
    for m in &members {
        let port = m.addr.rsplit(':').next().unwrap_or("0").parse()?;
        let config = write_config(&data_dir, &tls, m.id, port, with_wan, &preferred)?;
        let log_path = config.with_file_name("node.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut command = Command::new(&exe);
        // The nodes' config is the file; a client's settings in this shell must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("KEYQUORUM_") && k != "KEYQUORUM_LOG") {
                command.env_remove(&k);
            }
        }
        let child = command
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {}", m.id))?;
        eprintln!("started node {} ({}, pid {}) at {}, log {}", m.id, m.region, child.id(), m.addr, log_path.display());
        children.0.push((m.id, child));
    }
    let endpoints: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    let (ca, admin_cert, admin_key) = (tls.join("ca.pem"), tls.join("admin.pem"), tls.join("admin.key"));
    let client = Client::new(&endpoints, Some(Credentials::read(&ca, &admin_cert, &admin_key)?.client_config()))?;
    // Wait for every node to answer.
    for (i, m) in members.iter().enumerate() {
        let mut up = false;
        for _ in 0..300 {
            if client.admin_at(i, |mut a| async move { a.local_status(pb::StatusRequest {}).await }).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            bail!(
                "node {} did not come up in 30 s; see {}",
                m.id,
                data_dir.join(format!("node-{}/node.log", m.id)).display()
            );
        }
    }
    let status = client.admin_at(0, |mut a| async move { a.local_status(pb::StatusRequest {}).await }).await?;
    if status.initialized {
        eprintln!("reusing the existing cluster in {}", data_dir.display());
    } else {
        let req = pb::InitRequest { members: members.clone() };
        let r = client.admin_at(0, |mut a| async move { a.init(req).await }).await?;
        eprintln!("initialised: {} share holders, any {} can unwrap", r.holders, r.shares_needed);
    }
    // Ready when a linearizable read succeeds.
    let mut ready = false;
    for _ in 0..300 {
        let req = pb::ListKeysRequest { page_size: 1, page_token: String::new(), consistency: None };
        if client
            .kms(|mut k| {
                let req = req.clone();
                async move { k.list_keys(req).await }
            })
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        bail!("the cluster did not become ready in 30 s; see the node logs in {}", data_dir.display());
    }
    let joined = endpoints.join(",");
    println!("ready: {joined}");
    if with_wan {
        println!(
            "WAN relay: {} ms one way between regions (+0..{} ms jitter); a client's region is its source address:",
            wan.latency_ms, wan.jitter_ms
        );
        for (i, m) in members.iter().enumerate() {
            println!("  {}: KEYQUORUM_REGION={} KEYQUORUM_SOURCE_IP={}", m.region, m.region, client_ip(i));
        }
    }
    println!();
    println!("Try it (in another terminal):");
    println!("  export KEYQUORUM_ENDPOINTS={joined}");
    println!("  export KEYQUORUM_TLS_CA={}", ca.display());
    println!("  export KEYQUORUM_TLS_CERT={}", admin_cert.display());
    println!("  export KEYQUORUM_TLS_KEY={}", admin_key.display());
    println!("  keyquorum key create --alias demo");
    println!("  echo -n 'hello' | keyquorum encrypt --key alias/demo --context app=tour > /tmp/hello.kq");
    println!("  keyquorum decrypt --context app=tour --in /tmp/hello.kq");
    println!("Press Ctrl-C to stop the cluster.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = check.tick() => {
                // A node that dies (or is killed, to watch failover) is reported; the others
                // and the relay go on. The next `keyquorum dev` brings it back.
                children.0.retain_mut(|(id, child)| match child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!(
                            "node {id} exited ({status}); the cluster goes on without it (see {}); run keyquorum dev again to bring it back",
                            data_dir.join(format!("node-{id}/node.log")).display()
                        );
                        false
                    }
                    _ => true,
                });
            }
        }
    }
    eprintln!("stopping the cluster");
    drop(children);
    drop(fronts);
    eprintln!("stopped; data kept in {}", data_dir.display());
    Ok(())
}
