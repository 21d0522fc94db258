//! Every knob of the client, with its default and why.

use std::net::IpAddr;
use std::time::Duration;

/// How the client chooses, retries and abandons endpoints. `Default` is safe for production:
/// no hedging, retries bounded by a budget, every call bounded by a deadline.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The region this client runs in. Endpoints in it are tried first; the others by
    /// measured latency. `None`: every endpoint by latency.
    pub region: Option<String>,
    /// Learn the cluster's members (and their regions and health) from `GetTopology`, so a
    /// client given one address finds the rest, and refresh them every
    /// `discovery_interval`; and follow a leader hint to a node it was not given. Default on.
    /// Off, the client talks only to the endpoints it was given.
    pub discover: bool,
    pub discovery_interval: Duration,
    /// Deadline of a whole call, retries included (default 15 s).
    pub call_timeout: Duration,
    /// Deadline of one attempt at one endpoint (default 5 s): a node that hangs (a partition
    /// that blackholes its traffic) is abandoned for the next after this long.
    pub attempt_timeout: Duration,
    /// TCP connect timeout (default 2 s).
    pub connect_timeout: Duration,
    /// Backoff between attempts: full jitter, a random wait in
    /// `0..min(backoff_max, backoff_base × 2^retry)` (defaults 20 ms and 1 s).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Circuit breaker: after `breaker_failures` consecutive failures (default 3) an endpoint
    /// is skipped for `breaker_cooldown` (default 2 s, doubling while probes fail, at most
    /// 30 s); then one probe call decides whether it closes again.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Retry budget: retries within the last 10 s may not exceed `retry_budget_ratio` of the
    /// calls in that window (default 0.2) plus `retry_budget_min_per_sec` per second (default
    /// 10). Keeps a failing cluster from receiving a multiple of its normal load.
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_sec: u32,
    /// Hedged reads: when set, a read-only call that has not answered after this long is also
    /// sent to the next endpoint, and the first answer wins. Off by default (it adds load).
    pub hedge_after: Option<Duration>,
    /// Local address outgoing connections are made from (multi-homed hosts; the WAN relay
    /// tells regions apart by it).
    pub local_address: Option<IpAddr>,
    /// Seed of the jitter RNG; `None` seeds from the OS (the simulator passes one).
    pub rng_seed: Option<u64>,
    /// Largest message sent or accepted (default 4 MiB).
    pub max_message_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            region: None,
            discover: true,
            discovery_interval: Duration::from_secs(30),
            call_timeout: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(2),
            retry_budget_ratio: 0.2,
            retry_budget_min_per_sec: 10,
            hedge_after: None,
            local_address: None,
            rng_seed: None,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What may be done again if an attempt's outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Changes nothing on the server (DescribeKey, Decrypt, Encrypt, Sign, ...): retried
    /// anywhere and, with `hedge_after`, hedged.
    Read,
    /// A write that carries an idempotency token, or is idempotent by nature: retried
    /// anywhere, never hedged.
    Idempotent,
    /// A write without a token: retried only when it certainly never reached a node (the
    /// connection could not be made), since it may otherwise have been applied.
    Unsafe,
}
