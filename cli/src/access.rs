//! `keyquorum key policy …` and `keyquorum key grant …`: who may do what to a key.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use client::{pb, Client};

use crate::common::{context, parse_pair, token};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Prints the key's policy as JSON (for its owner, those it allows, and administrators).
    Get { key: String },
    /// Replaces the key's policy with the JSON document in FILE (`-`: standard input). The
    /// output of `policy get` is accepted as it is.
    Put { key: String, file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GrantCommand {
    /// Gives GRANTEE (client/NAME or admin/NAME) some use of KEY.
    Create {
        key: String,
        #[arg(long)]
        grantee: String,
        /// Comma-separated: Encrypt, Decrypt, ReEncryptFrom, ReEncryptTo, GenerateDataKey,
        /// GenerateDataKeyWithoutPlaintext, Sign, Verify, GetPublicKey, Describe.
        #[arg(long, value_delimiter = ',', required = true)]
        operations: Vec<String>,
        /// Only while the call's encryption context holds this pair; repeatable: --context k=v.
        #[arg(long, value_parser = parse_pair)]
        context: Vec<(String, String)>,
        /// The grant ends this many seconds from now; default: never.
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// The key's live grants.
    List { key: String },
    /// Ends a grant at once: no node serves its grantee under it once this returns.
    Revoke { key: String, grant_id: String },
    /// Gives up a grant made to the caller.
    Retire { key: String, grant_id: String },
}

pub(crate) async fn policy(command: PolicyCommand, c: &Client) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Get { key } => {
            let r = c.get_key_policy(pb::GetKeyPolicyRequest { key, consistency: None }).await?;
            let policy: serde_json::Value =
                serde_json::from_str(&r.policy).context("the server sent a policy that is not JSON")?;
            let doc = serde_json::json!({"key_id": r.key_id, "owner": r.owner, "policy": policy});
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        PolicyCommand::Put { key, file } => {
            let policy = read_policy(&file)?;
            c.put_key_policy(pb::PutKeyPolicyRequest { key, policy }).await?;
            println!("policy replaced");
        }
    }
    Ok(())
}

pub(crate) async fn grant(command: GrantCommand, c: &Client, output: Output) -> anyhow::Result<()> {
    match command {
        GrantCommand::Create { key, grantee, operations, context: pairs, expires_in_secs } => {
            let expires_ms = match expires_in_secs {
                None => 0,
                Some(secs) => {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                    (now + std::time::Duration::from_secs(secs)).as_millis() as u64
                }
            };
            let req = pb::CreateGrantRequest {
                key,
                grantee,
                operations,
                encryption_context: context(&pairs),
                expires_ms,
                idempotency_token: token(),
            };
            let grant = c.create_grant(req).await?.grant.context("the server answered without the grant")?;
            print_grant(output, &grant);
        }
        GrantCommand::List { key } => {
            for grant in c.list_grants(pb::ListGrantsRequest { key, consistency: None }).await?.grants {
                print_grant(output, &grant);
            }
        }
        GrantCommand::Revoke { key, grant_id } => {
            c.revoke_grant(pb::RevokeGrantRequest { key, grant_id }).await?;
            println!("grant revoked");
        }
        GrantCommand::Retire { key, grant_id } => {
            c.retire_grant(pb::RevokeGrantRequest { key, grant_id }).await?;
            println!("grant retired");
        }
    }
    Ok(())
}

fn print_grant(output: Output, g: &pb::Grant) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "grant_id": g.grant_id, "key_id": g.key_id, "grantee": g.grantee, "operations": g.operations,
                "encryption_context": g.encryption_context, "expires_ms": g.expires_ms,
                "created_by": g.created_by, "created_ms": g.created_ms,
            })
        ),
        Output::Text => {
            let mut context: Vec<String> = g.encryption_context.iter().map(|(k, v)| format!("{k}={v}")).collect();
            context.sort();
            let expires = if g.expires_ms == 0 { "never".to_string() } else { format!("at {} ms", g.expires_ms) };
            println!(
                "{}  {}  {}  context [{}]  expires {expires}",
                g.grant_id,
                g.grantee,
                g.operations.join(","),
                context.join(",")
            );
        }
    }
}

/// A policy document from a file (`-`: standard input). What `key policy get` prints is
/// accepted too: the document under its `policy` field.
pub(crate) fn read_policy(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).context("reading the policy from standard input")?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("reading the policy {}", path.display()))?;
    }
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let policy = match doc.get("policy") {
        Some(inner) if doc.get("statements").is_none() => inner.clone(),
        _ => doc,
    };
    Ok(policy.to_string())
}
