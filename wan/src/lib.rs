//! A userspace WAN between regions on one machine: a TCP relay that puts latency, jitter,
//! loss and partitions on the links between regions (this machine has no `tc netem`).
//!
//! Every node gets a *front* address where the relay listens and forwards to the node's real
//! (*backend*) address. The relay tells regions apart by the **source address** of a
//! connection: a region owns a loopback /24 (`127.0.1.0/24` for the first region, ...), and
//! nodes and clients of that region dial from an address in it (`dial_from` in the node
//! config, `--source-ip` in the CLI). A connection from an address in no region has no
//! latency and is never partitioned.
//!
//! Semantics, chosen to look like a real network to TCP endpoints:
//! - **Latency** is one way, per direction: a round trip between two regions at 50 ms pays
//!   100 ms. Each chunk read is delivered `latency + U(0, jitter)` later, never before the
//!   chunk ahead of it (a stream stays ordered).
//! - **Loss** cannot drop bytes from a TCP stream; what an application sees of a lost segment
//!   is its retransmission, so a lost chunk is delivered one retransmission timeout later
//!   (`max(200 ms, 2 × latency)`, Linux's minimum RTO being 200 ms).
//! - **Partitions blackhole**, they do not reset: data waits in the relay (as unacknowledged
//!   segments would wait in the sender) and flows again on heal; a connection attempt across
//!   a partition hangs until the caller's connect timeout. A connection is set up only while
//!   both directions are open (the handshake needs both). A node that dies still resets its
//!   connections: the relay passes the backend's close on.
//!
//! Time is read only through `tokio::time`; randomness comes from the seed given to
//! [`Relay::new`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One direction of the link between two regions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkSpec {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for each chunk.
    pub jitter: Duration,
    /// Chance (0..=1) that a chunk is "lost" and arrives one retransmission timeout late.
    pub loss: f64,
}

impl LinkSpec {
    pub fn latency(latency: Duration) -> Self {
        Self { latency, ..Self::default() }
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> Duration {
        let mut d = self.latency;
        if !self.jitter.is_zero() {
            d += Duration::from_micros(rng.gen_range(0..=self.jitter.as_micros() as u64));
        }
        if self.loss > 0.0 && rng.gen_bool(self.loss.clamp(0.0, 1.0)) {
            d += (2 * self.latency).max(Duration::from_millis(200));
        }
        d
    }
}

/// The relay: regions, links and partitions, shared by every front address it serves.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Bumped on every change of links or partitions; connections waiting on a blocked
    /// direction re-check when it moves.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    /// The first three octets of a loopback /24 → its region.
    nets: BTreeMap<[u8; 3], String>,
    /// Between two different regions unless `links` says otherwise.
    default_link: LinkSpec,
    /// Directed overrides, (from, to).
    links: BTreeMap<(String, String), LinkSpec>,
    /// Directed blocks, (from, to).
    blocked: BTreeSet<(String, String)>,
    rng: ChaCha8Rng,
    connections: u64,
}

