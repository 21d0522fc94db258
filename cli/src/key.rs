//! `keyquorum key …`: the key lifecycle.

use std::collections::HashMap;

use clap::{Subcommand, ValueEnum};
use client::pb;

use std::path::PathBuf;

use crate::access::{self, GrantCommand, PolicyCommand};
use crate::common::{token, Common};
use crate::output::{key_json, print_key, Output};

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    Create {
        #[arg(long)]
        alias: Option<String>,
        #[arg(long, value_enum, default_value_t = Spec::Aes256GcmSiv)]
        spec: Spec,
        #[arg(long, default_value = "")]
        description: String,
        /// Automatic rotation period in days.
        #[arg(long)]
        rotation_days: Option<u32>,
        /// Only nodes in these regions may hold the key's material (comma-separated); default:
        /// every region.
        #[arg(long, value_delimiter = ',')]
        allowed_regions: Vec<String>,
        /// The key's policy, a JSON file (`key policy get` shows the format); default: the
        /// creator may do everything, nobody else anything.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Who may do what to a key: its policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Grants: one principal's use of one key, revocable at once.
    #[command(subcommand)]
    Grant(GrantCommand),
    Describe {
        key: String,
    },
    List,
    Rotate {
        key: String,
    },
    Enable {
        key: String,
    },
    Disable {
        key: String,
    },
    ScheduleDeletion {
        key: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    CancelDeletion {
        key: String,
    },
    Versions {
        key: String,
    },
    EnableVersion {
        key: String,
        version: u32,
    },
    DisableVersion {
        key: String,
        version: u32,
    },
    /// Restrict where the key's material may be held: `key set-regions KEY eu-west,eu-central`;
    /// no regions lifts the restriction.
    SetRegions {
        key: String,
        #[arg(value_delimiter = ',')]
        regions: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Spec {
    #[value(name = "AES_256_GCM_SIV", alias = "aes")]
    Aes256GcmSiv,
    #[value(name = "ECC_NIST_P384", alias = "p384")]
    EccNistP384,
}

pub(crate) async fn run(command: KeyCommand, common: &Common) -> anyhow::Result<()> {
    let c = common.client()?;
    let key = match command {
        KeyCommand::Policy(command) => return access::policy(command, &c).await,
        KeyCommand::Grant(command) => return access::grant(command, &c, common.output).await,
        KeyCommand::Create { alias, spec, description, rotation_days, allowed_regions, policy } => {
            let spec = match spec {
                Spec::Aes256GcmSiv => pb::KeySpec::Aes256GcmSiv,
                Spec::EccNistP384 => pb::KeySpec::EccNistP384,
            };
            let req = pb::CreateKeyRequest {
                spec: spec as i32,
                usage: 0,
                description,
                tags: HashMap::new(),
                alias: alias.unwrap_or_default(),
                idempotency_token: token(),
                rotation_period_days: rotation_days.unwrap_or(0),
                allowed_regions,
                policy: policy.map(|p| access::read_policy(&p)).transpose()?.unwrap_or_default(),
            };
            c.create_key(req).await?.key
        }
        KeyCommand::Describe { key } => c.describe_key(pb::DescribeKeyRequest { key, consistency: None }).await?.key,
        KeyCommand::List => {
            let mut page_token = String::new();
            let mut all = Vec::new();
            loop {
                let req = pb::ListKeysRequest { page_size: 100, page_token: page_token.clone(), consistency: None };
                let r = c.list_keys(req).await?;
                all.extend(r.keys);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            if common.output == Output::Json {
                println!("{}", serde_json::Value::Array(all.iter().map(key_json).collect()));
            } else {
                for k in all {
                    print_key(Output::Text, Some(k))?;
                }
            }
            return Ok(());
        }
        KeyCommand::Rotate { key } => c.rotate_key(pb::RotateKeyRequest { key, idempotency_token: token() }).await?.key,
        KeyCommand::Enable { key } => c.enable_key(pb::KeyRequest { key, idempotency_token: token() }).await?.key,
        KeyCommand::Disable { key } => c.disable_key(pb::KeyRequest { key, idempotency_token: token() }).await?.key,
        KeyCommand::ScheduleDeletion { key, days } => {
            let req = pb::ScheduleKeyDeletionRequest { key, pending_window_days: days, idempotency_token: token() };
            c.schedule_key_deletion(req).await?.key
        }
        KeyCommand::CancelDeletion { key } => {
            c.cancel_key_deletion(pb::KeyRequest { key, idempotency_token: token() }).await?.key
        }
        KeyCommand::EnableVersion { key, version } => {
            c.enable_key_version(pb::KeyVersionRequest { key, version, idempotency_token: token() }).await?.key
        }
        KeyCommand::DisableVersion { key, version } => {
            c.disable_key_version(pb::KeyVersionRequest { key, version, idempotency_token: token() }).await?.key
        }
        KeyCommand::SetRegions { key, regions } => {
            let req = pb::SetAllowedRegionsRequest { key, allowed_regions: regions, idempotency_token: token() };
            c.set_allowed_regions(req).await?.key
        }
        KeyCommand::Versions { key } => {
            let r = c.list_key_versions(pb::ListKeyVersionsRequest { key, consistency: None }).await?;
            for v in r.versions {
                let state = pb::KeyVersionState::try_from(v.state).map(|s| s.as_str_name()).unwrap_or("?");
                match common.output {
                    Output::Json => println!(
                        "{}",
                        serde_json::json!({"version": v.version, "state": state, "primary": v.primary, "created_ms": v.created_ms})
                    ),
                    Output::Text => println!("v{}  {state}{}", v.version, if v.primary { "  primary" } else { "" }),
                }
            }
            return Ok(());
        }
    };
    print_key(common.output, key)
}
