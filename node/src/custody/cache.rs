//! Unwrapped key material in memory: by (key, version), with a time to live, the root epoch
//! of the wrapping it came from, counters for status, and one lock per version being
//! unwrapped (single flight: concurrent first uses share one share round).
//!
//! **Architecture Invariant:** material lives here only, zeroized on drop, and never longer
//! than its TTL; `sweep` evicts whatever the replicated state no longer allows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypto::SecretBytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::lock;

/// Serialises the unwrapping of one key version.
pub(super) type UnwrapSlot = Arc<tokio::sync::Mutex<()>>;

/// Cached material, its expiry, and the root epoch of the wrapping it came from.
struct Cached {
    material: SecretBytes,
    expires: Instant,
    epoch: u64,
}

/// What status shows of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

pub(super) struct MaterialCache {
    ttl: Duration,
    entries: Mutex<BTreeMap<(Uuid, u32), Cached>>,
    /// One lock per version being unwrapped right now.
    unwrapping: Mutex<BTreeMap<(Uuid, u32), UnwrapSlot>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for MaterialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaterialCache {{ entries: {} }}", lock(&self.entries).len())
    }
}

impl MaterialCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
            unwrapping: Default::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub(super) fn get(&self, key_id: Uuid, version: u32) -> Option<SecretBytes> {
        let mut entries = lock(&self.entries);
        let found = match entries.get(&(key_id, version)) {
            Some(c) if c.expires > Instant::now() => Some(c.material.clone()),
            Some(_) => {
                entries.remove(&(key_id, version));
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `(key_id, version)`'s material, unwrapped from (or made for) a wrapping under
    /// root epoch `epoch`.
    pub(super) fn put(&self, key_id: Uuid, version: u32, epoch: u64, material: SecretBytes) {
        let cached = Cached { material, expires: Instant::now() + self.ttl, epoch };
        lock(&self.entries).insert((key_id, version), cached);
    }

    /// Drops every cached version of a key.
    pub(super) fn evict_key(&self, key_id: Uuid) {
        let mut entries = lock(&self.entries);
        let before = entries.len();
        entries.retain(|(id, _), _| *id != key_id);
        self.evictions.fetch_add((before - entries.len()) as u64, Ordering::Relaxed);
    }

    /// Evicts every entry `usable(key, version, epoch)` rejects. `usable` is called without
    /// the cache's lock held (it reads the replicated state).
    pub(super) fn sweep(&self, usable: impl Fn(Uuid, u32, u64) -> bool) {
        let cached: Vec<((Uuid, u32), u64)> = lock(&self.entries).iter().map(|(k, c)| (*k, c.epoch)).collect();
        if cached.is_empty() {
            return;
        }
        let stale: Vec<(Uuid, u32)> =
            cached.into_iter().filter(|((id, v), e)| !usable(*id, *v, *e)).map(|(k, _)| k).collect();
        let mut entries = lock(&self.entries);
        let evicted = stale.iter().filter(|k| entries.remove(k).is_some()).count() as u64;
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    pub(super) fn keys(&self) -> Vec<(Uuid, u32)> {
        lock(&self.entries).keys().copied().collect()
    }

    pub(super) fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: lock(&self.entries).len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The lock that serialises unwrapping `(key_id, version)`.
    pub(super) fn slot(&self, key_id: Uuid, version: u32) -> UnwrapSlot {
        lock(&self.unwrapping).entry((key_id, version)).or_default().clone()
    }

    /// Forgets the slot once nobody else holds or waits on it.
    pub(super) fn release(&self, key_id: Uuid, version: u32, slot: UnwrapSlot) {
        let mut slots = lock(&self.unwrapping);
        // One reference in the map, one here: nobody else is waiting.
        if Arc::strong_count(&slot) <= 2 {
            slots.remove(&(key_id, version));
        }
    }
}
