//! Sealing a small secret under an operator passphrase (or the contents of a key file): a
//! 32-byte key derived with Argon2id from the passphrase and a random salt, and AES-256-GCM-SIV
//! over the secret with the derivation's parameters as associated data.
//!
//! The sealed form is self-describing, so the cost can be raised later without breaking old
//! files; parameters read from a file are bounded, so a crafted file cannot make a node spend
//! unbounded memory or time before it fails.

use serde::{Deserialize, Serialize};

use crate::{aead, decode, encode, CryptoError, SecretBytes, SecureRng};

const LABEL: &[u8] = b"keyquorum passphrase seal v1";
const SALT_LEN: usize = 16;

/// Argon2id cost. The default is RFC 9106's second recommended option (64 MiB, 3 passes) with
/// one lane: about a quarter of a second on a server core, once per node start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub memory_kib: u32,
    pub passes: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self { memory_kib: 64 * 1024, passes: 3 }
    }
}

impl Cost {
    /// The most a sealed file may ask for: 1 GiB and 16 passes.
    const MAX: Cost = Cost { memory_kib: 1024 * 1024, passes: 16 };

    fn check(self) -> Result<(), CryptoError> {
        if self.memory_kib < 8
            || self.memory_kib > Self::MAX.memory_kib
            || self.passes == 0
            || self.passes > Self::MAX.passes
        {
            return Err(CryptoError::Encoding(format!(
                "passphrase seal: Argon2id cost {} KiB × {} passes is outside 8 KiB-1 GiB × 1-16",
                self.memory_kib, self.passes
            )));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    cost: Cost,
    salt: [u8; SALT_LEN],
    nonce: [u8; aead::NONCE_LEN],
    ciphertext: Vec<u8>,
}

fn derive(passphrase: &SecretBytes, cost: Cost, salt: &[u8]) -> Result<SecretBytes, CryptoError> {
    use argon2::{Algorithm, Argon2, Params, Version};
    cost.check()?;
    if passphrase.is_empty() {
        return Err(CryptoError::Encoding("passphrase seal: the passphrase is empty".into()));
    }
    let params = Params::new(cost.memory_kib, cost.passes, 1, Some(32))
        .map_err(|e| CryptoError::Encoding(format!("passphrase seal: {e}")))?;
    let mut key = SecretBytes::new(vec![0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose(), salt, key.expose_mut())
        .map_err(|e| CryptoError::Encoding(format!("passphrase seal: {e}")))?;
    Ok(key)
}

fn aad(cost: Cost, salt: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Ok([LABEL, &encode(&cost)?, salt].concat())
}

/// Seals `secret` under `passphrase`.
pub fn seal(
    passphrase: &SecretBytes,
    secret: &SecretBytes,
    cost: Cost,
    rng: &mut SecureRng,
) -> Result<Vec<u8>, CryptoError> {
    let salt = rng.bytes::<SALT_LEN>();
    let nonce = rng.bytes::<{ aead::NONCE_LEN }>();
    let key = derive(passphrase, cost, &salt)?;
    let ciphertext = aead::seal(key.expose(), &nonce, &aad(cost, &salt)?, secret.expose())?;
    encode(&Sealed { cost, salt, nonce, ciphertext })
}

/// Opens what [`seal`] produced. A wrong passphrase and altered bytes are both
/// `DecryptFailed`.
pub fn open(passphrase: &SecretBytes, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
    let sealed: Sealed = decode(sealed, "passphrase-sealed file")?;
    let key = derive(passphrase, sealed.cost, &sealed.salt)?;
    aead::open(key.expose(), &sealed.nonce, &aad(sealed.cost, &sealed.salt)?, &sealed.ciphertext).map(SecretBytes::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Cost = Cost { memory_kib: 64, passes: 1 };

    fn secret() -> SecretBytes {
        SecretBytes::new(b"forty-eight bytes of identity key, or so it says".to_vec())
    }

    #[test]
    fn opens_with_the_passphrase_only() {
        let mut rng = SecureRng::from_seed_u64(1);
        let pass = SecretBytes::new(b"correct horse battery staple".to_vec());
        let sealed = seal(&pass, &secret(), CHEAP, &mut rng).unwrap();
        assert_eq!(open(&pass, &sealed).unwrap(), secret());
        let wrong = SecretBytes::new(b"correct horse battery stapler".to_vec());
        assert_eq!(open(&wrong, &sealed).unwrap_err(), CryptoError::DecryptFailed);
        assert!(!sealed.windows(8).any(|w| secret().expose().windows(8).any(|s| s == w)));
    }

    #[test]
    fn altered_files_and_costs_are_refused() {
        let mut rng = SecureRng::from_seed_u64(2);
        let pass = SecretBytes::new(b"pass".to_vec());
        let sealed = seal(&pass, &secret(), CHEAP, &mut rng).unwrap();
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(open(&pass, &flipped).unwrap_err(), CryptoError::DecryptFailed);
        // The cost is bound as associated data: lowering it in the file does not open.
        let mut s: Sealed = decode(&sealed, "test").unwrap();
        s.cost.passes = 2;
        assert_eq!(open(&pass, &encode(&s).unwrap()).unwrap_err(), CryptoError::DecryptFailed);
        // A file asking for absurd cost is refused before any work.
        s.cost = Cost { memory_kib: u32::MAX, passes: 1 };
        assert!(matches!(open(&pass, &encode(&s).unwrap()), Err(CryptoError::Encoding(_))));
        assert!(matches!(open(&pass, b"\xff\xff"), Err(CryptoError::Encoding(_))));
        assert!(matches!(seal(&SecretBytes::default(), &secret(), CHEAP, &mut rng), Err(CryptoError::Encoding(_))));
    }
}
