//! Node configuration: a TOML file, every field overridable from `KEYQUORUM_*` environment
//! variables (e.g. `KEYQUORUM_REGION`, `KEYQUORUM_RAFT_HEARTBEAT_MS`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{StartError, StartResult};

/// `KEYQUORUM_*` variables that belong to the command line client or the test suite, not to
/// a node's config. (`KEYQUORUM_REGION` is both: a node's region and a client's.)
pub const CLIENT_ENV: [&str; 11] = [
    "ENDPOINTS",
    "REGION_CLIENT",
    "LOG",
    "CONFIG",
    "SOURCE_IP",
    "TLS_CA",
    "TLS_CERT",
    "TLS_KEY",
    "PLAINTEXT",
    "SIM_SEEDS",
    "TARGET_CACHE",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, > 0.
    pub id: u64,
    /// Address the gRPC server binds (public and node-to-node services).
    pub listen: SocketAddr,
    /// Address other nodes and clients use; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    pub region: String,
    #[serde(default)]
    pub zone: String,
    /// The local address this node's connections to peers are made from. On one machine
    /// with the WAN relay (`wan/`), the relay knows a connection's region by this address.
    #[serde(default)]
    pub dial_from: Option<std::net::IpAddr>,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub raft: RaftTimings,
    #[serde(default)]
    pub limits: Limits,
    /// How long unwrapped key material stays cached in memory.
    #[serde(default = "default_cache_ttl_ms")]
    pub material_cache_ttl_ms: u64,
    /// mTLS: the CA and this node's certificate and key (or an explicit plaintext opt-out).
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
    /// A file holding an operator passphrase (or key) that seals `data_dir/identity.key`, the
    /// node's identity keys, from which its root-key share is derived. Absent: the file is
    /// protected by its mode (0600) only.
    #[serde(default)]
    pub identity_passphrase_file: Option<PathBuf>,
    /// The audit log (`data_dir/audit/`): rotation, retention, chain heads.
    #[serde(default)]
    pub audit: AuditConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A segment file is closed once it is this large.
    pub segment_bytes: u64,
    /// How many segment files to keep (the oldest go first); 0 keeps them all.
    pub retain_segments: usize,
    /// How often the node writes its chain head into the replicated log (when it moved).
    pub head_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { segment_bytes: 64 * 1024 * 1024, retain_segments: 0, head_interval_ms: 5_000 }
    }
}

fn default_cache_ttl_ms() -> u64 {
    5 * 60 * 1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimings {
    /// Heartbeat period, and (openraft 0.9) the deadline of each append and of a read's
    /// leadership confirmation: above the longest round trip between voters.
    pub heartbeat_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// Deadline of one node-to-node RPC.
    pub rpc_timeout_ms: u64,
    /// Deadline of a whole snapshot transfer.
    pub snapshot_timeout_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot (for slow followers).
    pub keep_entries_after_snapshot: u64,
    /// Deadline of a client request's consensus step (write or read index).
    pub request_timeout_ms: u64,
    /// The leader's read lease: it answers linearizable reads (its own and followers' read
    /// index requests) without a quorum round while a majority accepted a heartbeat it sent
    /// less than this long ago. Must stay below `election_timeout_ms_min`, the margin
    /// covering clock-rate drift between nodes; 0 turns the lease off, so every read
    /// confirms leadership with a quorum round trip. Unset: 80% of `election_timeout_ms_min`.
    pub read_lease_ms: Option<u64>,
    /// The region the leader should be in (set the same on every node): a leader elsewhere
    /// hands leadership to a healthy, caught-up voter there. Empty: wherever it was elected.
    pub preferred_leader_region: String,
}

impl RaftTimings {
    /// The leader's read lease in effect (`read_lease_ms`, or its default).
    pub fn read_lease_ms(&self) -> u64 {
        self.read_lease_ms.unwrap_or(self.election_timeout_ms_min * 4 / 5)
    }
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            // openraft 0.9 also uses the heartbeat interval as the deadline of every append
            // and of a read's leadership check: it must exceed the longest round trip between
            // voters, with room for a TLS handshake on reconnect. 250 ms suits round trips up
            // to ~150 ms (regions on one continent); raise all three together beyond that.
            heartbeat_ms: 250,
            election_timeout_ms_min: 1250,
            election_timeout_ms_max: 2500,
            rpc_timeout_ms: 2000,
            snapshot_timeout_ms: 30_000,
            snapshot_every_entries: 5000,
            keep_entries_after_snapshot: 1000,
            request_timeout_ms: 5000,
            read_lease_ms: None,
            preferred_leader_region: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Largest snapshot a follower accepts.
    pub max_snapshot_bytes: u64,
    /// KMS calls this node serves at once; one more is refused with `RESOURCE_EXHAUSTED` and a
    /// retry-after hint before any work. Admin calls are not counted: operators can act on an
    /// overloaded node. Node-to-node traffic is not counted either.
    pub max_concurrent_calls: usize,
    /// The longest one KMS call may run here before it is answered `DEADLINE_EXCEEDED` (a
    /// caller's shorter `grpc-timeout` applies as well). Admin calls bound their own waits.
    pub call_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_snapshot_bytes: 1 << 30,
            max_concurrent_calls: 1024,
            call_timeout_ms: 30_000,
        }
    }
}

