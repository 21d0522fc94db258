//! The `keyquorum` command line: `server`, `dev`, and the client and cluster commands.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{pb, Client};

use crate::tls::{Authority, Credentials, Role};

#[derive(Debug, Parser)]
#[command(name = "keyquorum", version, about = "A replicated, multi-region key management service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Client endpoints, comma-separated (host:port,...).
    #[arg(
        long,
        global = true,
        env = "KEYQUORUM_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (PEM) to verify nodes with.
    #[arg(long, global = true, env = "KEYQUORUM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the cluster CA (`keyquorum cert issue`).
    #[arg(long, global = true, env = "KEYQUORUM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "KEYQUORUM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Talk plaintext to a cluster that runs with `tls.insecure_plaintext`.
    #[arg(long, global = true, env = "KEYQUORUM_PLAINTEXT", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub plaintext: bool,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The region this client runs in: nodes there are tried first, then the others by
    /// measured latency. Endpoints may also name theirs (`region-a=host:port`).
    #[arg(long, global = true, env = "KEYQUORUM_REGION")]
    pub region: Option<String>,
    /// Local address to connect from (multi-homed hosts; with `keyquorum dev --wan-latency-ms`,
    /// the address that places this client in its region).
    #[arg(long, global = true, env = "KEYQUORUM_SOURCE_IP")]
    pub source_ip: Option<std::net::IpAddr>,
    /// Use only the endpoints given; do not learn the other members from the cluster.
    #[arg(long, global = true)]
    pub no_discovery: bool,
    /// Deadline of one command's call, retries included, in milliseconds.
    #[arg(long, global = true, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
}

