//! `keyquorum`: one binary for the server, the local dev cluster, and every client, cluster
//! and certificate command. Each command group parses its own arguments in its own module;
//! only `server` reaches into the server crate.

mod access;
mod audit;
mod bench;
mod cert;
mod cluster;
mod common;
mod crypto;
mod dev;
mod key;
mod output;
mod quota;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keyquorum", version, about = "A replicated, multi-region key management service")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run one node.
    Server {
        #[arg(long, env = "KEYQUORUM_CONFIG")]
        config: PathBuf,
    },
    /// Start a local multi-region cluster (one node process per region) and wait for Ctrl-C.
    Dev(dev::DevArgs),
    /// Measure Encrypt latency against a running cluster: cold (first use of a key at a node,
    /// which unwraps it with t+1 decryption shares) and warm (cached material). Creates keys at
    /// the first endpoint and uses them at the second; with `--region`, uses them through the
    /// region-aware client (own region first), so the first endpoint should be elsewhere.
    Bench(bench::BenchArgs),
    /// Key lifecycle.
    Key {
        #[command(subcommand)]
        command: key::KeyCommand,
        #[command(flatten)]
        common: common::Common,
    },
    #[command(flatten)]
    Crypto(crypto::CryptoCommand),
    /// Cluster administration.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
        #[command(flatten)]
        common: common::Common,
    },
    /// Every node's audit log: verify the chains, tail, query.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
        #[command(flatten)]
        common: common::Common,
    },
    /// The cluster CA and the certificates it issues to nodes, operators and applications.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A failpoint build (the harnesses' self-tests only) takes its injected bugs from the
    // FAILPOINTS environment variable, e.g. `node::read-without-read-index=return`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYQUORUM_LOG").unwrap_or_else(|_| {
        let level = if matches!(cli.command, Commands::Server { .. }) { "info,openraft=warn" } else { "warn" };
        tracing_subscriber::EnvFilter::new(level)
    });
    // Colours only on a terminal: a node's log is usually a file (`keyquorum dev`, the Jepsen harness).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Server { config } => Ok(node::server::run(node::config::NodeConfig::load(&config)?).await?),
            Commands::Dev(args) => dev::run(args).await,
            Commands::Bench(args) => bench::run(args).await,
            Commands::Key { command, common } => key::run(command, &common).await,
            Commands::Crypto(command) => crypto::run(command).await,
            Commands::Cluster { command, common } => cluster::run(command, &common).await,
            Commands::Audit { command, common } => audit::run(command, &common).await,
            Commands::Cert { command } => cert::run(command),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
