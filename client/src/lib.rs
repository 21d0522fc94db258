//! The keyquorum client library: region-aware failover over a cluster's nodes.
//!
//! - **Endpoints** are given as `host:port` or `region=host:port`, and (by default) discovered
//!   from any node's `GetTopology`, with their regions and health, and refreshed in the
//!   background.
//! - **Choice:** endpoints in the client's own region first, then the others by measured
//!   latency (an exponentially weighted average of answered calls); a leader hint in an error
//!   moves the leader to the front for the next attempt.
//! - **Health:** a circuit breaker per endpoint (open after consecutive failures, one probe
//!   after a jittered cooldown).
//! - **Retries:** within one deadline per call, with exponential backoff and full jitter,
//!   bounded by a client-wide retry budget; a write without an idempotency token
//!   ([`CallKind::Unsafe`]) is retried only when it certainly never took effect (never
//!   reached a node, or was refused by an overloaded one). A node's retry-after hint
//!   (`RESOURCE_EXHAUSTED` with [`proto::RETRY_AFTER_MS`]) is waited for at least.
//! - **Hedged reads** (off by default): a slow read also goes to the next endpoint.
//!
//! Every knob is in [`ClientOptions`]. Time is read through `tokio::time` and randomness comes
//! from a seedable RNG, so the simulator runs this code unchanged.

mod api;
mod error;
mod health;
mod options;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::v1::admin_client::AdminClient;
use proto::v1::kms_client::KmsClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

pub use crate::api::AuditLog;
pub use crate::error::{Error, ErrorKind, SetupError};
use crate::health::{Admission, Breaker, Latency, RetryBudget};
pub use crate::options::{CallKind, ClientOptions};
pub use proto::v1 as pb;
pub use proto::LEADER_HINT;

/// Makes a channel to an address (the simulator makes them over its own network).
pub type Connect = Arc<dyn Fn(&str) -> Result<Channel, SetupError> + Send + Sync>;

/// A client over a cluster's nodes. Cheap to share behind an `Arc`; all state is internal.
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.endpoints()).finish()
    }
}

struct Shared {
    options: ClientOptions,
    connect: Connect,
    state: Mutex<State>,
}

struct State {
    endpoints: Vec<EndpointState>,
    budget: RetryBudget,
    rng: ChaCha8Rng,
    /// When the topology was last learned, and whether a refresh is running.
    discovered_at: Option<Instant>,
    discovering: bool,
}

struct EndpointState {
    addr: String,
    channel: Channel,
    region: Option<String>,
    breaker: Breaker,
    latency: Latency,
    /// The topology said the leader cannot reach it: tried after the others.
    suspect: bool,
}

/// One endpoint as the caller gives it: `host:port`, a URL, or `region=host:port`.
fn parse_seed(s: &str) -> (Option<String>, String) {
    match s.split_once('=') {
        Some((region, addr)) if !region.is_empty() && !region.contains([':', '/']) => {
            (Some(region.trim().to_string()), addr.trim().to_string())
        }
        _ => (None, s.trim().to_string()),
    }
}

impl Client {
    /// `endpoints`: `host:port`, URLs (`https://127.0.0.1:7401`) or `region=host:port`. With
    /// `tls` (the cluster CA and this client's certificate) every connection is mTLS over
    /// `https`; without, plaintext `http` for clusters that run with `tls.insecure_plaintext`.
    /// Connections are made lazily. Default options.
    pub fn new<S: AsRef<str>>(endpoints: &[S], tls: Option<ClientTlsConfig>) -> Result<Self, SetupError> {
        Self::with_options(endpoints, tls, ClientOptions::default())
    }

    pub fn with_options<S: AsRef<str>>(
        endpoints: &[S],
        tls: Option<ClientTlsConfig>,
        options: ClientOptions,
    ) -> Result<Self, SetupError> {
        let (connect_timeout, local) = (options.connect_timeout, options.local_address);
        let connect: Connect = Arc::new(move |addr: &str| {
            Ok(endpoint(addr, tls.as_ref())?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .local_address(local)
                .connect_lazy())
        });
        let seeds: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        Self::with_connector(&seeds, options, connect)
    }