/// Errors from configuring the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WanError {
    #[error("{0} is not an IPv4 loopback address (127.0.0.0/8)")]
    NotLoopback(IpAddr),
    #[error("{net} already belongs to region {region}")]
    NetTaken { net: Ipv4Addr, region: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

impl Relay {
    /// A relay with no regions and no latency; `seed` drives jitter and loss.
    pub fn new(seed: u64) -> Self {
        let state = State {
            nets: BTreeMap::new(),
            default_link: LinkSpec::default(),
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            connections: 0,
        };
        Self { inner: Arc::new(Inner { state: Mutex::new(state), changed: watch::channel(0).0 }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state());
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// `region` owns the loopback /24 that `net` is in (e.g. `127.0.1.0`).
    pub fn add_region(&self, region: &str, net: Ipv4Addr) -> Result<(), WanError> {
        if !net.is_loopback() {
            return Err(WanError::NotLoopback(IpAddr::V4(net)));
        }
        let [a, b, c, _] = net.octets();
        let mut state = self.state();
        match state.nets.get(&[a, b, c]) {
            Some(r) if r != region => Err(WanError::NetTaken { net, region: r.clone() }),
            _ => {
                state.nets.insert([a, b, c], region.to_string());
                Ok(())
            }
        }
    }

    /// The region whose /24 holds `ip`, if any.
    pub fn region_of(&self, ip: IpAddr) -> Option<String> {
        let IpAddr::V4(v4) = ip else { return None };
        let [a, b, c, _] = v4.octets();
        self.state().nets.get(&[a, b, c]).cloned()
    }

    /// Every link between two different regions (both directions) gets `spec`, except those
    /// set with [`Relay::set_link`].
    pub fn set_default_link(&self, spec: LinkSpec) {
        self.change(|s| s.default_link = spec);
    }

    /// The link from `from` to `to` (one direction) gets `spec`.
    pub fn set_link(&self, from: &str, to: &str, spec: LinkSpec) {
        self.change(|s| {
            s.links.insert((from.to_string(), to.to_string()), spec);
        });
    }

    /// Nothing flows from `from` to `to` until [`Relay::unblock`] or [`Relay::heal`].
    pub fn block(&self, from: &str, to: &str) {
        self.change(|s| {
            s.blocked.insert((from.to_string(), to.to_string()));
        });
    }

    pub fn unblock(&self, from: &str, to: &str) {
        self.change(|s| {
            s.blocked.remove(&(from.to_string(), to.to_string()));
        });
    }

    /// Cuts `region` off from every other region, both ways.
    pub fn isolate(&self, region: &str) {
        self.change(|s| {
            let others: Vec<String> = s.nets.values().filter(|r| *r != region).cloned().collect();
            for o in others {
                s.blocked.insert((region.to_string(), o.clone()));
                s.blocked.insert((o, region.to_string()));
            }
        });
    }

    /// Splits the regions into `groups`: nothing flows between two groups. A region in no
    /// group stays connected to all.
    pub fn partition(&self, groups: &[&[&str]]) {
        self.change(|s| {
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    for x in a.iter() {
                        for y in b.iter() {
                            s.blocked.insert((x.to_string(), y.to_string()));
                        }
                    }
                }
            }
        });
    }

    /// Lifts every block; latency stays as set.
    pub fn heal(&self) {
        self.change(|s| s.blocked.clear());
    }

    /// Connections accepted since the relay started.
    pub fn connections(&self) -> u64 {
        self.state().connections
    }

    fn is_blocked(&self, from: Option<&str>, to: &str) -> bool {
        let Some(from) = from else { return false };
        from != to && self.state().blocked.contains(&(from.to_string(), to.to_string()))
    }

    /// The delay of the next chunk from `from` to `to`.
    fn delay(&self, from: Option<&str>, to: &str) -> Duration {
        let Some(from) = from else { return Duration::ZERO };
        if from == to {
            return Duration::ZERO;
        }
        let mut s = self.state();
        let spec = s.links.get(&(from.to_string(), to.to_string())).copied().unwrap_or(s.default_link);
        spec.delay(&mut s.rng)
    }

    /// Waits until `from → to` (and, with `both`, `to → from`) is open.
    async fn wait_open(&self, from: Option<&str>, to: &str, both: bool) {
        let mut changed = self.inner.changed.subscribe();
        loop {
            let blocked = self.is_blocked(from, to) || (both && from.is_some_and(|f| self.is_blocked(Some(to), f)));
            if !blocked {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Listens on `front` and relays every connection to `backend`, a node of `region`.
    /// The relay stops serving `front` (and cuts its connections) when the returned
    /// [`Front`] is dropped.
    pub async fn listen(&self, front: SocketAddr, backend: SocketAddr, region: &str) -> Result<Front, WanError> {
        let listener = TcpListener::bind(front).await.map_err(|source| WanError::Listen { addr: front, source })?;
        let relay = self.clone();
        let region = region.to_string();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            relay.state().connections += 1;
                            conns.spawn(relay.clone().serve(stream, peer, backend, region.clone()));
                        }
                        Err(e) => {
                            tracing::warn!(%front, "relay accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Front { addr: front, task })
    }

    async fn serve(self, inbound: TcpStream, peer: SocketAddr, backend: SocketAddr, dst: String) {
        let src = self.region_of(peer.ip());
        let src = src.as_deref();
        // The handshake needs both directions; a blackholed SYN just hangs.
        self.wait_open(src, &dst, true).await;
        tokio::time::sleep(self.delay(src, &dst)).await;
        let outbound = match TcpStream::connect(backend).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%backend, "relay cannot reach the node: {e}");
                return;
            }
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        let forward = self.pipe(ri, wo, src, &dst);
        let back = self.pipe(ro, wi, Some(&dst), src.unwrap_or(&dst));
        // An error in one direction ends both; an orderly close waits for the other side.
        let _ = tokio::try_join!(forward, back);
    }

    /// Copies `r` to `w`, each chunk delayed by the `from → to` link and held while it is blocked.
    async fn pipe(&self, mut r: OwnedReadHalf, mut w: OwnedWriteHalf, from: Option<&str>, to: &str) -> io::Result<()> {
        let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
        let read = async move {
            let mut last = Instant::now();
            loop {
                let mut buf = vec![0u8; 64 * 1024];
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, io::Error>(());
                }
                buf.truncate(n);
                last = last.max(Instant::now() + self.delay(from, to));
                if tx.send((last, buf)).await.is_err() {
                    return Ok(());
                }
            }
        };
        let write = async {
            while let Some((at, buf)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                self.wait_open(from, to, false).await;
                w.write_all(&buf).await?;
            }
            w.shutdown().await
        };
        tokio::try_join!(read, write).map(|_| ())
    }
}

/// A front address the relay serves; dropping it stops the listener and its connections.
#[derive(Debug)]
pub struct Front {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The conventional layout on one machine: region `i` (0-based) owns `127.0.(i+1).0/24`.
pub fn region_net(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (index + 1).min(254) as u8, 0)
}

/// Address `host` (1..=254) in region `index`'s /24.
pub fn region_ip(index: usize, host: u8) -> Ipv4Addr {
    let [a, b, c, _] = region_net(index).octets();
    Ipv4Addr::new(a, b, c, host)
}
