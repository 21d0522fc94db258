//! `keyquorum cluster quota get|set|clear`: the per-principal quotas in the replicated
//! configuration.

use clap::Subcommand;
use client::{pb, Client};

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum QuotaCommand {
    /// Show the default quota and every override; with --principal, which limits apply to it.
    Get {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Change the default quota, or (with --principal) a principal's or pattern's override
    /// (`client/payments`, `client/batch-*`). Limits not given stay as they are (a new
    /// override starts from the default). Rates are calls per second at each node, with an
    /// optional burst (`500`, `500/2000`) or `unlimited`.
    Set {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, value_parser = parse_rate)]
        crypto: Option<Setting<pb::Rate>>,
        #[arg(long, value_parser = parse_rate)]
        management: Option<Setting<pb::Rate>>,
        #[arg(long, value_parser = parse_count)]
        max_keys: Option<Setting<u32>>,
        #[arg(long, value_parser = parse_count)]
        max_aliases: Option<Setting<u32>>,
    },
    /// Remove a principal's or pattern's override: the default (or a broader pattern) applies.
    Clear {
        #[arg(long)]
        principal: String,
    },
}

/// A limit as the command line sets it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Setting<T> {
    Unlimited,
    Limit(T),
}

impl<T> Setting<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Setting::Unlimited => None,
            Setting::Limit(t) => Some(t),
        }
    }
}

/// `500`, `500/2000` (rate/burst) or `unlimited`.
fn parse_rate(s: &str) -> Result<Setting<pb::Rate>, String> {
    if s == "unlimited" {
        return Ok(Setting::Unlimited);
    }
    let bad = || format!("bad rate {s:?}: expected calls per second (500), with a burst (500/2000), or unlimited");
    let (rate, burst) = match s.split_once('/') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let per_second: u32 = rate.parse().map_err(|_| bad())?;
    let burst: u32 = burst.map_or(Ok(per_second), |b| b.parse().map_err(|_| bad()))?;
    if per_second == 0 || burst == 0 {
        return Err(bad());
    }
    Ok(Setting::Limit(pb::Rate { per_second, burst }))
}

/// A count or `unlimited`.
fn parse_count(s: &str) -> Result<Setting<u32>, String> {
    if s == "unlimited" {
        return Ok(Setting::Unlimited);
    }
    s.parse().map(Setting::Limit).map_err(|_| format!("bad count {s:?}: expected a number or unlimited"))
}

fn rate_text(r: &Option<pb::Rate>) -> String {
    match r {
        Some(r) if r.burst == r.per_second => format!("{}/s", r.per_second),
        Some(r) => format!("{}/s (burst {})", r.per_second, r.burst),
        None => "unlimited".into(),
    }
}

fn count_text(c: &Option<u32>) -> String {
    c.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

fn limits_json(l: &pb::QuotaLimits) -> serde_json::Value {
    let rate =
        |r: &Option<pb::Rate>| r.as_ref().map(|r| serde_json::json!({"per_second": r.per_second, "burst": r.burst}));
    serde_json::json!({
        "crypto": rate(&l.crypto), "management": rate(&l.management),
        "max_keys": l.max_keys, "max_aliases": l.max_aliases,
    })
}

fn limits_line(l: &pb::QuotaLimits) -> String {
    format!(
        "crypto {}, management {}, keys {}, aliases {}",
        rate_text(&l.crypto),
        rate_text(&l.management),
        count_text(&l.max_keys),
        count_text(&l.max_aliases)
    )
}

pub(crate) async fn run(command: QuotaCommand, c: &Client, output: Output) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Get { principal } => {
            let r = c.get_quotas(pb::GetQuotasRequest { principal: principal.clone().unwrap_or_default() }).await?;
            let default = r.default.unwrap_or_default();
            if output == Output::Json {
                let overrides: serde_json::Map<String, serde_json::Value> =
                    r.overrides.iter().map(|o| (o.scope.clone(), limits_json(&o.limits.unwrap_or_default()))).collect();
                let mut out = serde_json::json!({"default": limits_json(&default), "overrides": overrides});
                if let (Some(p), Some(e)) = (&principal, &r.effective) {
                    out["effective"] = serde_json::json!({
                        "principal": p, "from": if r.effective_scope.is_empty() { "default" } else { &r.effective_scope },
                        "limits": limits_json(e),
                    });
                }
                println!("{out}");
            } else {
                println!("default: {}", limits_line(&default));
                for o in &r.overrides {
                    println!("{}: {}", o.scope, limits_line(&o.limits.unwrap_or_default()));
                }
                if let (Some(p), Some(e)) = (&principal, &r.effective) {
                    let from = if r.effective_scope.is_empty() {
                        "the default".to_string()
                    } else {
                        r.effective_scope.clone()
                    };
                    println!("{p} (from {from}): {}", limits_line(e));
                }
                println!("(rates are per principal at each node its calls reach)");
            }
        }
        QuotaCommand::Set { principal, crypto, management, max_keys, max_aliases } => {
            let current = c.get_quotas(pb::GetQuotasRequest::default()).await?;
            let scope = principal.unwrap_or_default();
            let mut limits = current
                .overrides
                .iter()
                .find(|o| o.scope == scope)
                .and_then(|o| o.limits)
                .or(current.default)
                .unwrap_or_default();
            if let Some(s) = crypto {
                limits.crypto = s.into_option();
            }
            if let Some(s) = management {
                limits.management = s.into_option();
            }
            if let Some(s) = max_keys {
                limits.max_keys = s.into_option();
            }
            if let Some(s) = max_aliases {
                limits.max_aliases = s.into_option();
            }
            c.set_quota(pb::SetQuotaRequest { scope: scope.clone(), limits: Some(limits) }).await?;
            let what = if scope.is_empty() { "default".to_string() } else { scope };
            if output == Output::Json {
                println!("{}", serde_json::json!({"scope": what, "limits": limits_json(&limits)}));
            } else {
                println!("{what}: {}", limits_line(&limits));
            }
        }
        QuotaCommand::Clear { principal } => {
            c.set_quota(pb::SetQuotaRequest { scope: principal.clone(), limits: None }).await?;
            println!("override for {principal} removed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_counts_parse_or_are_refused() {
        assert!(matches!(parse_rate("500"), Ok(Setting::Limit(pb::Rate { per_second: 500, burst: 500 }))));
        assert!(matches!(parse_rate("5/20"), Ok(Setting::Limit(pb::Rate { per_second: 5, burst: 20 }))));
        assert!(matches!(parse_rate("unlimited"), Ok(Setting::Unlimited)));
        for bad in ["", "0", "5/0", "-1", "5/", "x/2", "1.5"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(matches!(parse_count("7"), Ok(Setting::Limit(7))));
        assert!(parse_count("seven").is_err());
    }
}
