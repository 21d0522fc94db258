//! The gRPC edge: the services a node serves (`keyquorum.v1.Kms`, `keyquorum.v1.Admin`,
//! `keyquorum.internal.v1.Internal`) as thin adapters over the application layer (`kms`,
//! `admin`) and the components (`consensus`, `custody`): wire types in and out (`convert.rs`),
//! the call context from the certificate and node-only metadata ([`context`]), the one status
//! mapping (`status.rs`), and forwarding a call to the member that serves it (`forward.rs`).
//!
//! **API Boundary:** wire types stop here; everything behind takes domain types.

mod admin;
mod convert;
mod forward;
mod internal;
mod kms;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proto::internal::internal_server::InternalServer;
use proto::v1::admin_server::AdminServer;
use proto::v1::kms_server::KmsServer;
use raft::{NodeId, Principal};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::{Request, Status};

pub(crate) use forward::{FORWARDED_BY, FORWARDED_FOR};

/// Metadata with the caller's id for a call (kept when a call is forwarded).
pub(crate) const REQUEST_ID: &str = "x-request-id";
pub(crate) use status::code_name;

use crate::error::{StartError, StartResult};
use crate::kms::{AuditSink, CallContext, Caller};
use crate::node::Node;
use crate::tls::{Credentials, Policy};

/// The context of a call: who it is for and how it came. The caller is the one its
/// certificate names, unless a current member's certificate forwards it, naming itself
/// (`x-keyquorum-forwarded-by`) and the principal it forwards for (`x-keyquorum-forwarded-for`).
/// From anyone else that metadata is ignored: a client cannot speak for another, nor stop a
/// call from being forwarded. In plaintext mode nothing is authenticated; the forwarding
/// member is taken at its word only so a forwarded call is not forwarded again.
pub(crate) fn context<T>(node: &Node, request: &Request<T>) -> Result<CallContext, Status> {
    let peer = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request reached a handler without an authenticated caller"))?;
    let md = request.metadata();
    let text = |name: &str| md.get(name).and_then(|v| v.to_str().ok());
    let by: Option<NodeId> = text(FORWARDED_BY).and_then(|v| v.parse().ok());
    let (caller, forwarded_by) = match peer {
        Caller::Verified(Principal::Node(id))
            if by == Some(id) && node.consensus.members().iter().any(|(m, _)| *m == id) =>
        {
            let on_behalf = text(FORWARDED_FOR).and_then(|v| Principal::parse(v).ok());
            (on_behalf.map_or(Caller::Verified(Principal::Node(id)), Caller::Verified), Some(id))
        }
        verified @ Caller::Verified(_) => (verified, None),
        Caller::Plaintext => (Caller::Plaintext, by),
    };
    let region = match forwarded_by {
        Some(id) => node.consensus.members().into_iter().find(|(m, _)| *m == id).map(|(_, info)| info.region),
        None => None,
    };
    let region = region.unwrap_or_else(|| node.config().region.clone());
    // The caller's request id if it gave a sensible one, else a new one: every record of one
    // call, here and where it is forwarded, carries the same.
    let request_id = text(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| node.with_rng(|r| hex::encode(rand::Rng::gen::<[u8; 16]>(r))));
    let peer = request.remote_addr().map(|a| a.to_string());
    Ok(CallContext { forwarded_by, request_id, peer, ..CallContext::new(caller, region) })
}

/// Serves all gRPC services on `incoming` until `shutdown` resolves, with mTLS when
/// `credentials` are given, and runs the node's background duties meanwhile. Generic over
/// the listener so the simulator can pass turmoil's.
pub async fn serve<I, IO, IE>(
    node: Arc<Node>,
    incoming: I,
    credentials: Option<&Credentials>,
    shutdown: impl Future<Output = ()>,
) -> StartResult<()>
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
        server = server
            .tls_config(c.server_config().timeout(handshake))
            .map_err(|e| StartError::Credentials(format!("TLS: {e}")))?;
    }
    let audit: Arc<dyn AuditSink> = node.audit.clone();
    let kms_layer = Arc::new(crate::kms::Kms::new(node.clone(), audit.clone()));
    let fleet = Arc::new(admin::PeerFleet(node.clone()));
    let admin_layer = Arc::new(crate::admin::Admin::new(node.clone(), audit, fleet));
    let kms = KmsServer::new(kms::KmsService(kms_layer)).max_decoding_message_size(max).max_encoding_message_size(max);
    let admin = AdminServer::new(admin::AdminService(admin_layer)).max_decoding_message_size(max);
    let internal = InternalServer::new(internal::InternalService(node.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut duties = node.spawn_duties();
    duties.push(tokio::spawn(crate::kms::duties::run(node.clone())));
    let result = server
        .add_service(InterceptedService::new(kms, Policy::AnyRole.interceptor::<IO::ConnectInfo>(tls)))
        .add_service(InterceptedService::new(admin, Policy::AdminOnly.interceptor::<IO::ConnectInfo>(tls)))
        .add_service(InterceptedService::new(internal, Policy::NodeOnly.interceptor::<IO::ConnectInfo>(tls)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    for task in duties {
        task.abort();
    }
    node.consensus.shutdown().await?;
    result.map_err(|e| StartError::Serve(format!("the gRPC server failed: {e}")))
}
