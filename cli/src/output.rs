//! How answers are printed: text for people, JSON (`--output json`) for scripts.

use anyhow::Context;
use base64::Engine as _;
use clap::ValueEnum;
use client::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn print_key(output: Output, key: Option<pb::KeyMetadata>) -> anyhow::Result<()> {
    let key = key.context("the server returned no key")?;
    match output {
        Output::Json => println!("{}", key_json(&key)),
        Output::Text => {
            let state = pb::KeyState::try_from(key.state).map(|s| s.as_str_name()).unwrap_or("?");
            let spec = pb::KeySpec::try_from(key.spec).map(|s| s.as_str_name()).unwrap_or("?");
            let regions = if key.allowed_regions.is_empty() {
                String::new()
            } else {
                format!("  regions={}", key.allowed_regions.join(","))
            };
            println!(
                "{}  {spec}  {state}  v{}/{}  {}{regions}",
                key.key_id,
                key.primary_version,
                key.version_count,
                key.aliases.join(",")
            );
        }
    }
    Ok(())
}

pub(crate) fn key_json(key: &pb::KeyMetadata) -> serde_json::Value {
    serde_json::json!({
        "key_id": key.key_id,
        "aliases": key.aliases,
        "description": key.description,
        "tags": key.tags,
        "spec": pb::KeySpec::try_from(key.spec).map(|s| s.as_str_name()).unwrap_or("?"),
        "state": pb::KeyState::try_from(key.state).map(|s| s.as_str_name()).unwrap_or("?"),
        "deletion_time_ms": key.deletion_time_ms,
        "primary_version": key.primary_version,
        "version_count": key.version_count,
        "rotation_period_days": key.rotation_period_days,
        "next_rotation_ms": key.next_rotation_ms,
        "allowed_regions": key.allowed_regions,
        "created_ms": key.created_ms,
        "updated_ms": key.updated_ms,
    })
}
