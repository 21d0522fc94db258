//! The production transport over turmoil's simulated network: a [`Connector`] that dials
//! `turmoil::net::TcpStream`, and the listener side for `node::server::serve`.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use node::consensus::{endpoint, Connector};
use node::error::{NodeError, Result};
use node::tls::Credentials;
use raft::Principal;
use testbed::Authority;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;

use crate::plan::Plan;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, ClientTlsConfig, Uri};

/// Every node listens on this port of its simulated host.
pub const PORT: u16 = 7400;

/// Dials peers over the simulated network, with mTLS when `tls` is set (as the production
/// `TcpConnector`: tonic's TLS over whatever stream the connector returns). Keep-alive pings
/// tear down connections whose segments a partition dropped (turmoil, unlike TCP, does not
/// retransmit), so a healed link never carries a half-lost HTTP/2 stream.
#[derive(Debug, Clone)]
pub struct SimConnector {
    pub connect_timeout: Duration,
    pub tls: Option<ClientTlsConfig>,
}

impl Connector for SimConnector {
    fn channel(&self, addr: &str) -> Result<Channel> {
        let endpoint = endpoint(addr, self.tls.as_ref())?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_millis(500))
            .keep_alive_timeout(Duration::from_millis(1000))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            let stream = turmoil::net::TcpStream::connect(authority).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        })))
    }
}

/// The principal of the workload clients, which create (and so own) every key.
pub const APP_PRINCIPAL: &str = "client/workload";

/// A seed's PKI: one CA, a certificate per node (for its host name), one for the operator
/// (init, membership changes), one for the applications (the workload, which owns the keys)
/// and one for the principal the access workload grants to and revokes from. Key generation
/// uses the OS's randomness, not the seed's: certificates never reach the trace, and TLS
/// bytes do not change simulated timing (turmoil models latency, not bandwidth).
#[derive(Debug)]
pub struct SimPki {
    nodes: BTreeMap<u64, Credentials>,
    pub admin: ClientTlsConfig,
    pub app: ClientTlsConfig,
    /// `history::check::revocation::GRANTEE_PRINCIPAL`.
    pub grantee: ClientTlsConfig,
}

impl SimPki {
    pub fn new(plan: &Plan) -> anyhow::Result<Self> {
        let ca = Authority::generate("simulated cluster CA", 1)?;
        let credentials = |who: Principal, hosts: &[String]| -> anyhow::Result<Credentials> {
            let issued = ca.issue(&who, hosts, 1)?;
            Ok(Credentials { ca: ca.cert_pem().to_string(), cert: issued.cert, key: issued.key })
        };
        let mut nodes = BTreeMap::new();
        for n in plan.all_nodes() {
            nodes.insert(n.id, credentials(Principal::Node(n.id), std::slice::from_ref(&n.host))?);
        }
        Ok(Self {
            nodes,
            admin: credentials(Principal::Admin("chaos".into()), &[])?.client_config(),
            app: credentials(Principal::parse(APP_PRINCIPAL).map_err(anyhow::Error::msg)?, &[])?.client_config(),
            grantee: credentials(
                Principal::parse(::history::check::revocation::GRANTEE_PRINCIPAL).map_err(anyhow::Error::msg)?,
                &[],
            )?
            .client_config(),
        })
    }

    pub fn node(&self, id: u64) -> Result<&Credentials> {
        self.nodes.get(&id).ok_or_else(|| NodeError::Internal(format!("no certificate for node {id}")))
    }
}

/// An accepted simulated connection, as tonic's server wants it.
#[derive(Debug)]
pub struct SimStream(pub turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepted connections of a simulated listener, as a stream for `serve` (an accept task
/// feeding a channel; the task ends when `serve` drops the stream).
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = io::Result<SimStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(s, _)| SimStream(s));
            if tx.send(accepted).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A channel to `addr` over the simulated network, for clients presenting `tls`.
pub fn client_channel(addr: &str, tls: &ClientTlsConfig) -> Result<Channel> {
    SimConnector { connect_timeout: Duration::from_millis(1000), tls: Some(tls.clone()) }.channel(addr)
}