    /// A client whose channels `connect` makes.
    pub fn with_connector<S: AsRef<str>>(
        endpoints: &[S],
        options: ClientOptions,
        connect: Connect,
    ) -> Result<Self, SetupError> {
        let mut list = Vec::new();
        for e in endpoints {
            let e = e.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            let (region, addr) = parse_seed(e);
            if list.iter().any(|x: &EndpointState| x.addr == addr) {
                continue;
            }
            list.push(EndpointState::new(addr.clone(), connect(&addr)?, region));
        }
        if list.is_empty() {
            return Err(SetupError::NoEndpoints);
        }
        let rng = match options.rng_seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_entropy(),
        };
        let now = Instant::now();
        let state = State {
            endpoints: list,
            budget: RetryBudget::new(options.retry_budget_ratio, options.retry_budget_min_per_sec, now),
            rng,
            discovered_at: None,
            discovering: false,
        };
        Ok(Self { shared: Arc::new(Shared { options, connect, state: Mutex::new(state) }) })
    }

    /// The endpoints known now (given and discovered), in the order a call would try them.
    pub fn endpoints(&self) -> Vec<String> {
        let state = self.shared.lock();
        state.order(&self.shared.options, Instant::now()).into_iter().map(|i| state.endpoints[i].addr.clone()).collect()
    }

    /// The region of each known endpoint, if known.
    pub fn regions(&self) -> Vec<(String, Option<String>)> {
        self.shared.lock().endpoints.iter().map(|e| (e.addr.clone(), e.region.clone())).collect()
    }

    /// Learns the cluster's members now (otherwise done in the background on first use and
    /// every `discovery_interval`).
    pub async fn discover(&self) -> Result<(), Status> {
        Shared::discover(&self.shared).await
    }

    /// A client of this client's endpoint `index` (in the order given) alone, with the same
    /// options but no discovery: for calls that must reach one node (its own status, `Init`).
    pub fn only(&self, index: usize) -> Result<Client, SetupError> {
        let addr = {
            let state = self.shared.lock();
            state.endpoints.get(index).map(|e| e.addr.clone())
        };
        let addr = addr.ok_or_else(|| SetupError::InvalidEndpoint(format!("#{index}"), "no such endpoint".into()))?;
        let options = ClientOptions { discover: false, ..self.shared.options.clone() };
        Self::with_connector(&[addr], options, self.shared.connect.clone())
    }

    /// The request id of a call about to be made: the one [`with_request_id`] set, else a new
    /// random one.
    fn request_id(&self) -> Tag {
        let given =
            REQUEST_ID.try_with(|id| tonic::metadata::AsciiMetadataValue::try_from(id.as_str()).ok()).ok().flatten();
        Tag(given.unwrap_or_else(|| {
            let bytes: [u8; 16] = self.shared.lock().rng.gen();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            tonic::metadata::AsciiMetadataValue::try_from(hex).unwrap_or_else(|_| unreachable!("hex digits are ASCII"))
        }))
    }

    /// A KMS call, retried as `kind` allows (the typed methods in `api.rs` call this). Every
    /// attempt carries the same request id.
    async fn kms_call<T, F, Fut>(&self, kind: CallKind, call: F) -> Result<T, Error>
    where
        F: Fn(KmsClient<Tagged>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let max = self.shared.options.max_message_bytes;
        let tag = self.request_id();
        self.shared
            .call(kind, |ch| {
                call(
                    KmsClient::with_interceptor(ch, tag.clone())
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max),
                )
            })
            .await
    }

    /// An Admin call, retried as `kind` allows.
    async fn admin_call<T, F, Fut>(&self, kind: CallKind, call: F) -> Result<T, Error>
    where
        F: Fn(AdminClient<Tagged>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let tag = self.request_id();
        self.shared.call(kind, |ch| call(AdminClient::with_interceptor(ch, tag.clone()))).await
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `f` so that every call it makes carries `id` as its request id (the `x-request-id`
/// header; printable ASCII, at most 128 characters, else the client makes one up). Each node
/// that handles the call — the one asked and any it forwards to — writes it into its audit
/// record, so a caller can find the records of its own calls (`keyquorum audit query`). Calls
/// made outside get a random id each.
pub async fn with_request_id<F: Future>(id: impl Into<String>, f: F) -> F::Output {
    REQUEST_ID.scope(id.into(), f).await
}

/// The name of the request-id header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Stamps a call's request id on each attempt.
#[derive(Debug, Clone)]
pub struct Tag(tonic::metadata::AsciiMetadataValue);

impl tonic::service::Interceptor for Tag {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert(REQUEST_ID_HEADER, self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry a request id.
pub type Tagged = tonic::service::interceptor::InterceptedService<Channel, Tag>;

impl EndpointState {
    fn new(addr: String, channel: Channel, region: Option<String>) -> Self {
        Self { addr, channel, region, breaker: Breaker::default(), latency: Latency::default(), suspect: false }
    }
}

impl State {
    /// Indices in the order to try them: closed breakers first, then not suspect, then own
    /// region, then lowest latency (unmeasured after measured), then as listed.
    fn order(&self, options: &ClientOptions, now: Instant) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.endpoints.len()).collect();
        idx.sort_by_key(|&i| {
            let e = &self.endpoints[i];
            let foreign = match (&options.region, &e.region) {
                (Some(mine), Some(theirs)) => mine != theirs,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let latency = e.latency.estimate().unwrap_or(Duration::MAX);
            (e.breaker.is_open(now), e.suspect, foreign, latency, i)
        });
        idx
    }

    fn index_of(&self, addr: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e.addr == addr)
    }
}

/// How one attempt ended.
enum Outcome<T> {
    Ok(T),
    /// Retrying elsewhere may succeed; `sent` says whether the request may have reached a node.
    Retry {
        status: Status,
        sent: bool,
    },
    Fail(Status),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call<T, F, Fut>(self: &Arc<Self>, kind: CallKind, call: F) -> Result<T, Error>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.maybe_discover();
        let o = &self.options;
        let deadline = Instant::now() + o.call_timeout;
        self.lock().budget.call(Instant::now());
        let mut tried: Vec<usize> = Vec::new();
        let mut hint: Option<String> = None;
        let mut last = Status::unavailable("no endpoint answered");
        // Whether any attempt may have reached a node.
        let mut sent_any = false;
        let fail = |status: Status, sent: bool| Error::new(kind, status, sent);
        for retry in 0u32.. {
            if retry > 0 {
                let wait = {
                    let mut state = self.lock();
                    if !state.budget.try_retry(Instant::now()) {
                        let why = annotated(&last, "the client's retry budget is spent; not retrying");
                        return Err(fail(why, sent_any));
                    }
                    let cap = o.backoff_max.min(o.backoff_base.saturating_mul(1 << (retry - 1).min(16)));
                    let jittered = Duration::from_micros(state.rng.gen_range(0..=cap.as_micros() as u64));
                    // An overloaded node said how long to wait: at least that.
                    jittered.max(proto::retry_after(&last).unwrap_or_default())
                };
                if Instant::now() + wait >= deadline {
                    return Err(fail(deadline_status(&last), sent_any));
                }
                tokio::time::sleep(wait).await;
            }
            let Some((first, second)) = self.pick(&mut tried, hint.take(), kind, deadline).await else {
                return Err(fail(deadline_status(&last), sent_any));
            };
            let outcome = match second {
                Some(second) => self.hedged(first, second, &call, deadline).await,
                None => self.attempt(first, &call, deadline).await,
            };
            match outcome {
                Outcome::Ok(t) => return Ok(t),
                Outcome::Fail(s) => return Err(fail(s, true)),
                Outcome::Retry { status, sent } => {
                    sent_any |= sent;
                    if sent && kind == CallKind::Unsafe {
                        let why = format!(
                            "{} (the write may or may not have been applied: it carries no idempotency token, so it \
                             is not retried)",
                            status.message()
                        );
                        return Err(fail(Status::new(status.code(), why), true));
                    }
                    hint = status.metadata().get(LEADER_HINT).and_then(|v| v.to_str().ok()).map(str::to_string);
                    last = status;
                }
            }
            if Instant::now() >= deadline {
                return Err(fail(deadline_status(&last), sent_any));
            }
        }
        Err(fail(last, sent_any))
    }

    /// The endpoint(s) for the next attempt: the hinted leader if known, else the first in
    /// order not tried in this round whose breaker admits a call; a second one to hedge to
    /// for reads when hedging is on. When every breaker is open, waits for the first to
    /// cool down (within the deadline).
    async fn pick(
        self: &Arc<Self>,
        tried: &mut Vec<usize>,
        hint: Option<String>,
        kind: CallKind,
        deadline: Instant,
    ) -> Option<(usize, Option<usize>)> {
        // When every breaker is open, the one that reopens first is probed anyway after at
        // most `backoff_max`: breakers choose among endpoints, they must not turn a blip at
        // the only reachable node into an outage of the whole deadline.
        let mut forced: Option<usize> = None;
        loop {
            let now = Instant::now();
            let wake = {
                let mut state = self.lock();
                if let Some(j) = forced.take().filter(|j| *j < state.endpoints.len()) {
                    state.endpoints[j].breaker.force_probe();
                    tried.push(j);
                    return Some((j, None));
                }
                // A hinted leader the client does not know is added only when it may learn
                // endpoints (`discover`); otherwise it keeps to the endpoints it was given.
                if let Some(h) = hint.as_deref().filter(|_| self.options.discover) {
                    if state.index_of(h).is_none() {
                        if let Ok(ch) = (self.connect)(h) {
                            state.endpoints.push(EndpointState::new(h.to_string(), ch, None));
                        }
                    }
                }
                let mut order = state.order(&self.options, now);
                if let Some(i) = hint.as_deref().and_then(|h| state.index_of(h)) {
                    order.retain(|&j| j != i);
                    order.insert(0, i);
                }
                if order.iter().all(|i| tried.contains(i)) {
                    tried.clear();
                }
                let mut chosen = None;
                for &i in &order {
                    if tried.contains(&i) {
                        continue;
                    }
                    if state.endpoints[i].breaker.admit(now) != Admission::Open {
                        chosen = Some(i);
                        break;
                    }
                }
                match chosen {
                    Some(i) => {
                        tried.push(i);
                        let second = (kind == CallKind::Read && self.options.hedge_after.is_some())
                            .then(|| {
                                order.iter().copied().find(|&j| {
                                    j != i && !tried.contains(&j) && !state.endpoints[j].breaker.is_open(now)
                                })
                            })
                            .flatten();
                        if let Some(j) = second {
                            tried.push(j);
                        }
                        return Some((i, second));
                    }
                    None => {
                        // Every untried endpoint is open: a new round, with the one that
                        // cools down first, when it does or after `backoff_max`.
                        tried.clear();
                        let first = state
                            .endpoints
                            .iter()
                            .enumerate()
                            .filter_map(|(j, e)| e.breaker.reopens_at().map(|t| (t, j)))
                            .min();
                        forced = first.map(|(_, j)| j);
                        first.map(|(t, _)| t.min(now + self.options.backoff_max))
                    }
                }
            };
            let wake = wake.unwrap_or(now + Duration::from_millis(10)).max(now + Duration::from_millis(1));
            if wake >= deadline {
                return None;
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// One attempt at endpoint `i`.
    async fn attempt<T, F, Fut>(&self, i: usize, call: &F, deadline: Instant) -> Outcome<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (channel, addr) = {
            let state = self.lock();
            (state.endpoints[i].channel.clone(), state.endpoints[i].addr.clone())
        };
        let started = Instant::now();
        let budget = self.options.attempt_timeout.min(deadline.saturating_duration_since(started));
        let result = tokio::time::timeout(budget, call(channel)).await;
        let now = Instant::now();
        let mut state = self.lock();
        let jitter = state.rng.gen::<f64>();
        let o = &self.options;
        let e = &mut state.endpoints[i];
        match result {
            Ok(Ok(r)) => {
                e.breaker.success();
                e.latency.observe(now - started);
                Outcome::Ok(r.into_inner())
            }
            Ok(Err(s)) if retryable(&s) => {
                e.breaker.failure(now, o.breaker_failures, o.breaker_cooldown, jitter);
                let sent = !never_sent(&s);
                Outcome::Retry {
                    status: Status::with_metadata(s.code(), format!("{addr}: {}", s.message()), s.metadata().clone()),
                    sent,
                }
            }
            Ok(Err(s)) => {
                // The node answered: it is healthy, whatever it said.
                e.breaker.success();
                Outcome::Fail(s)
            }
            Err(_) => {
                e.breaker.failure(now, o.breaker_failures, o.breaker_cooldown, jitter);
                Outcome::Retry {
                    status: Status::deadline_exceeded(format!("{addr}: no answer within {} ms", budget.as_millis())),
                    sent: true,
                }
            }
        }
    }

    /// Endpoint `a`, and `b` too if `a` has not answered after `hedge_after`; the first
    /// success wins, and a failure waits for the other.
    async fn hedged<T, F, Fut>(&self, a: usize, b: usize, call: &F, deadline: Instant) -> Outcome<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let after = self.options.hedge_after.unwrap_or(Duration::MAX);
        let first = self.attempt(a, call, deadline);
        tokio::pin!(first);
        tokio::select! {
            out = &mut first => match out {
                Outcome::Retry { .. } => self.attempt(b, call, deadline).await,
                other => {
                    self.release(b);
                    other
                }
            },
            _ = tokio::time::sleep(after) => {
                let second = self.attempt(b, call, deadline);
                tokio::pin!(second);
                tokio::select! {
                    out = &mut first => match out {
                        Outcome::Retry { .. } => second.await,
                        other => other,
                    },
                    out = &mut second => match out {
                        Outcome::Retry { .. } => first.await,
                        other => other,
                    },
                }
            }
        }
    }

    /// `b` was picked (maybe as a breaker's probe) but not used.
    fn release(&self, b: usize) {
        if let Some(e) = self.lock().endpoints.get_mut(b) {
            e.breaker.release_probe();
        }
    }

    /// Starts a background topology refresh when it is due.
    fn maybe_discover(self: &Arc<Self>) {
        if !self.options.discover {
            return;
        }
        {
            let mut state = self.lock();
            let due = state.discovered_at.is_none_or(|t| t.elapsed() >= self.options.discovery_interval);
            if !due || state.discovering {
                return;
            }
            state.discovering = true;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let _ = Shared::discover(&shared).await;
        });
    }

    /// Asks the endpoints in order for the topology and merges the first answer.
    async fn discover(self: &Arc<Self>) -> Result<(), Status> {
        let order: Vec<(String, Channel)> = {
            let state = self.lock();
            state
                .order(&self.options, Instant::now())
                .into_iter()
                .map(|i| {
                    let e = &state.endpoints[i];
                    (e.addr.clone(), e.channel.clone())
                })
                .collect()
        };
        let mut last = Status::unavailable("no endpoint answered GetTopology");
        for (addr, channel) in order {
            let mut request = tonic::Request::new(pb::GetTopologyRequest {});
            request.set_timeout(self.options.attempt_timeout);
            let started = Instant::now();
            let mut kms = KmsClient::new(channel);
            match tokio::time::timeout(self.options.attempt_timeout, kms.get_topology(request)).await {
                Ok(Ok(r)) => {
                    let elapsed = started.elapsed();
                    self.merge(&addr, elapsed, r.into_inner());
                    return Ok(());
                }
                Ok(Err(s)) => last = s,
                Err(_) => last = Status::deadline_exceeded(format!("{addr}: no topology within the attempt timeout")),
            }
        }
        let mut state = self.lock();
        state.discovering = false;
        state.discovered_at = Some(Instant::now());
        Err(last)
    }

    fn merge(&self, answered_by: &str, elapsed: Duration, t: pb::TopologyResponse) {
        let mut state = self.lock();
        state.discovering = false;
        state.discovered_at = Some(Instant::now());
        if let Some(i) = state.index_of(answered_by) {
            state.endpoints[i].latency.observe(elapsed);
        }
        for m in t.members {
            if m.addr.is_empty() {
                continue;
            }
            let suspect = m.health == pb::Health::Unreachable as i32;
            let region = (!m.region.is_empty()).then(|| m.region.clone());
            match state.index_of(&m.addr) {
                Some(i) => {
                    let e = &mut state.endpoints[i];
                    e.suspect = suspect;
                    if region.is_some() {
                        e.region = region;
                    }
                }
                None => {
                    if let Ok(ch) = (self.connect)(&m.addr) {
                        let mut e = EndpointState::new(m.addr.clone(), ch, region);
                        e.suspect = suspect;
                        state.endpoints.push(e);
                    }
                }
            }
        }
    }
}

fn deadline_status(last: &Status) -> Status {
    annotated(last, "the call's deadline passed")
}

/// `last` with a note after its message, its metadata (the leader hint) kept.
fn annotated(last: &Status, note: &str) -> Status {
    Status::with_metadata(last.code(), format!("{} ({note})", last.message()), last.metadata().clone())
}

/// The endpoint for `e` (`host:port`, or a URL whose scheme matches `tls`): `https` with the
/// TLS config (the cluster CA and our certificate), `http` without. Nodes dial each other
/// through this too.
pub fn endpoint(e: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, SetupError> {
    let invalid = |why: &str| SetupError::InvalidEndpoint(e.to_string(), why.to_string());
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

/// mTLS for a client: trust the cluster CA (`ca_pem`), present `cert_pem` with `key_pem`.
pub fn tls_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).identity(Identity::from_pem(cert_pem, key_pem))
}

/// [`tls_config`] from the PEM files `keyquorum cert` writes.
pub fn tls_config_from_files(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<ClientTlsConfig, SetupError> {
    let read = |path: &std::path::Path, label: &str| {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SetupError::Credentials(format!("cannot read {}: {e}", path.display())))?;
        if !text.lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(label)) {
            return Err(SetupError::Credentials(format!("{} holds no PEM {label} block", path.display())));
        }
        Ok(zeroize::Zeroizing::new(text))
    };
    Ok(tls_config(&read(ca, "CERTIFICATE")?, &read(cert, "CERTIFICATE")?, &read(key, "PRIVATE KEY")?))
}

