//! `jepsen test`: one Jepsen-style run against real `keyquorum` processes; see
//! `jepsen/README.md`. Exits 0 when the run is valid, 1 when a checker found an anomaly, 2 when
//! validity is unknown (a key's search ran out of budget), 3 when the run itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jepsen::nemesis::{Fault, NemesisOptions};
use jepsen::results::Validity;
use jepsen::run::{run, Options};
use jepsen::workload::{Workload, WorkloadOptions};

#[derive(Debug, Parser)]
#[command(name = "jepsen", about = "Jepsen-style tests of real keyquorum processes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one test: cluster, workload and nemeses for the time limit, then the checkers.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Nodes (3 or 5 make sense), spread round-robin over the regions.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    regions: u64,
    /// Faults to inject, comma-separated; `none` for a fault-free run.
    #[arg(long, value_delimiter = ',', value_parser = nemesis_arg,
          default_value = "kill,kill-all,pause,partition,clock,member,transfer,rotate-root")]
    nemesis: Vec<Option<Fault>>,
    /// Workloads the clients mix, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "register,crypto,create,access")]
    workload: Vec<Workload>,
    /// Seconds of workload and faults (healing and the final reads come after).
    #[arg(long, default_value_t = 300)]
    time_limit: u64,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Operations per second over all clients.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Keys in use at a time; each is retired after --ops-per-key operations.
    #[arg(long, default_value_t = 4)]
    active_keys: usize,
    #[arg(long, default_value_t = 120)]
    ops_per_key: u64,
    /// Seconds of calm between two faults.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Shortest and longest fault, in seconds.
    #[arg(long, default_value_t = 5.0)]
    hold_min: f64,
    #[arg(long, default_value_t = 15.0)]
    hold_max: f64,
    /// One-way latency between regions, through the relay.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Seconds the final reads (after healing) may take in all; the reads left are then
    /// skipped and reported as anomalies.
    #[arg(long, default_value_t = 600)]
    final_budget: u64,
    /// Seeds the workload's and the nemesis's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The run's directory (default: jepsen-runs/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The keyquorum binary (default: the one next to this program).
    #[arg(long)]
    keyquorum: Option<PathBuf>,
}

/// A fault's name, or `none` (no fault at all).
fn nemesis_arg(s: &str) -> Result<Option<Fault>, String> {
    if s == "none" {
        return Ok(None);
    }
    <Fault as clap::ValueEnum>::from_str(s, false).map(Some)
}

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

fn options(a: TestArgs) -> anyhow::Result<Options> {
    let exe = match a.keyquorum {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("keyquorum"),
    };
    if !exe.exists() {
        anyhow::bail!(
            "{} does not exist: build it with `cargo build -p cli --bin keyquorum` or pass --keyquorum",
            exe.display()
        );
    }
    let out = match a.out {
        Some(p) => p,
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            PathBuf::from(format!("jepsen-runs/{now}"))
        }
    };
    let mut faults: Vec<Fault> = a.nemesis.iter().flatten().copied().collect();
    faults.sort();
    faults.dedup();
    if a.clients == 0 || a.rate.is_nan() || a.rate <= 0.0 || a.active_keys == 0 {
        anyhow::bail!("--clients, --rate and --active-keys must be positive");
    }
    if a.hold_min > a.hold_max {
        anyhow::bail!("--hold-min must not exceed --hold-max");
    }
    Ok(Options {
        out,
        nodes: a.nodes,
        regions: a.regions as usize,
        time_limit: Duration::from_secs(a.time_limit),
        clients: a.clients,
        workload: WorkloadOptions {
            workloads: a.workload,
            rate: a.rate,
            active_keys: a.active_keys,
            ops_per_key: a.ops_per_key,
        },
        nemesis: NemesisOptions {
            faults,
            interval: seconds(a.interval, "interval")?,
            hold: (seconds(a.hold_min, "hold-min")?, seconds(a.hold_max, "hold-max")?),
        },
        latency_ms: a.latency_ms,
        seed: a.seed,
        exe,
        node_env: Vec::new(),
        final_budget: Duration::from_secs(a.final_budget),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Test(args) = Cli::parse().command;
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(3);
        }
    };
    let out = options.out.clone();
    // Ctrl-C drops the run, and with it the cluster: every node is stopped.
    let result = tokio::select! {
        r = run(options) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the cluster");
            return ExitCode::from(130);
        }
    };
    match result {
        Ok(results) => {
            println!("ops: {}", results.ops);
            for (f, by) in &results.counts {
                println!("  {f:<18} {by:?}");
            }
            println!("faults: {:?}", results.faults);
            for (checker, (n, first)) in &results.anomalies {
                println!("ANOMALY {checker}: {n}, first: {}", first.first().map(String::as_str).unwrap_or(""));
            }
            let total = |t: &str| results.counts.values().filter_map(|by| by.get(t)).sum::<u64>();
            println!(
                "summary: valid={:?} ops={} ok={} fail={} info={} faults={} keys={} unchecked={}",
                results.valid,
                results.ops,
                total("ok"),
                total("fail"),
                total("info"),
                results.faults.values().sum::<u64>(),
                results.keys_checked,
                results.keys_unchecked.len()
            );
            println!("valid: {:?}   ({})", results.valid, out.join("report.html").display());
            match results.valid {
                Validity::Valid => ExitCode::SUCCESS,
                Validity::Invalid => ExitCode::from(1),
                Validity::Unknown => ExitCode::from(2),
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}
