//! Node-to-node transport: openraft's network over the `Internal` gRPC service, and the
//! channels custody's share requests use too.
//!
//! One cached channel per peer address; per-RPC deadlines from openraft's `RPCOption`;
//! message-size limits on both sides. Connections are made by a [`Connector`] the node is
//! given, so the simulator can plug in turmoil's sockets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use proto::internal::internal_client::InternalClient;
use proto::internal::RaftPayload;
use raft::{NodeId, NodeInfo, TypeConfig};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{NodeError, Result};

/// Makes (lazy) channels to peers. The simulator plugs in its own (turmoil's sockets).
pub trait Connector: std::fmt::Debug + Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel>;
}

/// TCP, with mTLS unless the node runs in plaintext mode.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub connect_timeout: Duration,
    /// This node's client side of mTLS; `None` in plaintext mode.
    pub tls: Option<ClientTlsConfig>,
    /// The local address connections are made from (`dial_from`); the kernel picks if `None`.
    pub local_address: Option<std::net::IpAddr>,
}

/// The endpoint for a peer at `addr` (`host:port`, as its membership entry names it): `https`
/// with the TLS config, `http` without.
pub fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint> {
    let invalid = |e: &dyn std::fmt::Display| NodeError::Invalid(format!("bad peer address {addr:?}: {e}"));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| invalid(&e))?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone()).map_err(|e| invalid(&e)),
        None => Ok(endpoint),
    }
}

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel> {
        let endpoint = endpoint(addr, self.tls.as_ref())?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .local_address(self.local_address)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    }
}

/// The channel cache: one channel per peer address, shared by raft and custody RPCs. Also
/// what the peers' answers to our vote requests said that the election timer needs.
#[derive(Debug, Clone)]
pub struct Peers {
    connector: Arc<dyn Connector>,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
    max_message_bytes: usize,
    /// A voter refused our vote request because its log is longer than ours.
    longer_log_seen: Arc<AtomicBool>,
    /// When each peer last answered one of our raft RPCs (a leader's view of its followers'
    /// health, for the topology).
    contacts: Arc<Mutex<BTreeMap<NodeId, tokio::time::Instant>>>,
    /// Which heartbeats each follower accepted: the leader's read lease (`lease.rs`).
    pub(super) lease_acks: super::lease::LeaseAcks,
}

impl Peers {
    pub fn new(connector: Arc<dyn Connector>, max_message_bytes: usize) -> Self {
        Self {
            connector,
            channels: Default::default(),
            max_message_bytes,
            longer_log_seen: Default::default(),
            contacts: Default::default(),
            lease_acks: Default::default(),
        }
    }

    /// When each peer last answered one of our raft RPCs.
    pub fn contacts(&self) -> BTreeMap<NodeId, tokio::time::Instant> {
        self.contacts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Whether a voter has refused us for a longer log since the last call.
    pub(super) fn take_longer_log_seen(&self) -> bool {
        self.longer_log_seen.swap(false, Ordering::SeqCst)
    }

    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().map_err(|_| NodeError::Internal("peer cache poisoned".into()))?;
        match channels.get(addr) {
            Some(c) => Ok(c.clone()),
            None => {
                let c = self.connector.channel(addr)?;
                channels.insert(addr.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    pub fn client(&self, addr: &str) -> Result<InternalClient<Channel>> {
        let channel = self.channel(addr)?;
        Ok(InternalClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| NodeError::Internal(format!("encode: {e}")))
}

pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> std::result::Result<T, tonic::Status> {
    postcard::from_bytes(bytes).map_err(|e| tonic::Status::invalid_argument(format!("malformed payload: {e}")))
}

/// openraft's network factory.
#[derive(Debug, Clone)]
pub(super) struct NetworkFactory {
    pub(super) id: NodeId,
    pub(super) peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerNetwork { id: self.id, target, addr: node.addr.clone(), peers: self.peers.clone() }
    }
}

#[derive(Debug)]
pub(super) struct PeerNetwork {
    id: NodeId,
    target: NodeId,
    addr: String,
    peers: Peers,
}

type RpcResult<T, E> = std::result::Result<T, RPCError<NodeId, NodeInfo, E>>;

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &self,
        kind: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let unreachable =
            |e: &dyn std::fmt::Display| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string())));
        let mut client = self.peers.client(&self.addr).map_err(|e| unreachable(&e))?;
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { payload });
        let ttl = option.hard_ttl();
        request.set_timeout(ttl);
        let call = async {
            match kind {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind.action(),
                    id: self.id,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => return Err(unreachable(&status)),
            Ok(Ok(reply)) => {
                if let Ok(mut c) = self.peers.contacts.lock() {
                    c.insert(self.target, tokio::time::Instant::now());
                }
                reply.into_inner()
            }
        };
        let result: std::result::Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Rpc {
    fn action(self) -> openraft::network::RPCTypes {
        match self {
            Rpc::Append => openraft::network::RPCTypes::AppendEntries,
            Rpc::Vote => openraft::network::RPCTypes::Vote,
            Rpc::Snapshot => openraft::network::RPCTypes::InstallSnapshot,
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let sent = tokio::time::Instant::now();
        let response: AppendEntriesResponse<NodeId> = self.call(Rpc::Append, &rpc, &option).await?;
        // Any answer but a higher vote means the follower accepted our vote and restarted
        // its lease when it received this request, which was after `sent`.
        if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            self.peers.lease_acks.record(self.target, rpc.vote, sent);
        }
        Ok(response)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        let response: VoteResponse<NodeId> = self.call(Rpc::Vote, &rpc, &option).await?;
        if !response.vote_granted && response.last_log_id > rpc.last_log_id {
            self.peers.longer_log_seen.store(true, Ordering::SeqCst);
        }
        Ok(response)
    }
}