impl Common {
    /// The client library's options these flags choose.
    pub fn client_options(&self) -> client::ClientOptions {
        client::ClientOptions {
            region: self.region.clone().filter(|r| !r.trim().is_empty()),
            discover: !self.no_discovery,
            call_timeout: std::time::Duration::from_millis(self.timeout_ms),
            local_address: self.source_ip,
            ..client::ClientOptions::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run one node.
    Server {
        #[arg(long, env = "KEYQUORUM_CONFIG")]
        config: PathBuf,
    },
    /// Start a local multi-region cluster (one node process per region) and wait for Ctrl-C.
    Dev {
        #[arg(long, default_value = ".kq-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// First node's port; node i listens on base_port + i - 1.
        #[arg(long, default_value_t = 7401)]
        base_port: u16,
        /// Put this one-way latency (ms) between regions through a userspace relay: node i is
        /// then reached at 127.0.i.1 (its region's front address) and a client chooses its
        /// region with --source-ip 127.0.i.200. A data dir is made with or without it for good.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        wan_latency_ms: u64,
        /// Extra random delay per chunk between regions, 0..=ms.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        wan_jitter_ms: u64,
        /// Keep the leader in this region (every node's `raft.preferred_leader_region`).
        #[arg(long)]
        preferred_leader_region: Option<String>,
    },
    /// Measure Encrypt latency against a running cluster: cold (first use of a key at a node,
    /// which unwraps it with t+1 decryption shares) and warm (cached material). Creates keys at
    /// the first endpoint and uses them at the second; with `--region`, uses them through the
    /// region-aware client (own region first), so the first endpoint should be elsewhere.
    Bench {
        /// Cold Encrypts to time (one new key each).
        #[arg(long, default_value_t = 50)]
        cold: usize,
        /// Warm Encrypts to time.
        #[arg(long, default_value_t = 1000)]
        warm: usize,
        /// `linearizable` (a read index at the leader per call, shared by concurrent calls) or
        /// `bounded:<ms>` (served from the node's state if it heard from the leader within ms).
        #[arg(long, default_value = "linearizable", value_parser = parse_consistency)]
        consistency: pb::Consistency,
        #[command(flatten)]
        common: Common,
    },
    /// Key lifecycle.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Encrypt up to 64 KiB under a symmetric key.
    Encrypt {
        #[arg(long)]
        key: String,
        #[command(flatten)]
        io: CryptoIo,
        #[command(flatten)]
        common: Common,
    },
    /// Decrypt a ciphertext (the key is named inside it).
    Decrypt {
        #[command(flatten)]
        io: CryptoIo,
        #[command(flatten)]
        common: Common,
    },
    /// Re-encrypt a ciphertext under a key's primary version (or another key) without the plaintext leaving the cluster.
    Reencrypt {
        /// Destination key (default: the ciphertext's own key).
        #[arg(long)]
        key: Option<String>,
        /// Encryption context of the new ciphertext (default: the same as the source).
        #[arg(long = "dest-context", value_parser = parse_pair)]
        dest_context: Vec<(String, String)>,
        #[command(flatten)]
        io: CryptoIo,
        #[command(flatten)]
        common: Common,
    },
    /// Generate a data key for envelope encryption.
    Datakey {
        #[arg(long)]
        key: String,
        #[arg(long, value_parser = parse_pair)]
        context: Vec<(String, String)>,
        #[arg(long, default_value_t = 32)]
        bytes: u32,
        /// Return only the encrypted data key.
        #[arg(long)]
        without_plaintext: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Sign a message with an ECC_NIST_P384 key (ECDSA, SHA-384); writes a DER signature.
    Sign {
        #[arg(long)]
        key: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long = "out")]
        output_file: String,
        #[command(flatten)]
        common: Common,
    },
    /// Verify a signature.
    Verify {
        #[arg(long)]
        key: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long)]
        signature: String,
        #[arg(long, default_value_t = 0)]
        key_version: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Print a signing key's public key (PEM).
    Pubkey {
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Random bytes from the cluster's CSPRNG.
    Random {
        #[arg(long, default_value_t = 32)]
        bytes: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Cluster administration.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        common: Common,
    },
    /// The cluster CA and the certificates it issues to nodes, operators and applications.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
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
        #[arg(long, value_parser = parse_role)]
        role: Role,
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

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
}

fn cert_command(command: CertCommand) -> anyhow::Result<()> {
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
            if matches!(role, Role::Node(_)) && hosts.is_empty() {
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

#[derive(Debug, Clone, Args)]
pub struct CryptoIo {
    /// Encryption context, repeatable: --context k=v.
    #[arg(long, value_parser = parse_pair)]
    pub context: Vec<(String, String)>,
    /// Input file, or - for stdin.
    #[arg(long = "in", default_value = "-")]
    pub input: String,
    /// Output file, or - for stdout.
    #[arg(long = "out", default_value = "-")]
    pub output_file: String,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
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
    },
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
pub enum Spec {
    #[value(name = "AES_256_GCM_SIV", alias = "aes")]
    Aes256GcmSiv,
    #[value(name = "ECC_NIST_P384", alias = "p384")]
    EccNistP384,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Form the cluster and deal its threshold root key. Members: id=1,addr=127.0.0.1:7401,region=a
    Init {
        #[arg(long = "member", value_parser = parse_member, required = true)]
        members: Vec<pb::Member>,
    },
    Status,
    AddNode {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        region: String,
    },
    RemoveNode {
        id: u64,
    },
    TransferLeader {
        id: u64,
    },
    Snapshot,
    /// Generate a new root key among the current voters, re-wrap every key version and log key
    /// under it, and erase the old shares. Old ciphertexts keep decrypting.
    RotateRoot,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub fn parse_member(s: &str) -> Result<pb::Member, String> {
    let mut m = pb::Member::default();
    for part in s.split(',') {
        let (k, v) = parse_pair(part)?;
        match k.as_str() {
            "id" => m.id = v.parse().map_err(|_| format!("bad id {v:?}"))?,
            "addr" => m.addr = v,
            "region" => m.region = v,
            "zone" => m.zone = v,
            _ => return Err(format!("unknown member field {k:?} (id, addr, region, zone)")),
        }
    }
    if m.id == 0 || m.addr.is_empty() || m.region.is_empty() {
        return Err("a member needs id, addr and region".into());
    }
    Ok(m)
}

fn read_input(path: &str) -> anyhow::Result<Vec<u8>> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {path}"))
}

fn write_output(path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if path == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {path}"))
}

fn context(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn token() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn print_key(output: Output, key: Option<pb::KeyMetadata>) -> anyhow::Result<()> {
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

fn key_json(key: &pb::KeyMetadata) -> serde_json::Value {
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

/// The client's mTLS configuration, `None` with `--plaintext`.
fn tls(common: &Common) -> anyhow::Result<Option<client::ClientTlsConfig>> {
    Ok(match (&common.tls_ca, &common.tls_cert, &common.tls_key, common.plaintext) {
        (_, _, _, true) => None,
        (Some(ca), Some(cert), Some(key), false) => Some(Credentials::read(ca, cert, key)?.client_config()),
        _ => bail!(
            "no TLS credentials: give --tls-ca, --tls-cert and --tls-key (or KEYQUORUM_TLS_CA, KEYQUORUM_TLS_CERT, \
             KEYQUORUM_TLS_KEY; `keyquorum dev` prints them), or --plaintext for a cluster running without TLS"
        ),
    })
}

/// `linearizable`, `bounded:<ms>` or `bounded:<ms>:read-index`.
fn parse_consistency(s: &str) -> Result<pb::Consistency, String> {
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

fn client(common: &Common) -> anyhow::Result<Client> {
    Ok(Client::with_options(&common.endpoints, tls(common)?, common.client_options())?)
}

/// Runs a client or cluster command.
pub async fn run_client(command: Commands) -> anyhow::Result<()> {
    match command {
        Commands::Server { .. } | Commands::Dev { .. } => bail!("not a client command"),
        Commands::Cert { command } => cert_command(command),
        Commands::Bench { cold, warm, consistency, common } => {
            crate::bench::run(&common, tls(&common)?, cold, warm, consistency).await
        }
        Commands::Key { command, common } => key_command(command, &common).await,
        Commands::Encrypt { key, io, common } => {
            let c = client(&common)?;
            let req = pb::EncryptRequest {
                key,
                plaintext: read_input(&io.input)?,
                encryption_context: context(&io.context),
                consistency: None,
            };
            let r = c.encrypt(req).await?;
            match common.output {
                Output::Text => write_output(&io.output_file, &r.ciphertext),
                Output::Json => {
                    let j = serde_json::json!({"ciphertext": b64(&r.ciphertext), "key_id": r.key_id, "key_version": r.key_version});
                    write_output(&io.output_file, format!("{j}\n").as_bytes())
                }
            }
        }
        Commands::Decrypt { io, common } => {
            let c = client(&common)?;
            let req = pb::DecryptRequest {
                ciphertext: read_input(&io.input)?,
                encryption_context: context(&io.context),
                consistency: None,
                key: String::new(),
            };
            let r = c.decrypt(req).await?;
            match common.output {
                Output::Text => write_output(&io.output_file, &r.plaintext),
                Output::Json => {
                    let j = serde_json::json!({"plaintext": b64(&r.plaintext), "key_id": r.key_id, "key_version": r.key_version});
                    write_output(&io.output_file, format!("{j}\n").as_bytes())
                }
            }
        }
        Commands::Reencrypt { key, dest_context, io, common } => {
            let c = client(&common)?;
            let source = context(&io.context);
            let req = pb::ReEncryptRequest {
                ciphertext: read_input(&io.input)?,
                destination_encryption_context: if dest_context.is_empty() {
                    source.clone()
                } else {
                    context(&dest_context)
                },
                source_encryption_context: source,
                destination_key: key.unwrap_or_default(),
                consistency: None,
            };
            let r = c.re_encrypt(req).await?;
            match common.output {
                Output::Text => write_output(&io.output_file, &r.ciphertext),
                Output::Json => {
                    let j = serde_json::json!({"ciphertext": b64(&r.ciphertext), "key_id": r.key_id, "key_version": r.key_version,
                        "source_key_id": r.source_key_id, "source_key_version": r.source_key_version});
                    write_output(&io.output_file, format!("{j}\n").as_bytes())
                }
            }
        }
        Commands::Datakey { key, context: ctx, bytes, without_plaintext, common } => {
            let c = client(&common)?;
            let req = pb::GenerateDataKeyRequest {
                key,
                encryption_context: context(&ctx),
                number_of_bytes: bytes,
                consistency: None,
            };
            let r = if without_plaintext {
                c.generate_data_key_without_plaintext(req).await
            } else {
                c.generate_data_key(req).await
            }?;
            let j = serde_json::json!({"plaintext": b64(&r.plaintext), "ciphertext": b64(&r.ciphertext), "key_id": r.key_id, "key_version": r.key_version});
            match common.output {
                Output::Json => println!("{j}"),
                Output::Text => {
                    if !without_plaintext {
                        println!("plaintext:  {}", b64(&r.plaintext));
                    }
                    println!("ciphertext: {}", b64(&r.ciphertext));
                    println!("key:        {} v{}", r.key_id, r.key_version);
                }
            }
            Ok(())
        }
        Commands::Sign { key, input, output_file, common } => {
            let c = client(&common)?;
            let req = pb::SignRequest { key, message: read_input(&input)?, consistency: None };
            let r = c.sign(req).await?;
            write_output(&output_file, &r.signature)?;
            if common.output == Output::Json {
                eprintln!(
                    "{}",
                    serde_json::json!({"key_id": r.key_id, "key_version": r.key_version, "signature": b64(&r.signature)})
                );
            }
            Ok(())
        }
        Commands::Verify { key, input, signature, key_version, common } => {
            let c = client(&common)?;
            let req = pb::VerifyRequest {
                key,
                message: read_input(&input)?,
                signature: read_input(&signature)?,
                key_version,
                consistency: None,
            };
            let r = c.verify(req).await?;
            match common.output {
                Output::Json => println!("{}", serde_json::json!({"valid": r.valid})),
                Output::Text => println!("{}", if r.valid { "valid" } else { "INVALID" }),
            }
            if !r.valid {
                std::process::exit(1);
            }
            Ok(())
        }
        Commands::Pubkey { key, common } => {
            let c = client(&common)?;
            let req = pb::GetPublicKeyRequest { key, key_version: 0, consistency: None };
            let r = c.get_public_key(req).await?;
            match common.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"key_id": r.key_id, "key_version": r.key_version, "public_key_der": b64(&r.public_key_der), "public_key_pem": r.public_key_pem})
                ),
                Output::Text => print!("{}", r.public_key_pem),
            }
            Ok(())
        }
        Commands::Random { bytes, common } => {
            let c = client(&common)?;
            let req = pb::GenerateRandomRequest { number_of_bytes: bytes };
            let r = c.generate_random(req).await?;
            match common.output {
                Output::Json => println!("{}", serde_json::json!({"random": b64(&r.random)})),
                Output::Text => println!("{}", hex::encode(&r.random)),
            }
            Ok(())
        }
        Commands::Cluster { command, common } => cluster_command(command, &common).await,
    }
}

async fn key_command(command: KeyCommand, common: &Common) -> anyhow::Result<()> {
    let c = client(common)?;
    macro_rules! call {
        ($method:ident, $req:expr) => {{
            let req = $req;
            c.$method(req).await?
        }};
    }
    let key = match command {
        KeyCommand::Create { alias, spec, description, rotation_days, allowed_regions } => {
            let spec = match spec {
                Spec::Aes256GcmSiv => pb::KeySpec::Aes256GcmSiv,
                Spec::EccNistP384 => pb::KeySpec::EccNistP384,
            };
            call!(
                create_key,
                pb::CreateKeyRequest {
                    spec: spec as i32,
                    usage: 0,
                    description,
                    tags: HashMap::new(),
                    alias: alias.unwrap_or_default(),
                    idempotency_token: token(),
                    rotation_period_days: rotation_days.unwrap_or(0),
                    allowed_regions,
                }
            )
            .key
        }
        KeyCommand::Describe { key } => call!(describe_key, pb::DescribeKeyRequest { key, consistency: None }).key,
        KeyCommand::List => {
            let mut page_token = String::new();
            let mut all = Vec::new();
            loop {
                let r = call!(
                    list_keys,
                    pb::ListKeysRequest { page_size: 100, page_token: page_token.clone(), consistency: None }
                );
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
        KeyCommand::Rotate { key } => call!(rotate_key, pb::RotateKeyRequest { key, idempotency_token: token() }).key,
        KeyCommand::Enable { key } => call!(enable_key, pb::KeyRequest { key, idempotency_token: token() }).key,
        KeyCommand::Disable { key } => call!(disable_key, pb::KeyRequest { key, idempotency_token: token() }).key,
        KeyCommand::ScheduleDeletion { key, days } => {
            call!(
                schedule_key_deletion,
                pb::ScheduleKeyDeletionRequest { key, pending_window_days: days, idempotency_token: token() }
            )
            .key
        }
        KeyCommand::CancelDeletion { key } => {
            call!(cancel_key_deletion, pb::KeyRequest { key, idempotency_token: token() }).key
        }
        KeyCommand::EnableVersion { key, version } => {
            call!(enable_key_version, pb::KeyVersionRequest { key, version, idempotency_token: token() }).key
        }
        KeyCommand::DisableVersion { key, version } => {
            call!(disable_key_version, pb::KeyVersionRequest { key, version, idempotency_token: token() }).key
        }
        KeyCommand::SetRegions { key, regions } => {
            call!(
                set_allowed_regions,
                pb::SetAllowedRegionsRequest { key, allowed_regions: regions, idempotency_token: token() }
            )
            .key
        }
        KeyCommand::Versions { key } => {
            let r = call!(list_key_versions, pb::ListKeyVersionsRequest { key, consistency: None });
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

async fn cluster_command(command: ClusterCommand, common: &Common) -> anyhow::Result<()> {
    // Membership changes and root rotation run a key-generation round before they answer: one
    // attempt may take the whole call's time (the default 5 s per attempt cut them off, and
    // the retry asked for the change again).
    let mut options = common.client_options();
    options.attempt_timeout = options.call_timeout;
    let c = Client::with_options(&common.endpoints, tls(common)?, options)?;
    match command {
        ClusterCommand::Init { members } => {
            let req = pb::InitRequest { members };
            let r = c.only(0)?.init(req).await?;
            println!("initialised: {} share holders, any {} can unwrap", r.holders, r.shares_needed);
        }
        ClusterCommand::Status => {
            let r = c.status(pb::StatusRequest {}).await?;
            if common.output == Output::Json {
                let nodes: Vec<_> = r
                    .nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "id": n.id, "addr": n.addr, "region": n.region, "zone": n.zone, "role": n.role, "term": n.term,
                            "last_log_index": n.last_log_index, "applied_index": n.applied_index,
                            "replication_lag": n.replication_lag, "version": n.version, "reachable": n.reachable,
                            "error": n.error, "voter": n.voter, "leader_id": n.leader_id, "holds_share": n.holds_share,
                            "preferred_leader_region": n.preferred_leader_region,
                            "sealed": n.sealed, "sealed_log_key_version": n.sealed_log_key_version,
                            "log_key_versions": n.log_key_versions,
                            "faulty_shares": n.faulty_shares,
                            "root_epoch": n.root_epoch, "next_root_epoch": n.next_root_epoch,
                            "identity_rounds": n.identity_rounds,
                            "cache": {"entries": n.cache_entries, "hits": n.cache_hits,
                                      "misses": n.cache_misses, "evictions": n.cache_evictions},
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"leader_id": r.leader_id, "nodes": nodes, "placement_warnings": r.placement_warnings})
                );
            } else {
                let mut nodes = r.nodes;
                nodes.sort_by(|a, b| (&a.region, a.id).cmp(&(&b.region, b.id)));
                println!(
                    "  {:<4} {:<22} {:<10} {:>5} {:>8} {:>8} {:>4} {:>6} {:>15}  version",
                    "id", "addr", "role", "term", "last_log", "applied", "lag", "sealed", "cache hit/miss"
                );
                let mut region = None;
                for n in &nodes {
                    if region != Some(&n.region) {
                        let here: Vec<_> = nodes.iter().filter(|m| m.region == n.region).collect();
                        let voters = here.iter().filter(|m| m.voter).count();
                        println!(
                            "region {} ({voters} of {} voters)",
                            n.region,
                            nodes.iter().filter(|m| m.voter).count()
                        );
                        region = Some(&n.region);
                    }
                    println!(
                        "  {:<4} {:<22} {:<10} {:>5} {:>8} {:>8} {:>4} {:>6} {:>15}  {}{}",
                        n.id,
                        n.addr,
                        n.role,
                        n.term,
                        n.last_log_index,
                        n.applied_index,
                        n.replication_lag,
                        if n.sealed { format!("v{}", n.sealed_log_key_version) } else { "no".to_string() },
                        format!("{}/{}", n.cache_hits, n.cache_misses),
                        n.version,
                        if n.error.is_empty() { String::new() } else { format!("  ({})", n.error) }
                    );
                }
                for w in &r.placement_warnings {
                    println!("warning: {w}");
                }
            }
        }
        ClusterCommand::AddNode { id, addr, region } => {
            let req = pb::AddNodeRequest { member: Some(pb::Member { id, addr, region, zone: String::new() }) };
            c.add_node(req).await?;
            println!("node {id} added as a voter");
        }
        ClusterCommand::RemoveNode { id } => {
            c.remove_node(pb::RemoveNodeRequest { id }).await?;
            println!("node {id} removed");
        }
        ClusterCommand::TransferLeader { id } => {
            c.transfer_leader(pb::TransferLeaderRequest { id }).await?;
            println!("leadership moved to node {id}");
        }
        ClusterCommand::Snapshot => {
            let r = c.snapshot(pb::SnapshotRequest {}).await?;
            println!("snapshot at log index {}", r.last_log_index);
        }
        ClusterCommand::RotateRoot => {
            let r = c.rotate_root(pb::RotateRootRequest {}).await?;
            if common.output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"root_epoch": r.root_epoch, "holders": r.holders, "shares_needed": r.shares_needed})
                );
            } else {
                println!(
                    "root key epoch {} in force: holders {:?}, any {} can unwrap; old shares erased",
                    r.root_epoch, r.holders, r.shares_needed
                );
            }
        }
    }
    Ok(())
}
