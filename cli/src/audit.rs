//! `keyquorum audit …`: the operator's view of every node's audit log: check each chain
//! against the heads the cluster replicated (`verify`), read the newest records (`tail`), and
//! search them (`query`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use client::{pb, Client};

use crate::common::Common;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every member's audit chain (each record's hash, the links between them) against
    /// the chain heads the cluster replicated; names the first bad record of each node.
    /// Fails if any chain is broken or any member cannot be read.
    Verify,
    /// The newest records of one node, oldest first.
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// The node to read (default: the first endpoint's).
        #[arg(long)]
        node: Option<u64>,
        /// Keep printing new records as they come (polling every second).
        #[arg(long)]
        follow: bool,
    },
    /// Every member's records that match all the filters given.
    Query {
        /// The key: its id, or an alias (looked up now; records name keys by id).
        #[arg(long)]
        key: Option<String>,
        /// The principal the call was for (`client/app`).
        #[arg(long)]
        principal: Option<String>,
        /// Only records since: Unix milliseconds, or an age such as 90s, 15m, 2h, 7d.
        #[arg(long, value_parser = parse_since)]
        since: Option<Since>,
    },
}

/// A lower bound on a record's time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Since {
    At(u64),
    Ago(Duration),
}

fn parse_since(s: &str) -> Result<Since, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Since::At(ms));
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: give Unix milliseconds or an age like 15m"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit of an age is s, m, h or d")),
    };
    Ok(Since::Ago(Duration::from_secs(secs)))
}

impl Since {
    fn ms(self) -> u64 {
        match self {
            Since::At(ms) => ms,
            Since::Ago(d) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                now.saturating_sub(d).as_millis() as u64
            }
        }
    }
}

/// A member: its id and address.
struct Member {
    id: u64,
    addr: String,
}

async fn members(c: &Client) -> anyhow::Result<Vec<Member>> {
    let status = c.status(pb::StatusRequest {}).await.context("asking the cluster for its members")?;
    Ok(status.nodes.into_iter().map(|n| Member { id: n.id, addr: n.addr }).collect())
}

/// A client of `addr` alone.
fn pinned(common: &Common, addr: &str) -> anyhow::Result<Client> {
    let options = client::ClientOptions { discover: false, ..common.client_options() };
    Ok(Client::with_options(&[addr.to_string()], common.tls()?, options)?)
}

/// Every line of one node's kept log, in file order.
async fn read_all(c: &Client) -> anyhow::Result<Vec<audit::Line>> {
    Ok(c.audit_log().await?.lines.into_iter().map(to_line).collect())
}

/// A line as the API gives it, as the check takes it.
fn to_line(l: pb::AuditLine) -> audit::Line {
    audit::Line { place: audit::Place { file: l.file, line: l.line as usize }, text: l.text }
}

pub(crate) async fn run(command: AuditCommand, common: &Common) -> anyhow::Result<()> {
    let c = common.client()?;
    match command {
        AuditCommand::Verify => verify(&c, common).await,
        AuditCommand::Tail { lines, node, follow } => tail(&c, common, lines, node, follow).await,
        AuditCommand::Query { key, principal, since } => {
            let since = since.map(Since::ms);
            // Records name a key by id (aliases are confidential at rest): an alias is looked up.
            let key = match key {
                Some(k) if k.starts_with("alias/") => {
                    let req = pb::DescribeKeyRequest { key: k.clone(), consistency: None };
                    let described = c.describe_key(req).await.with_context(|| format!("looking up {k}"))?;
                    Some(described.key.map(|m| m.key_id).with_context(|| format!("{k} names no key"))?)
                }
                other => other,
            };
            for m in members(&c).await? {
                let lines = read_all(&pinned(common, &m.addr)?).await.with_context(|| format!("node {}", m.id))?;
                for l in lines {
                    let Ok(r) = serde_json::from_str::<audit::Record>(&l.text) else { continue };
                    let key_matches =
                        key.as_ref().is_none_or(|k| r.key.as_ref() == Some(k) || r.key_id.as_ref() == Some(k));
                    let principal_matches = principal.as_ref().is_none_or(|p| r.principal.as_ref() == Some(p));
                    if key_matches && principal_matches && since.is_none_or(|s| r.time_ms >= s) {
                        print_record(common.output, &l.text, &r);
                    }
                }
            }
            Ok(())
        }
    }
}

