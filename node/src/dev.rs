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
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    let mut wanted: Vec<(Role, String)> = (1..=nodes).map(|id| (Role::Node(id), format!("node-{id}"))).collect();
    wanted.push((Role::Admin("dev".into()), "admin".into()));
    for (role, stem) in wanted {
        if !dir.join(format!("{stem}.pem")).exists() {
            ca.issue(&role, &hosts, DEV_CERT_DAYS)?.write(&dir, &stem)?;
        }
    }
    Ok(dir)
}

/// Writes node `id`'s config file and returns its path.
fn write_config(data_dir: &Path, tls: &Path, id: u64, port: u16) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let region = REGIONS[(id - 1) as usize];
    let config = format!(
        "id = {id}\nlisten = \"127.0.0.1:{port}\"\nregion = \"{region}\"\ndata_dir = \"{}\"\n\n[tls]\n\
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

pub async fn run(data_dir: PathBuf, nodes: u64, base_port: u16) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the keyquorum binary")?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut members = Vec::new();
    for id in 1..=nodes {
        let port = base_port.checked_add((id - 1) as u16).context("port out of range")?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is in use: stop whatever holds it or pass --base-port");
        }
        members.push(pb::Member {
            id,
            addr: format!("127.0.0.1:{port}"),
            region: REGIONS[(id - 1) as usize].into(),
            zone: String::new(),
        });
    }
    let tls = dev_pki(&data_dir, nodes)?;
    let mut children = Children(Vec::new());
    for m in &members {
        let config = write_config(&data_dir, &tls, m.id, m.addr.rsplit(':').next().unwrap_or("0").parse()?)?;
        let log_path = config.with_file_name("node.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let child = Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {}", m.id))?;
        children.0.push((m.id, child));
        eprintln!("started node {} ({}) at {}, log {}", m.id, m.region, m.addr, log_path.display());
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
                for (id, child) in &mut children.0 {
                    if let Ok(Some(status)) = child.try_wait() {
                        bail!("node {id} exited ({status}); see {}", data_dir.join(format!("node-{id}/node.log")).display());
                    }
                }
            }
        }
    }
    eprintln!("stopping the cluster");
    drop(children);
    eprintln!("stopped; data kept in {}", data_dir.display());
    Ok(())
}
