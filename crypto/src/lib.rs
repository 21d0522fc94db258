//! keyquorum's cryptography: AES-256-GCM-SIV and the self-describing ciphertext format,
//! ECDSA P-384, the threshold root key (threshold_crypto, BLS12-381), node identity keys,
//! zeroizing secret types and the injectable RNG.
//!
//! **Architecture Invariant:** this crate does no I/O, reads no clock and draws no
//! thread-local randomness: every random byte comes from a [`SecureRng`] the caller passes in,
//! so the simulator can seed it.

pub mod aead;
pub mod ciphertext;
pub mod dkg;
pub mod ecdsa;
mod error;
pub mod identity;
pub mod passphrase;
pub mod rng;
pub mod secret;
pub mod threshold;

pub use error::CryptoError;

/// postcard encoding of the crate's wire and storage formats.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CryptoError> {
    postcard::to_stdvec(value).map_err(|e| CryptoError::Encoding(e.to_string()))
}

/// postcard decoding; `what` names the thing in the error.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, CryptoError> {
    postcard::from_bytes(bytes).map_err(|e| CryptoError::Encoding(format!("{what}: {e}")))
}
pub use rng::SecureRng;
pub use secret::SecretBytes;

/// Length of a symmetric KMS key (AES-256) in bytes.
pub const AES_KEY_LEN: usize = 32;
/// Length of a P-384 private scalar in bytes.
pub const P384_SCALAR_LEN: usize = 48;
/// Largest plaintext Encrypt accepts (64 KiB).
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
