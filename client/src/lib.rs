//! The keyquorum client library: connects to a list of endpoints and fails over between them.
//!
//! Today it walks the endpoint list in order and moves on when an endpoint is unreachable or
//! answers UNAVAILABLE; the region-aware client (own region first, latency, circuit breakers,
//! retry budgets) arrives with the multi-region issue. Failover resends the same request, so
//! every write should carry an idempotency token (all key writes accept one) to apply once;
//! the CLI always sets one.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proto::v1::admin_client::AdminClient;
use proto::v1::kms_client::KmsClient;
use thiserror::Error;
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub use proto::v1 as pb;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no endpoints given: pass --endpoints or set KEYQUORUM_ENDPOINTS")]
    NoEndpoints,
    #[error("invalid endpoint {0:?}: {1}")]
    InvalidEndpoint(String, String),
}

/// A client over several endpoints.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<(String, Channel)>,
    current: AtomicUsize,
    max_message_bytes: usize,
}

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

impl Client {
    /// `endpoints`: `host:port` (or URLs such as `https://127.0.0.1:7401`). With `tls`
    /// (the cluster CA and this client's certificate) every connection is mTLS over `https`;
    /// without, plaintext `http` for clusters that run with `tls.insecure_plaintext`.
    /// Connections are made lazily.
    pub fn new<S: AsRef<str>>(endpoints: &[S], tls: Option<ClientTlsConfig>) -> Result<Self, ClientError> {
        let mut out = Vec::new();
        for e in endpoints {
            let e = e.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            let endpoint = endpoint(e, tls.as_ref())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(15))
                .tcp_nodelay(true);
            let url = e.to_string();
            out.push((url, endpoint.connect_lazy()));
        }
        if out.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self { endpoints: out, current: AtomicUsize::new(0), max_message_bytes: MAX_MESSAGE_BYTES })
    }

    /// A client over channels made elsewhere (the simulator makes them over its own network).
    pub fn from_channels(endpoints: Vec<(String, Channel)>) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self { endpoints, current: AtomicUsize::new(0), max_message_bytes: MAX_MESSAGE_BYTES })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|(u, _)| u.clone()).collect()
    }

    /// Runs `call` against the current endpoint, moving to the next one when it is
    /// unreachable or unavailable; two passes over the list with a short backoff.
    async fn with_failover<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.endpoints.len();
        let mut last = Status::unavailable("no endpoint answered");
        for attempt in 0..2 * n {
            let index = (self.current.load(Ordering::Relaxed) + attempt) % n;
            match call(self.endpoints[index].1.clone()).await {
                Ok(r) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(s) if retryable(&s) => {
                    last = Status::new(s.code(), format!("{}: {}", self.endpoints[index].0, s.message()));
                    if attempt + 1 == n {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }

    /// A KMS call with failover, e.g. `client.kms(|mut c| async move { c.encrypt(req).await })`.
    pub async fn kms<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(KmsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let max = self.max_message_bytes;
        self.with_failover(|ch| call(KmsClient::new(ch).max_decoding_message_size(max).max_encoding_message_size(max)))
            .await
    }

    /// An Admin call with failover.
    pub async fn admin<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.with_failover(|ch| call(AdminClient::new(ch))).await
    }

    /// An Admin call to one endpoint (by index), no failover.
    pub async fn admin_at<T, F, Fut>(&self, index: usize, call: F) -> Result<T, Status>
    where
        F: FnOnce(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (_, ch) = self.endpoints.get(index).ok_or_else(|| Status::invalid_argument("no such endpoint"))?;
        call(AdminClient::new(ch.clone())).await.map(|r| r.into_inner())
    }
}

/// The endpoint for `e` (`host:port`, or a URL whose scheme matches `tls`): `https` with the
/// TLS config (the cluster CA and our certificate), `http` without. Nodes dial each other
/// through this too.
pub fn endpoint(e: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, ClientError> {
    let invalid = |why: &str| ClientError::InvalidEndpoint(e.to_string(), why.to_string());
    let url = match (e.split_once("://"), tls) {
        (None, Some(_)) => format!("https://{e}"),
        (None, None) => format!("http://{e}"),
        (Some(("https", _)), Some(_)) | (Some(("http", _)), None) => e.to_string(),
        (Some(("http", _)), Some(_)) => {
            return Err(invalid("an http:// endpoint with TLS credentials: write https:// or host:port"))
        }
        (Some(("https", _)), None) => {
            return Err(invalid(
                "an https:// endpoint needs TLS credentials: give --tls-ca, --tls-cert and --tls-key \
                 (KEYQUORUM_TLS_CA, KEYQUORUM_TLS_CERT, KEYQUORUM_TLS_KEY)",
            ))
        }
        (Some(_), _) => return Err(invalid("the scheme must be http or https")),
    };
    let endpoint = Endpoint::from_shared(url).map_err(|err| invalid(&err.to_string()))?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone()).map_err(|err| invalid(&err.to_string())),
        None => Ok(endpoint),
    }
}

/// Whether another endpoint may succeed where this one failed.
fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        // Transport-level failures (connection refused, reset) surface as Unknown/Internal
        // with no response from a server.
        Code::Unknown | Code::Cancelled => s.metadata().is_empty(),
        _ => false,
    }
}
