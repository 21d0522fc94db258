//! Judging a run and writing its directory: `history.jsonl` (every invocation, completion and
//! nemesis event in order, Jepsen style), `results.json` (valid or not, the anomalies, counts
//! per operation and outcome, the nemesis events) and `report.html`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use history::check::idempotent_create::Listing;
use history::check::{
    crypto_set, disabled_unusable, idempotent_create, linearizable, no_lost_writes, revocation, rotation,
};
use history::{Op, Outcome, Violation};
use serde::Serialize;
use serde_json::json;

use crate::recorder::NemesisEvent;
use crate::run::Options;

/// Anomalies kept per checker in `results.json` (the count is always complete).
const KEEP: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validity {
    /// Every checker passed on every key.
    Valid,
    /// Some checker found an anomaly.
    Invalid,
    /// No anomaly, but some key's linearizability search ran out of budget.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub valid: Validity,
    /// Per checker: how many anomalies, and the first ones.
    pub anomalies: BTreeMap<String, (usize, Vec<String>)>,
    pub ops: usize,
    /// Per operation kind (`f`), per outcome (`ok`, `fail`, `info`).
    pub counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub keys_checked: usize,
    /// Keys whose linearizability search ran out of budget.
    pub keys_unchecked: Vec<String>,
    /// Faults injected, by kind (one-shot actions and started faults; errors apart).
    pub faults: BTreeMap<String, u64>,
    pub nemesis: Vec<NemesisEvent>,
    pub options: serde_json::Value,
}

/// `ok`, `fail` or `info` (Jepsen's name for an indeterminate outcome).
pub fn outcome_type(outcome: Option<&Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Ok(_)) => "ok",
        Some(Outcome::Fail(..)) => "fail",
        Some(Outcome::Unknown(_)) | None => "info",
    }
}

/// What the operations did, by kind and outcome: `(f, type) -> count`.
pub fn counts(ops: &[Op]) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, u64>> = Default::default();
    for o in ops {
        let t = outcome_type(o.outcome.as_ref());
        *out.entry(o.kind.name().to_string()).or_default().entry(t).or_default() += 1;
    }
    out
}

fn add(anomalies: &mut BTreeMap<String, (usize, Vec<String>)>, violations: Vec<Violation>) {
    for v in violations {
        let entry = anomalies.entry(v.invariant.to_string()).or_default();
        entry.0 += 1;
        if entry.1.len() < KEEP {
            entry.1.push(v.detail);
        }
    }
}

impl Results {
    /// Adds the violations of a check made apart from the history's (the audit trail's).
    pub fn add(&mut self, violations: Vec<Violation>) {
        if !violations.is_empty() {
            self.valid = Validity::Invalid;
        }
        add(&mut self.anomalies, violations);
    }
}

pub fn check(
    options: &Options,
    ops: &[Op],
    nemesis: &[NemesisEvent],
    listings: &[Listing],
    unreadable: &[String],
    members: &[u64],
) -> Results {
    let lin = linearizable::check_all(ops);
    let mut violations: Vec<Violation> = lin.violations.clone();
    violations.extend(rotation::check(ops));
    violations.extend(no_lost_writes::check(ops));
    violations.extend(disabled_unusable::check(ops));
    violations.extend(revocation::check(ops));
    violations.extend(crypto_set::check(ops, members));
    violations.extend(idempotent_create::check(ops, listings));
    violations.extend(
        unreadable.iter().map(|e| Violation { invariant: "final-read", detail: format!("after healing: {e}") }),
    );
    let mut anomalies: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    add(&mut anomalies, violations);
    let valid = if !anomalies.is_empty() {
        Validity::Invalid
    } else if !lin.unchecked.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for e in nemesis.iter().filter(|e| (e.phase == "start" || e.phase == "done") && e.fault != "final") {
        *faults.entry(e.fault.clone()).or_default() += 1;
    }
    Results {
        valid,
        anomalies,
        ops: ops.len(),
        counts: counts(ops),
        keys_checked: lin.keys,
        keys_unchecked: lin.unchecked,
        faults,
        nemesis: nemesis.to_vec(),
        options: json!({
            "nodes": options.nodes,
            "regions": options.regions,
            "time_limit_s": options.time_limit.as_secs(),
            "clients": options.clients,
            "rate": options.workload.rate,
            "workloads": options.workload.workloads,
            "active_keys": options.workload.active_keys,
            "ops_per_key": options.workload.ops_per_key,
            "faults": options.nemesis.faults,
            "interval_s": options.nemesis.interval.as_secs_f64(),
            "hold_s": [options.nemesis.hold.0.as_secs_f64(), options.nemesis.hold.1.as_secs_f64()],
            "latency_ms": options.latency_ms,
            "seed": options.seed,
        }),
    }
}

/// The history as Jepsen writes it: one event per line, in order.
pub fn history_lines(ops: &[Op], nemesis: &[NemesisEvent]) -> Vec<serde_json::Value> {
    let mut events: Vec<(u64, serde_json::Value)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        events.push((
            o.invoke,
            json!({"index": o.invoke, "op": i, "type": "invoke", "process": o.client, "f": o.kind.name(),
                   "key": o.key, "time_ms": o.invoke_ms, "value": o.kind}),
        ));
        if let Some(c) = o.complete {
            events.push((
                c,
                json!({"index": c, "op": i, "type": outcome_type(o.outcome.as_ref()), "process": o.client,
                       "f": o.kind.name(), "key": o.key, "time_ms": o.complete_ms, "value": o.outcome}),
            ));
        }
    }
    for e in nemesis {
        events.push((
            e.seq,
            json!({"index": e.seq, "type": "info", "process": "nemesis", "f": e.fault, "phase": e.phase,
                   "time_ms": e.time_ms, "value": e.detail}),
        ));
    }
    events.sort_by_key(|(seq, _)| *seq);
    events.into_iter().map(|(_, v)| v).collect()
}

pub fn write(dir: &Path, ops: &[Op], nemesis: &[NemesisEvent], results: &Results) -> anyhow::Result<()> {
    let mut history = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    for line in history_lines(ops, nemesis) {
        serde_json::to_writer(&mut history, &line)?;
        history.write_all(b"\n")?;
    }
    history.flush()?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(results)?)?;
    std::fs::write(dir.join("report.html"), crate::report::html(results, ops, nemesis))?;
    Ok(())
}
