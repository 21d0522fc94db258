//! Running a real node: storage (RocksDB), identity keys, raft, and the gRPC server on TCP
//! until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crypto::SecureRng;
use storage::{LogCipher, RocksLogStore, RocksSnapshots, StateMachineStore};

use crate::config::NodeConfig;
use crate::consensus::TcpConnector;
use crate::custody::identity::{read_passphrase_file, Identities};
use crate::error::{StartError, StartResult};
use crate::node::{system_clock, Env, Node};
use crate::tls::Credentials;
use raft::Principal;

/// Opens storage and starts raft for a real (RocksDB, TCP) node. `credentials`: this node's
/// mTLS credentials, `None` in plaintext mode.
pub async fn open_node(config: NodeConfig, credentials: Option<&Credentials>) -> StartResult<Arc<Node>> {
    if let Some(c) = credentials {
        match c.role()? {
            Principal::Node(id) if id == config.id => {}
            role => {
                return Err(StartError::Credentials(format!(
                    "tls.cert is a certificate for {role}, but this is node {}",
                    config.id
                )))
            }
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::Storage(format!("cannot create data_dir {}: {e}", config.data_dir.display())))?;
    let mut rng = SecureRng::from_os();
    let passphrase = config.identity_passphrase_file.as_deref().map(read_passphrase_file).transpose()?;
    let identities = Identities::open_file(&config.data_dir, passphrase, &mut rng)?;
    let db = storage::open_rocks(&config.data_dir.join("db"))
        .map_err(|e| StartError::Storage(format!("cannot open RocksDB in {}: {e}", config.data_dir.display())))?;
    // The log key's versions live only in this process's memory: a restarted node is sealed
    // until its peers help it unwrap them (`custody/log_keys.rs`).
    let cipher = LogCipher::new(SecureRng::from_os());
    let log = RocksLogStore::new(db.clone(), cipher.clone());
    let sm = StateMachineStore::open(RocksSnapshots::new(db), cipher)
        .map_err(|e| StartError::Storage(format!("cannot open the snapshot: {e}")))?;
    let state = sm.state();
    let tls = credentials.as_ref().map(|c| c.client_config());
    let connector = Arc::new(TcpConnector {
        connect_timeout: Duration::from_millis(config.raft.rpc_timeout_ms),
        tls,
        local_address: config.dial_from,
    });
    let audit_dir = config.data_dir.join("audit");
    let audit = crate::audit::FileStore::open(&audit_dir, config.audit.segment_bytes)
        .map_err(|e| StartError::Storage(format!("cannot open the audit log in {}: {e}", audit_dir.display())))?;
    Node::start(config, Env::new(system_clock(), rng), connector, (log, sm, state), identities, Box::new(audit)).await
}

pub use crate::grpc::serve;

/// `keyquorum server`: runs one node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> StartResult<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Serve(format!("cannot listen on {}: {e}", config.listen)))?;
    let credentials = Credentials::load(&config.tls)?;
    if credentials.is_none() {
        for _ in 0..3 {
            tracing::warn!(
                "PLAINTEXT MODE (tls.insecure_plaintext): no TLS, nobody is authenticated; anyone who reaches {} can \
                 read traffic and request decryption shares",
                config.listen
            );
        }
    }
    let node = open_node(config, credentials.as_deref()).await?;
    tracing::info!(id = node.id(), addr = %node.config().advertise_addr(), region = %node.config().region, "node started");
    // Replies are small and latency-bound: without TCP_NODELAY, Nagle holds a reply's last
    // segment until the peer's delayed ACK (~40 ms on Linux), which dominated warm p99.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install SIGTERM handler: {e}");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    serve(node, incoming, credentials.as_deref(), shutdown).await
}
