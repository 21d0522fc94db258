//! Per-principal call rates at this node: one token bucket per principal and call class,
//! shaped by the replicated quotas (`raft::quota`). A call over its rate is refused before any
//! work, with the wait until a token is there. Buckets are this node's own: a quota is the
//! rate a principal may call at each node its calls reach (as with Vault's rate-limit quotas),
//! which is what protects each node's capacity; a forwarded call was charged where it entered.

use std::collections::BTreeMap;
use std::sync::Mutex;

use raft::{Principal, Quotas, Rate};
use tokio::time::Instant;

/// What a call is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Class {
    /// Calls that use key material.
    Crypto,
    /// Every other KMS call.
    Management,
}

impl Class {
    pub(super) fn name(self) -> &'static str {
        match self {
            Class::Crypto => "crypto",
            Class::Management => "management",
        }
    }
}

/// A refusal: the rate, where it comes from, and the wait for the next token.
#[derive(Debug)]
pub(super) struct OverRate {
    pub rate: Rate,
    pub scope: String,
    pub retry_after_ms: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_second)).min(f64::from(self.rate.burst));
        self.at = now;
    }

    fn full(&self) -> bool {
        self.tokens >= f64::from(self.rate.burst)
    }
}

/// Buckets are dropped once full again (a full bucket is what a missing one stands for), when
/// there are this many more than at the last sweep.
const SWEEP_FLOOR: usize = 1024;

/// This node's buckets.
#[derive(Debug)]
pub(super) struct Throttle {
    inner: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_caller: BTreeMap<(Principal, Class), Bucket>,
    sweep_at: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { inner: Mutex::new(Buckets { by_caller: BTreeMap::new(), sweep_at: SWEEP_FLOOR }) }
    }
}

impl Throttle {
    /// Takes a token for one call of `class` by `principal` at `now`, or says how long to wait.
    pub(super) fn admit(
        &self,
        quotas: &Quotas,
        principal: &Principal,
        class: Class,
        now: Instant,
    ) -> Result<(), OverRate> {
        let (limits, scope) = quotas.of(principal);
        let rate = match class {
            Class::Crypto => limits.crypto,
            Class::Management => limits.management,
        };
        let Some(rate) = rate else { return Ok(()) };
        let mut buckets = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.by_caller.len() >= buckets.sweep_at {
            buckets.by_caller.retain(|_, b| {
                b.refill(now);
                !b.full()
            });
            buckets.sweep_at = (buckets.by_caller.len() * 2).max(SWEEP_FLOOR);
        }
        let bucket = buckets.by_caller.entry((principal.clone(), class)).or_insert_with(|| Bucket {
            tokens: f64::from(rate.burst),
            at: now,
            rate,
        });
        if bucket.rate != rate {
            // The quota changed: the bucket takes its new shape, keeping what it holds.
            bucket.refill(now);
            bucket.rate = rate;
            bucket.tokens = bucket.tokens.min(f64::from(rate.burst));
        }
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_s = (1.0 - bucket.tokens) / f64::from(rate.per_second);
        Err(OverRate {
            rate,
            scope: raft::quota::source(scope),
            retry_after_ms: ((wait_s * 1000.0).ceil() as u64).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use raft::Limits;

    use super::*;

    fn quotas(per_second: u32, burst: u32) -> Quotas {
        let rate = Some(Rate { per_second, burst });
        Quotas { default: Limits { crypto: rate, management: rate, ..Limits::default() }, ..Quotas::default() }
    }

    #[test]
    fn a_burst_then_the_rate_and_each_principal_and_class_apart() {
        let throttle = Throttle::default();
        let q = quotas(10, 3);
        let (a, b) = (Principal::Client("a".into()), Principal::Client("b".into()));
        let now = Instant::now();
        for _ in 0..3 {
            throttle.admit(&q, &a, Class::Crypto, now).unwrap();
        }
        let over = throttle.admit(&q, &a, Class::Crypto, now).unwrap_err();
        assert_eq!(over.retry_after_ms, 100);
        // Another principal, or another class, has its own bucket.
        throttle.admit(&q, &b, Class::Crypto, now).unwrap();
        throttle.admit(&q, &a, Class::Management, now).unwrap();
        // One token every 100 ms.
        let later = now + Duration::from_millis(100);
        throttle.admit(&q, &a, Class::Crypto, later).unwrap();
        assert!(throttle.admit(&q, &a, Class::Crypto, later).is_err());
        // Unlimited: always admitted.
        let open = Quotas { default: Limits { crypto: None, ..Limits::default() }, ..Quotas::default() };
        for _ in 0..100 {
            throttle.admit(&open, &a, Class::Crypto, later).unwrap();
        }
    }

    #[test]
    fn a_changed_quota_reshapes_the_bucket_and_full_buckets_are_swept() {
        let throttle = Throttle::default();
        let a = Principal::Client("a".into());
        let now = Instant::now();
        throttle.admit(&quotas(10, 100), &a, Class::Crypto, now).unwrap();
        // Lowered to a burst of 2: at most 2 now, whatever the old bucket held.
        let q = quotas(1, 2);
        throttle.admit(&q, &a, Class::Crypto, now).unwrap();
        throttle.admit(&q, &a, Class::Crypto, now).unwrap();
        assert!(throttle.admit(&q, &a, Class::Crypto, now).is_err());
        // Thousands of principals, each calling once: the map does not keep them all.
        let later = now + Duration::from_secs(10);
        for i in 0..5000 {
            throttle
                .admit(&q, &Principal::Client(format!("p{i}")), Class::Crypto, later + Duration::from_secs(i))
                .unwrap();
        }
        assert!(throttle.inner.lock().unwrap().by_caller.len() < 2 * SWEEP_FLOOR + 1);
    }
}