impl NodeConfig {
    /// Reads `path` then the environment; any problem names the field.
    pub fn load(path: &Path) -> StartResult<Self> {
        if !path.exists() {
            return Err(StartError::Config(format!("config file {} does not exist", path.display())));
        }
        let config: NodeConfig = Figment::new()
            .merge(Toml::file(path))
            .merge(Env::prefixed("KEYQUORUM_").ignore(&CLIENT_ENV).split("__"))
            .extract()
            .map_err(|e| StartError::Config(format!("invalid configuration in {}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> StartResult<()> {
        if self.id == 0 {
            return Err(StartError::Config("invalid configuration: field `id` must be greater than 0".into()));
        }
        if self.region.trim().is_empty() {
            return Err(StartError::Config("invalid configuration: field `region` must not be empty".into()));
        }
        self.tls.validate().map_err(|e| StartError::Config(format!("invalid configuration: field `tls`: {e}")))?;
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_timeout_ms_min <= r.heartbeat_ms
            || r.election_timeout_ms_max <= r.election_timeout_ms_min
        {
            return Err(StartError::Config(
                "invalid configuration: field `raft`: need 0 < heartbeat_ms < election_timeout_ms_min < \
                 election_timeout_ms_max"
                    .into(),
            ));
        }
        if r.read_lease_ms.is_some_and(|l| l >= r.election_timeout_ms_min) {
            return Err(StartError::Config(
                "invalid configuration: field `raft.read_lease_ms` must be below election_timeout_ms_min".into(),
            ));
        }
        if self.limits.max_concurrent_calls == 0 || self.limits.call_timeout_ms == 0 {
            return Err(StartError::Config(
                "invalid configuration: fields `limits.max_concurrent_calls` and `limits.call_timeout_ms` must be \
                 greater than 0"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    pub fn openraft_config(&self) -> StartResult<openraft::Config> {
        let r = &self.raft;
        let config = openraft::Config {
            cluster_name: "keyquorum".into(),
            heartbeat_interval: r.heartbeat_ms,
            election_timeout_min: r.election_timeout_ms_min,
            election_timeout_max: r.election_timeout_ms_max,
            // Deadline of one snapshot chunk RPC.
            install_snapshot_timeout: r.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every_entries),
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            snapshot_max_chunk_size: (self.limits.max_message_bytes as u64 / 2).max(1024),
            // Elections are started by our own timer (`election.rs`), which re-draws its
            // timeout every round; openraft 0.9's draws one per process.
            enable_elect: false,
            ..Default::default()
        };
        config.validate().map_err(|e| StartError::Config(format!("invalid raft timings: {e}")))
    }
}
