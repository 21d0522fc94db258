//! `keyquorum cert …`: the cluster CA and the certificates it issues.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use raft::Principal;
use testbed::Authority;

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Create a cluster CA: writes ca.pem and ca.key (mode 0600) into --out.
    Ca {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "keyquorum cluster CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate signed by the CA in --ca-dir: writes <name>.pem and <name>.key.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// node/<id>, admin/<name> or client/<name>.
        #[arg(long, value_parser = Principal::parse)]
        role: Principal,
        /// Host name or IP address the node is reached at (repeatable; nodes only).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// File stem (default: the role with `-` for `/`, e.g. node-3).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

pub(crate) fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Ca { out, name, days } => {
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            if out.join("ca.key").exists() {
                bail!("{} already holds a CA (ca.key); refusing to overwrite it", out.display());
            }
            let (cert, key) = Authority::generate(&name, days)?.write(&out)?;
            println!("CA certificate {}\nCA key {} (keep it offline)", cert.display(), key.display());
        }
        CertCommand::Issue { ca_dir, role, hosts, out, name, days } => {
            if matches!(role, Principal::Node(_)) && hosts.is_empty() {
                bail!("a node certificate needs at least one --host (the name or address peers dial)");
            }
            let ca = Authority::read(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key"))?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let stem = name.unwrap_or_else(|| role.to_string().replace('/', "-"));
            let (cert, key) = ca.issue(&role, &hosts, days)?.write(&out, &stem)?;
            println!("{role}: certificate {}, key {}", cert.display(), key.display());
        }
    }
    Ok(())
}
