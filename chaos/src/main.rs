//! `chaos`: runs simulated seeds and reports violations.
//!
//! ```text
//! cargo run -p chaos --release -- --seeds 0..1000          # a campaign
//! cargo run -p chaos --release -- --reproduce 4242         # one seed, full trace
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chaos::{run_seed, SeedReport};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "chaos", about = "Deterministic simulation of keyquorum clusters under seeded faults")]
struct Args {
    /// Seeds to run, `A..B` (B excluded).
    #[arg(long, value_parser = parse_range, conflicts_with = "reproduce")]
    seeds: Option<(u64, u64)>,
    /// Replays one seed, printing its trace and the nodes' logs (`RUST_LOG`, default `info`).
    #[arg(long)]
    reproduce: Option<u64>,
    /// Worker threads (each runs whole seeds, one at a time).
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.trim().parse().map_err(|e| format!("bad start {a:?}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("bad end {b:?}: {e}"))?;
    if b <= a {
        return Err(format!("empty range {s:?}: the end must be greater than the start"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(seed) = args.reproduce {
        init_tracing();
        let report = run_seed(seed, true);
        println!("trace hash {}", report.trace_hash);
        for v in &report.violations {
            println!("VIOLATION {}: {}", v.invariant, v.detail);
        }
        return if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let Some((start, end)) = args.seeds else {
        eprintln!("give --seeds A..B or --reproduce SEED (see --help)");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(start));
    let reports: Arc<Mutex<Vec<SeedReport>>> = Default::default();
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let (next, reports, verbose) = (next.clone(), reports.clone(), args.verbose);
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let t = Instant::now();
                let report = run_seed(seed, false);
                if verbose || !report.violations.is_empty() {
                    println!(
                        "seed {seed}: {} violations, {:.1} s simulated in {:.1} s, trace {}",
                        report.violations.len(),
                        report.sim_ms as f64 / 1000.0,
                        t.elapsed().as_secs_f64(),
                        &report.trace_hash[..16]
                    );
                }
                for v in &report.violations {
                    println!("  {}: {}", v.invariant, v.detail);
                }
                if !report.violations.is_empty() {
                    println!("  replay: cargo run -p chaos --release -- --reproduce {seed}");
                }
                reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
            })
        })
        .collect();
    for t in threads {
        if t.join().is_err() {
            eprintln!("a worker thread panicked");
            return ExitCode::FAILURE;
        }
    }
    let reports = reports.lock().unwrap_or_else(|p| p.into_inner());
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ops: BTreeMap<&str, u64> = BTreeMap::new();
    let mut violations: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sim_ms = 0u64;
    for r in reports.iter() {
        sim_ms += r.sim_ms;
        for (k, v) in &r.faults {
            *faults.entry(k).or_default() += v;
        }
        for (k, v) in &r.ops {
            *ops.entry(k).or_default() += v;
        }
        for v in &r.violations {
            *violations.entry(v.invariant).or_default() += 1;
        }
    }
    let failed: Vec<u64> = reports.iter().filter(|r| !r.violations.is_empty()).map(|r| r.seed).collect();
    println!("seeds run: {} ({start}..{end}) in {:.1} s wall", reports.len(), started.elapsed().as_secs_f64());
    println!("simulated: {:.2} h", sim_ms as f64 / 3_600_000.0);
    println!("operations: {ops:?}");
    println!("faults injected: {faults:?}");
    println!("violations: {violations:?}");
    if failed.is_empty() {
        println!("all seeds passed");
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}

/// Node logs for `--reproduce`, stamped with simulated time.
fn init_tracing() {
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            write!(w, "{:>8}", chaos::history::now_ms())
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_timer(SimTime).try_init();
}
