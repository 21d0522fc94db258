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
    /// Internal: run one seed and print its report for the parent runner.
    #[arg(long, hide = true, conflicts_with_all = ["seeds", "reproduce"])]
    child: Option<u64>,
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
    // A build with failpoints takes them from FAILPOINTS (`node::skip-authorization=return`),
    // so a self-test's seed can be replayed with its injected bug.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    if let Some(seed) = args.child {
        print_child_report(&run_seed(seed, false));
        return ExitCode::SUCCESS;
    }
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
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program's path to run seeds in child processes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(start));
    let tally: Arc<Mutex<Tally>> = Default::default();
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let (next, tally, verbose, exe) = (next.clone(), tally.clone(), args.verbose, exe.clone());
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let t = Instant::now();
                let report = run_child(&exe, seed);
                if verbose || !report.violations.is_empty() {
                    println!(
                        "seed {seed}: {} violations, {:.1} s simulated in {:.1} s, trace {}",
                        report.violations.len(),
                        report.sim_ms as f64 / 1000.0,
                        t.elapsed().as_secs_f64(),
                        report.trace.get(..16).unwrap_or(&report.trace)
                    );
                }
                for (invariant, detail) in &report.violations {
                    println!("  {invariant}: {detail}");
                }
                if !report.violations.is_empty() {
                    println!("  replay: cargo run -p chaos --release -- --reproduce {seed}");
                }
                tally.lock().unwrap_or_else(|p| p.into_inner()).add(seed, report);
            })
        })
        .collect();
    for t in threads {
        if t.join().is_err() {
            eprintln!("a worker thread panicked");
            return ExitCode::FAILURE;
        }
    }
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    println!("seeds run: {} ({start}..{end}) in {:.1} s wall", tally.seeds, started.elapsed().as_secs_f64());
    println!("simulated: {:.2} h", tally.sim_ms as f64 / 3_600_000.0);
    println!("operations: {:?}", tally.ops);
    println!("faults injected: {:?}", tally.faults);
    println!("violations: {:?}", tally.violations);
    if tally.failed.is_empty() {
        println!("all seeds passed");
        ExitCode::SUCCESS
    } else {
        let mut failed = tally.failed.clone();
        failed.sort_unstable();
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}

/// One seed's outcome as a child process reported it.
#[derive(Debug, Default)]
struct ChildReport {
    sim_ms: u64,
    trace: String,
    faults: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
    violations: Vec<(String, String)>,
}

/// The campaign's totals.
#[derive(Debug, Default)]
struct Tally {
    seeds: u64,
    sim_ms: u64,
    faults: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
    violations: BTreeMap<String, u64>,
    failed: Vec<u64>,
}

impl Tally {
    fn add(&mut self, seed: u64, r: ChildReport) {
        self.seeds += 1;
        self.sim_ms += r.sim_ms;
        for (k, v) in r.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in r.ops {
            *self.ops.entry(k).or_default() += v;
        }
        for (invariant, _) in &r.violations {
            *self.violations.entry(invariant.clone()).or_default() += 1;
        }
        if !r.violations.is_empty() {
            self.failed.push(seed);
        }
    }
}

/// The line protocol a child prints for its seed: one `key value…` per line, then `end`.
fn print_child_report(r: &SeedReport) {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    let mut out = format!("sim_ms {}\ntrace {}\n", r.sim_ms, r.trace_hash);
    for (k, v) in &r.faults {
        out.push_str(&format!("fault {k} {v}\n"));
    }
    for (k, v) in &r.ops {
        out.push_str(&format!("op {k} {v}\n"));
    }
    for v in &r.violations {
        out.push_str(&format!("violation {} {}\n", v.invariant, one_line(&v.detail)));
    }
    out.push_str("end\n");
    print!("{out}");
}

/// Runs one seed in a child process, so that a seed which aborts the process (a panic while
/// tokio unwinds a panicked node task, say) is reported as that seed's failure instead of
/// ending the campaign.
fn run_child(exe: &std::path::Path, seed: u64) -> ChildReport {
    let output = std::process::Command::new(exe).arg("--child").arg(seed.to_string()).output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            let violations = vec![("runner".to_string(), format!("cannot start a child process: {e}"))];
            return ChildReport { violations, ..ChildReport::default() };
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut report = ChildReport::default();
    let mut ended = false;
    for line in stdout.lines() {
        let mut words = line.splitn(3, ' ');
        let (kind, a, b) = (words.next(), words.next(), words.next());
        let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        match (kind, a) {
            (Some("sim_ms"), _) => report.sim_ms = number(a),
            (Some("trace"), Some(h)) => report.trace = h.to_string(),
            (Some("fault"), Some(k)) => *report.faults.entry(k.to_string()).or_default() += number(b),
            (Some("op"), Some(k)) => *report.ops.entry(k.to_string()).or_default() += number(b),
            (Some("violation"), Some(k)) => report.violations.push((k.to_string(), b.unwrap_or("").to_string())),
            (Some("end"), _) => ended = true,
            _ => {}
        }
    }
    if !ended || !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        report.violations.push((
            "process".to_string(),
            format!("the seed's process ended with {} before reporting: {}", output.status, tail.join(" | ")),
        ));
    }
    report
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