/// Whether another endpoint may succeed where this one failed.
fn retryable(s: &Status) -> bool {
    proto::retry_elsewhere(s)
}

/// Whether the request certainly never took effect: the connection was never made, or the
/// node refused it before any work because it was at its limit of calls in flight.
fn never_sent(s: &Status) -> bool {
    if proto::retry_after(s).is_some() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_may_name_their_region() {
        assert_eq!(parse_seed("region-a=127.0.0.1:7401"), (Some("region-a".into()), "127.0.0.1:7401".into()));
        assert_eq!(parse_seed("127.0.0.1:7401"), (None, "127.0.0.1:7401".into()));
        assert_eq!(parse_seed("https://h:1/?a=b"), (None, "https://h:1/?a=b".into()));
    }

    #[tokio::test]
    async fn own_region_first_then_latency() {
        let options = ClientOptions { region: Some("b".into()), discover: false, ..ClientOptions::default() };
        let c = Client::with_options(&["a=127.0.0.1:1", "c=127.0.0.1:3", "b=127.0.0.1:2"], None, options).unwrap();
        assert_eq!(c.endpoints(), ["127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:3"]);
        {
            let mut s = c.shared.lock();
            s.endpoints[1].latency.observe(Duration::from_millis(5));
            s.endpoints[0].latency.observe(Duration::from_millis(50));
        }
        assert_eq!(c.endpoints(), ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]);
        // An open breaker sends its endpoint to the back.
        {
            let mut s = c.shared.lock();
            s.endpoints[2].breaker.failure(Instant::now(), 1, Duration::from_secs(60), 1.0);
        }
        assert_eq!(c.endpoints(), ["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_known_unsent() {
        // Nothing listens on port 1 of loopback.
        let options = ClientOptions {
            discover: false,
            call_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(1),
            ..ClientOptions::default()
        };
        let c = Client::with_options(&["127.0.0.1:1"], None, options).unwrap();
        // CreateAlias carries no token: retried only while it certainly was never sent.
        let req = pb::CreateAliasRequest { alias: "a".into(), key: "k".into() };
        let err = c.create_alias(req).await.unwrap_err();
        // Retried (never sent) until the breaker opened and the deadline passed.
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Retry, "nothing was sent, so nothing happened: {err:?}");
        assert!(err.message().contains("127.0.0.1:1"), "{err:?}");
        assert!(err.message().contains("deadline passed"), "retried until the deadline: {err:?}");
        assert!(!err.message().contains("may or may not"), "a refused connection sent nothing: {err:?}");
    }
}
