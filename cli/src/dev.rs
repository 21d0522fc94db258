//! `keyquorum dev`: a local cluster of real node processes, one per region, on loopback with
//! RocksDB and mTLS (its CA and certificates are made on first run, in `<data_dir>/tls`). A
//! second run on the same data dir reuses the cluster and its keys.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use testbed::{LocalCluster, Spec, WanOptions};

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[arg(long, default_value = ".kq-dev")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// First node's port; node i listens on base_port + i - 1.
    #[arg(long, default_value_t = 7401)]
    base_port: u16,
    /// Put this one-way latency (ms) between regions through a userspace relay: node i is
    /// then reached at 127.0.i.1 (its region's front address) and a client chooses its
    /// region with --source-ip 127.0.i.200. A data dir is made with or without it for good.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    wan_latency_ms: u64,
    /// Extra random delay per chunk between regions, 0..=ms.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    wan_jitter_ms: u64,
    /// Keep the leader in this region (every node's `raft.preferred_leader_region`).
    #[arg(long)]
    preferred_leader_region: Option<String>,
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let DevArgs { data_dir, nodes, base_port, wan_latency_ms, wan_jitter_ms, preferred_leader_region } = args;
    let wan = WanOptions {
        latency_ms: wan_latency_ms,
        jitter_ms: wan_jitter_ms,
        preferred_leader_region: preferred_leader_region.unwrap_or_default(),
        ..Default::default()
    };
    let exe = std::env::current_exe().context("cannot find the keyquorum binary")?;
    let with_wan = wan.relayed();
    let spec = Spec { base_port, wan: wan.clone(), ..Spec::new(data_dir.clone(), nodes, exe) };
    let mut cluster = LocalCluster::start(spec).await?;
    for m in &cluster.members {
        let pid = cluster.pid(m.id).unwrap_or_default();
        eprintln!(
            "started node {} ({}, pid {pid}) at {}, log {}",
            m.id,
            m.region,
            m.addr,
            cluster.log_path(m.id).display()
        );
    }
    cluster.wait_up(Duration::from_secs(30)).await?;
    match cluster.init_if_needed().await? {
        None => eprintln!("reusing the existing cluster in {}", data_dir.display()),
        Some(r) => eprintln!("initialised: {} share holders, any {} can unwrap", r.holders, r.shares_needed),
    }
    cluster.wait_ready(Duration::from_secs(30)).await?;
    let members = cluster.members.clone();
    let endpoints = cluster.endpoints();
    let (ca, client_cert, client_key) = cluster.client_files();
    let (_, admin_cert, admin_key) = cluster.admin_files();
    let joined = endpoints.join(",");
    println!("ready: {joined}");
    if with_wan {
        println!(
            "WAN relay: {} ms one way between regions (+0..{} ms jitter); a client's region is its source address:",
            wan.latency_ms, wan.jitter_ms
        );
        for (i, m) in members.iter().enumerate() {
            println!("  {}: KEYQUORUM_REGION={} KEYQUORUM_SOURCE_IP={}", m.region, m.region, Spec::client_ip(i));
        }
    }
    println!();
    println!("Try it (in another terminal), as the application client/dev:");
    println!("  export KEYQUORUM_ENDPOINTS={joined}");
    println!("  export KEYQUORUM_TLS_CA={}", ca.display());
    println!("  export KEYQUORUM_TLS_CERT={}", client_cert.display());
    println!("  export KEYQUORUM_TLS_KEY={}", client_key.display());
    println!("  keyquorum key create --alias demo");
    println!("  echo -n 'hello' | keyquorum encrypt --key alias/demo --context app=tour > /tmp/hello.kq");
    println!("  keyquorum decrypt --context app=tour --in /tmp/hello.kq");
    println!(
        "The operator admin/dev (cluster commands; no use of keys) has {} and {}.",
        admin_cert.display(),
        admin_key.display()
    );
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
                for (id, status) in cluster.reap() {
                    eprintln!(
                        "node {id} exited ({status}); the cluster goes on without it (see {}); run keyquorum dev again to bring it back",
                        cluster.log_path(id).display()
                    );
                }
            }
        }
    }
    eprintln!("stopping the cluster");
    drop(cluster);
    eprintln!("stopped; data kept in {}", data_dir.display());
    Ok(())
}
