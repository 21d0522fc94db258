//! Per-endpoint health: a circuit breaker and a latency estimate; and the client-wide retry
//! budget. Pure state machines over `tokio::time::Instant`, tested without a network.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Longest an open breaker waits before its next probe.
const MAX_COOLDOWN: Duration = Duration::from_secs(30);

/// One endpoint's circuit breaker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Breaker {
    consecutive_failures: u32,
    /// Open until then: calls skip the endpoint.
    open_until: Option<Instant>,
    /// Cooldown of the next opening (doubles while probes fail).
    cooldown: Option<Duration>,
    /// A probe is in flight after the cooldown: no other call uses the endpoint meanwhile.
    probing: bool,
}

/// Whether a call may use an endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Closed,
    /// The cooldown is over: this call is the probe.
    Probe,
    Open,
}

impl Breaker {
    /// Admits a call (and, half-open, marks it as the probe).
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        match self.open_until {
            None => Admission::Closed,
            Some(t) if now < t || self.probing => Admission::Open,
            Some(_) => {
                self.probing = true;
                Admission::Probe
            }
        }
    }

    /// Whether the breaker would let a call through now (without claiming the probe).
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|t| now < t || self.probing)
    }

    /// Makes the next call the probe now, cooled down or not (every endpoint is open).
    pub(crate) fn force_probe(&mut self) {
        if self.open_until.is_some() {
            self.probing = true;
        }
    }

    /// When an open breaker admits its next probe.
    pub(crate) fn reopens_at(&self) -> Option<Instant> {
        self.open_until.filter(|_| !self.probing)
    }

    pub(crate) fn success(&mut self) {
        *self = Self::default();
    }

    /// A failed call; `jitter` (0..=1) spreads reopenings so clients do not probe in step.
    pub(crate) fn failure(&mut self, now: Instant, threshold: u32, base: Duration, jitter: f64) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let was_probe = std::mem::take(&mut self.probing);
        if was_probe || self.consecutive_failures >= threshold.max(1) {
            let cooldown = match (was_probe, self.cooldown) {
                (true, Some(c)) => (c * 2).min(MAX_COOLDOWN),
                _ => base,
            };
            self.cooldown = Some(cooldown);
            self.open_until = Some(now + cooldown.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0)));
        }
    }

    /// A probe that ended without an answer either way (the call was abandoned).
    pub(crate) fn release_probe(&mut self) {
        self.probing = false;
    }
}

/// A latency estimate: exponentially weighted moving average of successful attempts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Latency {
    ewma_us: Option<f64>,
}

impl Latency {
    const ALPHA: f64 = 0.3;

    pub(crate) fn observe(&mut self, d: Duration) {
        let x = d.as_micros() as f64;
        self.ewma_us = Some(match self.ewma_us {
            None => x,
            Some(e) => e + Self::ALPHA * (x - e),
        });
    }

    /// The estimate; `None` until the first answer.
    pub(crate) fn estimate(&self) -> Option<Duration> {
        self.ewma_us.map(|us| Duration::from_micros(us as u64))
    }
}

/// The retry budget over a sliding window of ten one-second buckets.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    /// (second, calls, retries), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    origin: Instant,
}

const WINDOW_SECS: u64 = 10;

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_sec: u32, now: Instant) -> Self {
        Self { ratio: ratio.max(0.0), min_per_sec, buckets: VecDeque::new(), origin: now }
    }

    fn bucket(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        let sec = now.duration_since(self.origin).as_secs();
        while self.buckets.front().is_some_and(|b| b.0 + WINDOW_SECS <= sec) {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|b| b.0 != sec) {
            self.buckets.push_back((sec, 0, 0));
        }
        // Just pushed or already there.
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// A call started.
    pub(crate) fn call(&mut self, now: Instant) {
        self.bucket(now).1 += 1;
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(crate) fn try_retry(&mut self, now: Instant) -> bool {
        self.bucket(now);
        let (calls, retries) = self.buckets.iter().fold((0, 0), |(c, r), b| (c + b.1, r + b.2));
        let allowed = (self.min_per_sec as u64 * WINDOW_SECS) as f64 + self.ratio * calls as f64;
        if (retries as f64) < allowed {
            self.bucket(now).2 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_the_threshold_and_probes_once() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(2);
        let mut b = Breaker::default();
        b.failure(t0, 3, cool, 1.0);
        b.failure(t0, 3, cool, 1.0);
        assert_eq!(b.admit(t0), Admission::Closed, "two failures of three keep it closed");
        b.failure(t0, 3, cool, 1.0);
        assert_eq!(b.admit(t0), Admission::Open);
        assert_eq!(b.admit(t0 + Duration::from_millis(1999)), Admission::Open);
        let later = t0 + cool;
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.admit(later), Admission::Open, "one probe at a time");
        // The probe fails: open again for twice as long.
        b.failure(later, 3, cool, 1.0);
        assert_eq!(b.admit(later + Duration::from_millis(3999)), Admission::Open);
        assert_eq!(b.admit(later + Duration::from_secs(4)), Admission::Probe);
        b.success();
        assert_eq!(b.admit(later + Duration::from_secs(4)), Admission::Closed);
    }

    #[test]
    fn a_released_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.failure(t0, 1, Duration::from_secs(1), 1.0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(later), Admission::Probe);
        b.release_probe();
        assert_eq!(b.admit(later), Admission::Probe);
    }

    #[test]
    fn cooldown_is_capped_and_jittered() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.failure(t0, 1, Duration::from_secs(20), 0.0);
        // Jitter 0: half the cooldown.
        assert_eq!(b.admit(t0 + Duration::from_secs(10)), Admission::Probe);
        b.failure(t0 + Duration::from_secs(10), 1, Duration::from_secs(20), 1.0);
        assert_eq!(b.admit(t0 + Duration::from_secs(39)), Admission::Open);
        assert_eq!(b.admit(t0 + Duration::from_secs(40)), Admission::Probe, "40 s capped to 30 s");
    }

    #[test]
    fn latency_moves_toward_new_samples() {
        let mut l = Latency::default();
        assert_eq!(l.estimate(), None);
        l.observe(Duration::from_millis(10));
        assert_eq!(l.estimate(), Some(Duration::from_millis(10)));
        l.observe(Duration::from_millis(110));
        assert_eq!(l.estimate(), Some(Duration::from_millis(40)));
    }

    #[test]
    fn the_retry_budget_caps_retries_and_refills() {
        let t0 = Instant::now();
        // No floor: 10% of calls.
        let mut b = RetryBudget::new(0.1, 0, t0);
        for _ in 0..100 {
            b.call(t0);
        }
        let granted = (0..50).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 10);
        // Ten seconds later the window has forgotten them.
        let later = t0 + Duration::from_secs(10);
        assert!(!b.try_retry(later));
        b.call(later);
        for _ in 0..9 {
            b.call(later);
        }
        assert!(b.try_retry(later));
        assert!(!b.try_retry(later));
        // The floor allows retries with no calls at all.
        let mut floor = RetryBudget::new(0.0, 1, t0);
        assert_eq!((0..20).filter(|_| floor.try_retry(t0)).count(), 10);
    }
}
