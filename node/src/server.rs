//! Starting a node: storage, identity, raft, background duties and the gRPC server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crypto::SecureRng;
use proto::internal::internal_server::InternalServer;
use proto::v1::admin_server::AdminServer;
use proto::v1::kms_server::KmsServer;
use raft::{Applied, Command, KeyRef};
use storage::{LogCipher, RocksLogStore, RocksSnapshots, StateMachineStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;

use crate::config::NodeConfig;
use crate::consensus::TcpConnector;
use crate::custody::identity::{read_passphrase_file, Identities};
use crate::node::{system_clock, Env, Node};
use crate::service_admin::AdminService;
use crate::service_internal::InternalService;
use crate::service_kms::KmsService;
use crate::tls::{Credentials, Policy};
use raft::Principal;

/// Opens storage and starts raft for a real (RocksDB, TCP) node. `credentials`: this node's
/// mTLS credentials, `None` in plaintext mode.
pub async fn open_node(config: NodeConfig, credentials: Option<&Credentials>) -> anyhow::Result<Arc<Node>> {
    if let Some(c) = credentials {
        match c.role()? {
            Principal::Node(id) if id == config.id => {}
            role => anyhow::bail!("tls.cert is a certificate for {role}, but this is node {}", config.id),
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let mut rng = SecureRng::from_os();
    let passphrase = config.identity_passphrase_file.as_deref().map(read_passphrase_file).transpose()?;
    let identities = Identities::open_file(&config.data_dir, passphrase, &mut rng)?;
    let db = storage::open_rocks(&config.data_dir.join("db"))
        .map_err(|e| anyhow::anyhow!("cannot open RocksDB in {}: {e}", config.data_dir.display()))?;
    // The log key's versions live only in this process's memory: a restarted node is sealed
    // until its peers help it unwrap them (`custody/log_keys.rs`).
    let cipher = LogCipher::new(SecureRng::from_os());
    let log = RocksLogStore::new(db.clone(), cipher.clone());
    let sm = StateMachineStore::open(RocksSnapshots::new(db), cipher)?;
    let state = sm.state();
    let tls = credentials.as_ref().map(|c| c.client_config());
    let connector = Arc::new(TcpConnector {
        connect_timeout: Duration::from_millis(config.raft.rpc_timeout_ms),
        tls,
        local_address: config.dial_from,
    });
    Node::start(config, Env::new(system_clock(), rng), connector, (log, sm, state), identities).await
}

/// Serves all gRPC services on `incoming` until `shutdown` resolves, with mTLS when
/// `credentials` are given. Generic over the listener so the simulator can pass turmoil's.
pub async fn serve<I, IO, IE>(
    node: Arc<Node>,
    incoming: I,
    credentials: Option<&Credentials>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = node.config().limits.max_message_bytes;
    let tls = credentials.is_some();
    // Every response carries a `date` header. hyper would stamp it from the system clock;
    // stamping it from the node's clock first (hyper keeps one that is there) keeps the
    // node's bytes on the wire a function of its inputs, which the simulator's replay needs.
    // An error answer (gRPC's trailers-only response, with `grpc-status` in the headers) from
    // a node that is not the leader also names the leader's address (`proto::LEADER_HINT`),
    // so a client whose call failed here can try the leader next.
    let at = node.clone();
    let stamp = tower::util::MapResponseLayer::new(move |mut response: http::Response<tonic::body::Body>| {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(at.now_ms());
        if let Ok(value) = http::HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
            response.headers_mut().insert(http::header::DATE, value);
        }
        let failed = response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() != b"0");
        if failed && !at.consensus.is_leader() {
            if let Some(value) = at.consensus.leader().and_then(|(_, addr)| http::HeaderValue::from_str(&addr).ok()) {
                response.headers_mut().insert(proto::LEADER_HINT, value);
            }
        }
        response
    });
    let mut server = tonic::transport::Server::builder().layer(stamp);
    if let Some(c) = credentials {
        let handshake = Duration::from_millis(node.config().raft.rpc_timeout_ms);
        server = server.tls_config(c.server_config().timeout(handshake))?;
    }
    let kms = KmsServer::new(KmsService(node.clone())).max_decoding_message_size(max).max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService(node.clone())).max_decoding_message_size(max);
    let internal = InternalServer::new(InternalService(node.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let duties = tokio::spawn(leader_duties(node.clone()));
    let elections = tokio::spawn(node.consensus.clone().run_election_timer());
    let custody = node.custody.spawn_duties();
    let result = server
        .add_service(InterceptedService::new(kms, Policy::AnyRole.interceptor::<IO::ConnectInfo>(tls)))
        .add_service(InterceptedService::new(admin, Policy::AdminOrNode.interceptor::<IO::ConnectInfo>(tls)))
        .add_service(InterceptedService::new(internal, Policy::NodeOnly.interceptor::<IO::ConnectInfo>(tls)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    duties.abort();
    elections.abort();
    custody.abort();
    node.consensus.shutdown().await?;
    Ok(result?)
}

/// The leader proposes what time makes due: automatic rotations and destruction of keys
/// whose deletion window has passed. Deduplicated by the commands themselves
/// (`if_primary_is`, `DestroyDue`), so a stale leader proposing too is harmless. A due key
/// the leader's region may not hold is rotated by the nodes in its regions instead: they make
/// its new material.
async fn leader_duties(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this node last became leader, and when it may next try to move leadership to the
    // preferred region: a new leader settles for two election timeouts first, and a failed
    // move waits before the next.
    let settle = Duration::from_millis(2 * node.config().raft.election_timeout_ms_max);
    let mut next_move: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if node.state().sealed().is_some() {
            continue;
        }
        if !node.consensus.is_leader() {
            next_move = None;
            rotate_due(&node, node.now_ms()).await;
            continue;
        }
        let now = tokio::time::Instant::now();
        let due = *next_move.get_or_insert(now + settle);
        if now >= due {
            if let Some(target) = node.consensus.preferred_successor() {
                tracing::info!(target, region = %node.config().raft.preferred_leader_region, "moving leadership to the preferred region");
                if let Err(e) = node.consensus.transfer_leadership(target).await {
                    tracing::warn!(target, error = %e, "moving leadership to the preferred region failed; will retry");
                }
                next_move = Some(tokio::time::Instant::now() + 5 * settle);
                continue;
            }
        }
        if node.state().read().store.root().is_some() {
            if let Err(e) = node.custody.ensure_log_key().await {
                tracing::warn!(error = %e, "creating the log key failed; will retry");
                continue;
            }
        }
        let now_ms = node.now_ms();
        let destroy = node.state().read().store.destruction_due(now_ms);
        rotate_due(&node, now_ms).await;
        if destroy {
            match node.consensus.propose(Command::DestroyDue { now_ms }).await {
                Ok(Applied::Destroyed(ids)) => {
                    for id in ids {
                        tracing::info!(%id, "audit: key destroyed");
                        node.custody.evict(id);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "destroying due keys failed; will retry"),
            }
        }
    }
}

/// Proposes the automatic rotations due that are this node's to make: on the leader, those of
/// keys its region may hold; elsewhere, those of keys the leader's region may not hold but
/// this node's may.
async fn rotate_due(node: &Node, now_ms: u64) {
    let leader = node.consensus.is_leader();
    let leader_region = node.consensus.leader().and_then(|(id, _)| node.consensus.region_of(id));
    let due: Vec<_> = {
        let s = node.state().read();
        s.store
            .rotations_due(now_ms)
            .into_iter()
            .filter(|(id, _, _)| {
                let Ok(key) = s.store.resolve(&KeyRef::Id(*id)) else { return false };
                let leader_may_not = leader_region.as_deref().is_some_and(|r| !key.allows_region(r));
                node.custody.in_regions(&key.allowed_regions) && (leader || leader_may_not)
            })
            .collect()
    };
    for (id, primary, spec) in due {
        let Ok((_, material)) = node.custody.new_material(spec) else { continue };
        let command =
            Command::RotateKey { key: KeyRef::Id(id), token: None, material, if_primary_is: Some(primary), now_ms };
        if let Err(e) = node.consensus.propose(command).await {
            tracing::warn!(%id, error = %e, "automatic rotation failed; will retry");
        }
    }
}

/// `keyquorum server`: runs one node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
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
