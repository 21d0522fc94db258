//! The environment the simulator swaps: the wall clock (for the times commands carry) and the
//! one random stream every part of a node draws from.

use std::sync::{Arc, Mutex};

use crypto::SecureRng;

/// Wall-clock milliseconds since the Unix epoch. Injected so the simulator controls it.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    })
}

/// A node's clock and randomness.
pub struct Env {
    clock: Clock,
    rng: Mutex<SecureRng>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Env {{ now_ms: {} }}", self.now_ms())
    }
}

impl Env {
    pub fn new(clock: Clock, rng: SecureRng) -> Arc<Self> {
        Arc::new(Self { clock, rng: Mutex::new(rng) })
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    pub fn with_rng<T>(&self, f: impl FnOnce(&mut SecureRng) -> T) -> T {
        // A panic while drawing leaves the stream usable.
        f(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
