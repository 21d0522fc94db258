//! What every client command shares: the flags that reach a cluster (`Common`), the client
//! they make, and how input, output and option values are read.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use client::{pb, Client, ClientTlsConfig};

use crate::output::Output;

#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// Client endpoints, comma-separated (host:port,...).
    #[arg(
        long,
        global = true,
        env = "KEYQUORUM_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
    )]
    pub(crate) endpoints: Vec<String>,
    /// The cluster CA certificate (PEM) to verify nodes with.
    #[arg(long, global = true, env = "KEYQUORUM_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the cluster CA (`keyquorum cert issue`).
    #[arg(long, global = true, env = "KEYQUORUM_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "KEYQUORUM_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Talk plaintext to a cluster that runs with `tls.insecure_plaintext`.
    #[arg(long, global = true, env = "KEYQUORUM_PLAINTEXT", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub(crate) plaintext: bool,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// The region this client runs in: nodes there are tried first, then the others by
    /// measured latency. Endpoints may also name theirs (`region-a=host:port`).
    #[arg(long, global = true, env = "KEYQUORUM_REGION")]
    pub(crate) region: Option<String>,
    /// Local address to connect from (multi-homed hosts; with `keyquorum dev --wan-latency-ms`,
    /// the address that places this client in its region).
    #[arg(long, global = true, env = "KEYQUORUM_SOURCE_IP")]
    pub(crate) source_ip: Option<std::net::IpAddr>,
    /// Use only the endpoints given; do not learn the other members from the cluster.
    #[arg(long, global = true)]
    pub(crate) no_discovery: bool,
    /// Deadline of one command's call, retries included, in milliseconds.
    #[arg(long, global = true, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub(crate) timeout_ms: u64,
}

impl Common {
    /// The client library's options these flags choose.
    pub(crate) fn client_options(&self) -> client::ClientOptions {
        client::ClientOptions {
            region: self.region.clone().filter(|r| !r.trim().is_empty()),
            discover: !self.no_discovery,
            call_timeout: std::time::Duration::from_millis(self.timeout_ms),
            local_address: self.source_ip,
            ..client::ClientOptions::default()
        }
    }

    /// The client's mTLS configuration, `None` with `--plaintext`.
    pub(crate) fn tls(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        Ok(match (&self.tls_ca, &self.tls_cert, &self.tls_key, self.plaintext) {
            (_, _, _, true) => None,
            (Some(ca), Some(cert), Some(key), false) => Some(client::tls_config_from_files(ca, cert, key)?),
            _ => bail!(
                "no TLS credentials: give --tls-ca, --tls-cert and --tls-key (or KEYQUORUM_TLS_CA, KEYQUORUM_TLS_CERT, \
                 KEYQUORUM_TLS_KEY; `keyquorum dev` prints them), or --plaintext for a cluster running without TLS"
            ),
        })
    }

    /// A client of the cluster these flags name.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_options(&self.endpoints, self.tls()?, self.client_options())?)
    }
}

/// `key=value`.
pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `linearizable`, `bounded:<ms>` or `bounded:<ms>:read-index`.
pub(crate) fn parse_consistency(s: &str) -> Result<pb::Consistency, String> {
    use pb::consistency::Level;
    let level = match s.split(':').collect::<Vec<_>>()[..] {
        ["linearizable"] => Level::Linearizable(pb::Linearizable {}),
        ["bounded", ms] | ["bounded", ms, "read-index"] => {
            let max_staleness_ms =
                ms.parse().map_err(|_| format!("bounded:<ms> needs a number of milliseconds, got {ms:?}"))?;
            let on_stale = if s.ends_with(":read-index") { pb::OnStale::ReadIndex } else { pb::OnStale::Error };
            Level::BoundedStaleness(pb::BoundedStaleness { max_staleness_ms, on_stale: on_stale.into() })
        }
        _ => return Err(format!("expected linearizable, bounded:<ms> or bounded:<ms>:read-index, got {s:?}")),
    };
    Ok(pb::Consistency { level: Some(level) })
}

/// A file's bytes, or stdin's for `-`.
pub(crate) fn read_input(path: &str) -> anyhow::Result<Vec<u8>> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {path}"))
}

/// Writes `bytes` to a file, or stdout for `-`.
pub(crate) fn write_output(path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if path == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {path}"))
}

pub(crate) fn context(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

/// A fresh idempotency token: a write the client retries is applied once.
pub(crate) fn token() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_flags_parse_or_say_what_they_expect() {
        assert!(matches!(
            parse_consistency("linearizable").unwrap().level,
            Some(pb::consistency::Level::Linearizable(_))
        ));
        let Some(pb::consistency::Level::BoundedStaleness(b)) =
            parse_consistency("bounded:250:read-index").unwrap().level
        else {
            panic!("not bounded")
        };
        assert_eq!((b.max_staleness_ms, b.on_stale), (250, pb::OnStale::ReadIndex as i32));
        assert!(parse_consistency("bounded:soon").unwrap_err().contains("milliseconds"));
        assert!(parse_consistency("eventual").is_err());
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_pair("=x").is_err() && parse_pair("x").is_err());
    }
}