async fn verify(c: &Client, common: &Common) -> anyhow::Result<()> {
    let heads: BTreeMap<u64, audit::Head> = c
        .audit_heads(pb::AuditHeadsRequest {})
        .await
        .context("reading the replicated chain heads")?
        .heads
        .into_iter()
        .map(|h| (h.node, audit::Head { seq: h.seq, hash: h.hash }))
        .collect();
    let mut bad = 0;
    let mut report = Vec::new();
    for m in members(c).await? {
        let head = heads.get(&m.id);
        let read = match pinned(common, &m.addr) {
            Ok(p) => read_all(&p).await,
            Err(e) => Err(e),
        };
        let (ok, text) = match read {
            Err(e) => (false, format!("node {}: cannot read its audit log: {e:#}", m.id)),
            Ok(lines) => match audit::verify(m.id, &lines, head) {
                Ok(v) => (
                    true,
                    format!(
                        "node {}: ok, {} records ({}), {}",
                        m.id,
                        v.records,
                        match (v.first, v.last) {
                            (Some(a), Some(b)) => format!("{a}..{b}"),
                            _ => "none".into(),
                        },
                        match (head, v.head_matched) {
                            (Some(h), true) => format!("the replicated head at record {} matches", h.seq),
                            (Some(h), false) => format!("the replicated head at record {} was rotated out", h.seq),
                            (None, _) => "no head replicated yet".into(),
                        }
                    ),
                ),
                Err(broken) => (false, format!("node {}: BROKEN at {broken}", m.id)),
            },
        };
        if !ok {
            bad += 1;
        }
        report.push((m.id, ok, text));
    }
    for (id, ok, text) in &report {
        match common.output {
            Output::Json => println!("{}", serde_json::json!({"node": id, "ok": ok, "detail": text})),
            Output::Text => println!("{text}"),
        }
    }
    if bad > 0 {
        bail!("{bad} of {} audit chains failed the check", report.len());
    }
    Ok(())
}

async fn tail(c: &Client, common: &Common, n: usize, node: Option<u64>, follow: bool) -> anyhow::Result<()> {
    let target = match node {
        None => c.only(0)?,
        Some(id) => {
            let m = members(c).await?.into_iter().find(|m| m.id == id).with_context(|| format!("no member {id}"))?;
            pinned(common, &m.addr)?
        }
    };
    let first = target.read_audit(pb::ReadAuditRequest { from_index: u64::MAX, max_records: 1 }).await?;
    let mut next = first.total.saturating_sub(n as u64);
    // The first page is the last `n` records as of the first read (reading adds records).
    let mut max_records = u32::try_from(n).unwrap_or(u32::MAX).max(1);
    loop {
        let page = target.read_audit(pb::ReadAuditRequest { from_index: next, max_records }).await?;
        max_records = 0;
        next += page.lines.len() as u64;
        for l in &page.lines {
            match serde_json::from_str::<audit::Record>(&l.text) {
                Ok(r) => print_record(common.output, &l.text, &r),
                Err(_) => println!("{}", l.text),
            }
        }
        if !follow {
            return Ok(());
        }
        if page.lines.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn print_record(output: Output, line: &str, r: &audit::Record) {
    match output {
        Output::Json => println!("{line}"),
        Output::Text => println!(
            "{} node {} #{} {} {} {} key={} {} {}",
            r.time_ms,
            r.node,
            r.seq,
            r.principal.as_deref().unwrap_or("-"),
            r.service,
            r.operation,
            r.key.as_deref().unwrap_or("-"),
            r.code,
            r.outcome
        ),
    }
}
