//! Starting a node: storage, identity, raft, background duties and the gRPC server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crypto::SecureRng;
use openraft::Raft;
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
use crate::identity::Identities;
use crate::network::{Connector, NetworkFactory, Peers, TcpConnector};
use crate::node::{system_clock, Node};
use crate::service_admin::AdminService;
use crate::service_internal::InternalService;
use crate::service_kms::KmsService;
use crate::tls::{Credentials, Policy};
use raft::Principal;

/// Opens storage and starts raft for a real (RocksDB, TCP) node. `credentials`: this node's
/// mTLS credentials, `None` in plaintext mode.
pub async fn open_node(
    config: NodeConfig,
    credentials: Option<&Credentials>,
) -> anyhow::Result<Arc<Node<TcpConnector>>> {
    if let Some(c) = credentials {
        match c.role()? {
            Principal::Node(id) if id == config.id => {}
            role => anyhow::bail!("tls.cert is a certificate for {role}, but this is node {}", config.id),
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let mut rng = SecureRng::from_os();
    let passphrase =
        config.identity_passphrase_file.as_deref().map(crate::identity::read_passphrase_file).transpose()?;
    let identities = Identities::open_file(&config.data_dir, passphrase, &mut rng)?;
    let db = storage::open_rocks(&config.data_dir.join("db"))
        .map_err(|e| anyhow::anyhow!("cannot open RocksDB in {}: {e}", config.data_dir.display()))?;
    // The log key's versions live only in this process's memory: a restarted node is sealed
    // until its peers help it unwrap them (`keep_log_keys`).
    let cipher = LogCipher::new(SecureRng::from_os());
    let log = RocksLogStore::new(db.clone(), cipher.clone());
    let sm = StateMachineStore::open(RocksSnapshots::new(db), cipher)?;
    let state = sm.state();
    let tls = credentials.as_ref().map(|c| c.client_config());
    let connector = TcpConnector {
        connect_timeout: Duration::from_millis(config.raft.rpc_timeout_ms),
        tls,
        local_address: config.dial_from,
    };
    let peers = Peers::new(connector, config.limits.max_message_bytes);
    let network = NetworkFactory { id: config.id, peers: peers.clone() };
    let raft = Raft::new(config.id, Arc::new(config.openraft_config()?), network, log, sm).await?;
    Ok(Arc::new(Node::new(config, raft, state, peers, system_clock(), identities, rng)))
}

/// Serves all gRPC services on `incoming` until `shutdown` resolves, with mTLS when
/// `credentials` are given. Generic over the listener so the simulator can pass turmoil's.
pub async fn serve<C, I, IO, IE>(
    node: Arc<Node<C>>,
    incoming: I,
    credentials: Option<&Credentials>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    C: Connector,
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = node.config.limits.max_message_bytes;
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
        if failed && !at.is_leader() {
            if let Some(value) = at.leader().and_then(|(_, addr)| http::HeaderValue::from_str(&addr).ok()) {
                response.headers_mut().insert(proto::LEADER_HINT, value);
            }
        }
        response
    });
    let mut server = tonic::transport::Server::builder().layer(stamp);
    if let Some(c) = credentials {
        let handshake = Duration::from_millis(node.config.raft.rpc_timeout_ms);
        server = server.tls_config(c.server_config().timeout(handshake))?;
    }
    let kms = KmsServer::new(KmsService(node.clone())).max_decoding_message_size(max).max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService(node.clone())).max_decoding_message_size(max);
    let internal = InternalServer::new(InternalService(node.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let duties = tokio::spawn(leader_duties(node.clone()));
    let elections = tokio::spawn(crate::election::run(node.clone()));
    let keygen = tokio::spawn(crate::keygen::run(node.clone()));
    let sweeper = tokio::spawn(sweep_cache_on_apply(node.clone()));
    let log_keys = tokio::spawn(keep_log_keys(node.clone()));
    let reshare = tokio::spawn(crate::reshare::run(node.clone()));
    let result = server
        .add_service(InterceptedService::new(kms, Policy::AnyRole.interceptor::<IO::ConnectInfo>(tls)))
        .add_service(InterceptedService::new(admin, Policy::AdminOrNode.interceptor::<IO::ConnectInfo>(tls)))
        .add_service(InterceptedService::new(internal, Policy::NodeOnly.interceptor::<IO::ConnectInfo>(tls)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    duties.abort();
    elections.abort();
    keygen.abort();
    sweeper.abort();
    log_keys.abort();
    reshare.abort();
    node.raft.shutdown().await.map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
    Ok(result?)
}

/// Evicts cached material the replicated state no longer allows, after every applied entry.
async fn sweep_cache_on_apply<C: Connector>(node: Arc<Node<C>>) {
    let mut applied = node.state.applied_index();
    loop {
        // After every applied entry, and every second (old identity keys wait for a snapshot).
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        node.sweep_cache();
        node.erase_stale_identities().await;
    }
}

/// Unwraps every log key version the replicated state names and this node does not hold yet:
/// at start (the node is sealed until it holds the versions its snapshot and log need) and
/// whenever a new version is applied. Retries with backoff while fewer than t+1 holders answer.
async fn keep_log_keys<C: Connector>(node: Arc<Node<C>>) {
    let mut applied = node.state.applied_index();
    // An apply batch that meets a version it lacks waits inside openraft's apply, before it
    // publishes its applied index: being sealed on a version wakes us too.
    let mut sealed = node.state.sealed_watch();
    let mut backoff = Duration::from_millis(100);
    loop {
        let missing: Vec<u32> = {
            let cipher = node.state.cipher();
            node.state.read().store.log_keys().keys().copied().filter(|v| !cipher.has(*v)).collect()
        };
        let mut failed = false;
        let mut installed = false;
        for version in missing {
            match node.unwrap_log_key(version).await {
                Ok(key) => match node.state.cipher().install(version, key) {
                    Ok(()) => {
                        installed = true;
                        tracing::info!(version, "log key v{version} unwrapped with peers' shares");
                        if let Err(e) = node.state.resume().await {
                            tracing::error!(error = %e, "applying what waited for log key v{version} failed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(version, "log key v{version}: {e}");
                        failed = true;
                    }
                },
                Err(e) => {
                    tracing::warn!(version, error = %e, "cannot unwrap log key v{version} yet; retrying");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        backoff = Duration::from_millis(100);
        // What a resumed backlog applied may name newer versions (a root rotation adds one):
        // look again at once rather than wait for the next applied entry.
        if !installed {
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                changed = sealed.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// The leader proposes what time makes due: automatic rotations and destruction of keys
/// whose deletion window has passed. Deduplicated by the commands themselves
/// (`if_primary_is`, `DestroyDue`), so a stale leader proposing too is harmless. A due key
/// the leader's region may not hold is rotated by the nodes in its regions instead: they make
/// its new material.
async fn leader_duties<C: Connector>(node: Arc<Node<C>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this node last became leader, and when it may next try to move leadership to the
    // preferred region: a new leader settles for two election timeouts first, and a failed
    // move waits before the next.
    let settle = Duration::from_millis(2 * node.config.raft.election_timeout_ms_max);
    let mut next_move: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if node.state.sealed().is_some() {
            continue;
        }
        if !node.is_leader() {
            next_move = None;
            rotate_due(&node, node.now_ms()).await;
            continue;
        }
        let now = tokio::time::Instant::now();
        let due = *next_move.get_or_insert(now + settle);
        if now >= due {
            if let Some(target) = node.preferred_successor() {
                tracing::info!(target, region = %node.config.raft.preferred_leader_region, "moving leadership to the preferred region");
                if let Err(e) = node.transfer_leadership(target).await {
                    tracing::warn!(target, error = %e, "moving leadership to the preferred region failed; will retry");
                }
                next_move = Some(tokio::time::Instant::now() + 5 * settle);
                continue;
            }
        }
        if node.state.read().store.root().is_some() {
            if let Err(e) = node.ensure_log_key().await {
                tracing::warn!(error = %e, "creating the log key failed; will retry");
                continue;
            }
        }
        let now_ms = node.now_ms();
        let destroy = node.state.read().store.destruction_due(now_ms);
        rotate_due(&node, now_ms).await;
        if destroy {
            match node.propose(Command::DestroyDue { now_ms }).await {
                Ok(Applied::Destroyed(ids)) => {
                    for id in ids {
                        tracing::info!(%id, "audit: key destroyed");
                        node.cache_evict(id);
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
async fn rotate_due<C: Connector>(node: &Node<C>, now_ms: u64) {
    let leader = node.is_leader();
    let leader_region = node.leader().and_then(|(id, _)| node.region_of(id));
    let due: Vec<_> = {
        let s = node.state.read();
        s.store
            .rotations_due(now_ms)
            .into_iter()
            .filter(|(id, _, _)| {
                let Ok(key) = s.store.resolve(&KeyRef::Id(*id)) else { return false };
                let leader_may_not = leader_region.as_deref().is_some_and(|r| !key.allows_region(r));
                node.in_regions(&key.allowed_regions) && (leader || leader_may_not)
            })
            .collect()
    };
    for (id, primary, spec) in due {
        let Ok((_, material)) = node.new_material(spec) else { continue };
        let command =
            Command::RotateKey { key: KeyRef::Id(id), token: None, material, if_primary_is: Some(primary), now_ms };
        if let Err(e) = node.propose(command).await {
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
    tracing::info!(id = node.id, addr = %node.config.advertise_addr(), region = %node.config.region, "node started");
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
