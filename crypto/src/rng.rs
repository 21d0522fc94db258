//! The one source of randomness. Production seeds it from the OS once; the simulator seeds it
//! from its `u64`. Nothing in keyquorum calls `thread_rng`.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

/// A ChaCha20 CSPRNG. `Debug` does not show its state.
pub struct SecureRng(ChaCha20Rng);

impl std::fmt::Debug for SecureRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureRng(..)")
    }
}

impl SecureRng {
    /// Seeded from the operating system: the production choice.
    pub fn from_os() -> Self {
        Self(ChaCha20Rng::from_entropy())
    }

    /// Deterministic, for tests and simulation only.
    pub fn from_seed_u64(seed: u64) -> Self {
        Self(ChaCha20Rng::seed_from_u64(seed))
    }

    /// `N` fresh random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.0.fill_bytes(&mut out);
        out
    }

    /// An RNG for threshold_crypto, which still speaks rand 0.7's traits; seeded from this one.
    pub(crate) fn rand07(&mut self) -> rand_chacha02::ChaChaRng {
        use rand_chacha02::rand_core::SeedableRng as _;
        rand_chacha02::ChaChaRng::from_seed(self.bytes::<32>())
    }
}

impl RngCore for SecureRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for SecureRng {}
