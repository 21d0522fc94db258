//! The simulator in the test suite: a CI-sized range of seeds with every invariant, and the
//! proof that a seed replays byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chaos::{run_seed, SeedReport};

/// The two tests run one after the other. CI twice saw seed 3's first run in this process
/// hash differently (always the same other hash) while the CI range ran beside it on other
/// threads; alone, and across processes, every run matched. Some process-global state still
/// leaks between concurrent runs: until it is found (see issue 4's last note), the replay
/// check runs without neighbours, as `--reproduce` does.
static SERIAL: Mutex<()> = Mutex::new(());

/// Seeds the suite runs (`KEYQUORUM_SIM_SEEDS` overrides, e.g. for a quick local run).
fn seed_count() -> u64 {
    std::env::var("KEYQUORUM_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

/// Runs `seeds` on every core; the reports in seed order.
fn run_seeds(seeds: Vec<u64>) -> Vec<SeedReport> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let seeds = Arc::new(seeds);
    let next = Arc::new(AtomicU64::new(0));
    let out: Arc<Mutex<Vec<SeedReport>>> = Default::default();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (seeds, next, out) = (seeds.clone(), next.clone(), out.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i as usize) else { return };
                let r = run_seed(seed, false);
                out.lock().unwrap().push(r);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut v = Arc::try_unwrap(out).unwrap().into_inner().unwrap();
    v.sort_by_key(|r| r.seed);
    v
}

/// Every violation in `reports`, with the command that replays it.
fn failures(reports: &[SeedReport]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        for v in &r.violations {
            out.push(format!(
                "seed {}: {}: {}\n  replay: cargo run -p chaos --release -- --reproduce {}",
                r.seed, v.invariant, v.detail, r.seed
            ));
        }
    }
    out
}

#[test]
fn ci_range_of_seeds_keeps_every_invariant() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let n = seed_count();
    let reports = run_seeds((0..n).collect());
    let failures = failures(&reports);
    let mut faults = std::collections::BTreeMap::new();
    let mut sim_ms = 0;
    for r in &reports {
        sim_ms += r.sim_ms;
        for (k, v) in &r.faults {
            *faults.entry(*k).or_insert(0u64) += v;
        }
    }
    println!("{n} seeds, {:.2} simulated hours, faults {faults:?}", sim_ms as f64 / 3_600_000.0);
    assert_eq!(reports.len() as u64, n);
    assert!(failures.is_empty(), "{} violations:\n{}", failures.len(), failures.join("\n"));
    // The range must actually exercise the faults it claims to.
    for kind in [
        "crash",
        "crash-leader",
        "crash-during-rotation",
        "crash-during-membership",
        "crash-during-keygen",
        "partition-random",
        "partition-region",
        "partition-oneway",
        "stall",
        "latency-spike",
        "power-loss",
        "region-loss",
        "member-add",
        "member-remove",
        "rotate-root",
        "clock-skew",
    ] {
        assert!(faults.get(kind).copied().unwrap_or(0) > 0, "no {kind} fault in {n} seeds: {faults:?}");
    }
}

/// Seeds that campaigns beyond the CI range found failing, each fixed since (the closing
/// notes of issue 18 tell each story; 12042 hung rather than failed). They must stay clean.
const FOUND_BY_CAMPAIGNS: [u64; 7] = [5820, 6280, 6887, 8455, 8830, 9220, 12042];

#[test]
fn seeds_that_campaigns_found_stay_fixed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let reports = run_seeds(FOUND_BY_CAMPAIGNS.to_vec());
    assert_eq!(reports.len(), FOUND_BY_CAMPAIGNS.len());
    let failures = failures(&reports);
    assert!(failures.is_empty(), "{} violations:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_seed_replays_byte_for_byte() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Run in one process, one after another: nothing a run leaves behind (global task ids,
    // thread-local RNGs, hash seeds) may leak into the next.
    let mut hashes = Vec::new();
    for seed in [3, 7, 12] {
        let a = run_seed(seed, false);
        let b = run_seed(seed, false);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} produced two different traces");
        hashes.push(a.trace_hash);
    }
    hashes.dedup();
    assert_eq!(hashes.len(), 3, "different seeds should give different traces");
}

#[test]
fn clients_of_a_lost_region_fail_over_to_the_others() {
    // Region losses and nothing else, over a longer fault phase: most losses then leave a
    // serving quorum elsewhere for long enough that the failover invariant applies.
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut checked = 0;
    for seed in 0..40 {
        let r = chaos::run_seed_with(seed, false, |p| {
            p.knobs = chaos::plan::Knobs {
                partition: 0.0,
                stall: 0.0,
                latency_spike: 0.0,
                crash: 0.0,
                power_loss: 0.0,
                membership: 0.0,
                clock: 0.0,
                region_loss: 0.04,
            };
            p.fault_phase_ms = 40_000;
        });
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        checked += r.failover_checked;
        if checked >= 5 {
            return;
        }
    }
    panic!("only {checked} region losses lasted long enough to check failover");
}
