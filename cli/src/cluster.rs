//! `keyquorum cluster …`: the operator's commands (init, status, membership, leadership,
//! snapshots, root rotation, quotas).

use clap::Subcommand;
use client::{pb, Client};

use crate::common::{parse_pair, Common};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Form the cluster and deal its threshold root key. Members: id=1,addr=127.0.0.1:7401,region=a
    Init {
        #[arg(long = "member", value_parser = parse_member, required = true)]
        members: Vec<pb::Member>,
    },
    Status,
    AddNode {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        region: String,
    },
    RemoveNode {
        id: u64,
    },
    TransferLeader {
        id: u64,
    },
    Snapshot,
    /// Generate a new root key among the current voters, re-wrap every key version and log key
    /// under it, and erase the old shares. Old ciphertexts keep decrypting.
    RotateRoot,
    /// Per-principal call rates and limits on keys and aliases.
    Quota {
        #[command(subcommand)]
        command: crate::quota::QuotaCommand,
    },
}

/// `id=1,addr=127.0.0.1:7401,region=a[,zone=z]`.
pub(crate) fn parse_member(s: &str) -> Result<pb::Member, String> {
    let mut m = pb::Member::default();
    for part in s.split(',') {
        let (k, v) = parse_pair(part)?;
        match k.as_str() {
            "id" => m.id = v.parse().map_err(|_| format!("bad id {v:?}"))?,
            "addr" => m.addr = v,
            "region" => m.region = v,
            "zone" => m.zone = v,
            _ => return Err(format!("unknown member field {k:?} (id, addr, region, zone)")),
        }
    }
    if m.id == 0 || m.addr.is_empty() || m.region.is_empty() {
        return Err("a member needs id, addr and region".into());
    }
    Ok(m)
}

pub(crate) async fn run(command: ClusterCommand, common: &Common) -> anyhow::Result<()> {
    // Membership changes and root rotation run a key-generation round before they answer: one
    // attempt may take the whole call's time (the default 5 s per attempt cut them off, and
    // the retry asked for the change again).
    let mut options = common.client_options();
    options.attempt_timeout = options.call_timeout;
    let c = Client::with_options(&common.endpoints, common.tls()?, options)?;
    match command {
        ClusterCommand::Init { members } => {
            let req = pb::InitRequest { members };
            let r = c.only(0)?.init(req).await?;
            println!("initialised: {} share holders, any {} can unwrap", r.holders, r.shares_needed);
        }
        ClusterCommand::Status => {
            let r = c.status(pb::StatusRequest {}).await?;
            if common.output == Output::Json {
                let nodes: Vec<_> = r
                    .nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "id": n.id, "addr": n.addr, "region": n.region, "zone": n.zone, "role": n.role, "term": n.term,
                            "last_log_index": n.last_log_index, "applied_index": n.applied_index,
                            "replication_lag": n.replication_lag, "version": n.version, "reachable": n.reachable,
                            "error": n.error, "voter": n.voter, "leader_id": n.leader_id, "holds_share": n.holds_share,
                            "preferred_leader_region": n.preferred_leader_region,
                            "sealed": n.sealed, "sealed_log_key_version": n.sealed_log_key_version,
                            "log_key_versions": n.log_key_versions,
                            "faulty_shares": n.faulty_shares,
                            "root_epoch": n.root_epoch, "next_root_epoch": n.next_root_epoch,
                            "identity_rounds": n.identity_rounds,
                            "cache": {"entries": n.cache_entries, "hits": n.cache_hits,
                                      "misses": n.cache_misses, "evictions": n.cache_evictions},
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"leader_id": r.leader_id, "nodes": nodes, "placement_warnings": r.placement_warnings})
                );
            } else {
                let mut nodes = r.nodes;
                nodes.sort_by(|a, b| (&a.region, a.id).cmp(&(&b.region, b.id)));
                println!(
                    "  {:<4} {:<22} {:<10} {:>5} {:>8} {:>8} {:>4} {:>6} {:>15}  version",
                    "id", "addr", "role", "term", "last_log", "applied", "lag", "sealed", "cache hit/miss"
                );
                let mut region = None;
                for n in &nodes {
                    if region != Some(&n.region) {
                        let here: Vec<_> = nodes.iter().filter(|m| m.region == n.region).collect();
                        let voters = here.iter().filter(|m| m.voter).count();
                        println!(
                            "region {} ({voters} of {} voters)",
                            n.region,
                            nodes.iter().filter(|m| m.voter).count()
                        );
                        region = Some(&n.region);
                    }
                    println!(
                        "  {:<4} {:<22} {:<10} {:>5} {:>8} {:>8} {:>4} {:>6} {:>15}  {}{}",
                        n.id,
                        n.addr,
                        n.role,
                        n.term,
                        n.last_log_index,
                        n.applied_index,
                        n.replication_lag,
                        if n.sealed { format!("v{}", n.sealed_log_key_version) } else { "no".to_string() },
                        format!("{}/{}", n.cache_hits, n.cache_misses),
                        n.version,
                        if n.error.is_empty() { String::new() } else { format!("  ({})", n.error) }
                    );
                }
                for w in &r.placement_warnings {
                    println!("warning: {w}");
                }
            }
        }
        ClusterCommand::AddNode { id, addr, region } => {
            let req = pb::AddNodeRequest { member: Some(pb::Member { id, addr, region, zone: String::new() }) };
            c.add_node(req).await?;
            println!("node {id} added as a voter");
        }
        ClusterCommand::RemoveNode { id } => {
            c.remove_node(pb::RemoveNodeRequest { id }).await?;
            println!("node {id} removed");
        }
        ClusterCommand::TransferLeader { id } => {
            c.transfer_leader(pb::TransferLeaderRequest { id }).await?;
            println!("leadership moved to node {id}");
        }
        ClusterCommand::Snapshot => {
            let r = c.snapshot(pb::SnapshotRequest {}).await?;
            println!("snapshot at log index {}", r.last_log_index);
        }
        ClusterCommand::Quota { command } => crate::quota::run(command, &c, common.output).await?,
        ClusterCommand::RotateRoot => {
            let r = c.rotate_root(pb::RotateRootRequest {}).await?;
            if common.output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"root_epoch": r.root_epoch, "holders": r.holders, "shares_needed": r.shares_needed})
                );
            } else {
                println!(
                    "root key epoch {} in force: holders {:?}, any {} can unwrap; old shares erased",
                    r.root_epoch, r.holders, r.shares_needed
                );
            }
        }
    }
    Ok(())
}
