use clap::Parser;
use node::cli::{Cli, Commands};

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
            Commands::Server { config } => node::server::run(node::config::NodeConfig::load(&config)?).await,
            Commands::Dev { data_dir, nodes, base_port, wan_latency_ms, wan_jitter_ms, preferred_leader_region } => {
                let wan = node::dev::WanOptions {
                    latency_ms: wan_latency_ms,
                    jitter_ms: wan_jitter_ms,
                    preferred_leader_region: preferred_leader_region.unwrap_or_default(),
                    ..Default::default()
                };
                node::dev::run(data_dir, nodes, base_port, wan).await
            }
            other => node::cli::run_client(other).await,
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
