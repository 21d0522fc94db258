//! The self-describing data ciphertext (format version 1), documented in ARCHITECTURE.md:
//!
//! ```text
//! offset  len  field
//! 0       2    magic "kq"
//! 2       1    format version (1)
//! 3       16   key id (UUID, big-endian bytes)
//! 19      4    key version (u32, big-endian)
//! 23      12   nonce
//! 35      n+16 AES-256-GCM-SIV ciphertext || tag
//! ```
//!
//! The AAD is the 35 header bytes followed by the canonical encoding of the encryption
//! context, so neither the header nor the context can be changed without failing decryption.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::{CryptoError, SecretBytes, SecureRng, AES_KEY_LEN, MAX_PLAINTEXT_LEN};

pub const MAGIC: [u8; 2] = *b"kq";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 2 + 1 + 16 + 4 + NONCE_LEN;

/// What a ciphertext says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key_id: Uuid,
    pub key_version: u32,
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = FORMAT_VERSION;
        out[3..19].copy_from_slice(self.key_id.as_bytes());
        out[19..23].copy_from_slice(&self.key_version.to_be_bytes());
        out[23..35].copy_from_slice(&self.nonce);
        out
    }
}

/// Reads the header of a ciphertext, rejecting anything that is not format version 1.
pub fn parse_header(ciphertext: &[u8]) -> Result<Header, CryptoError> {
    if ciphertext.len() < HEADER_LEN + TAG_LEN {
        return Err(CryptoError::MalformedCiphertext("too short to be a keyquorum ciphertext"));
    }
    if ciphertext[0..2] != MAGIC {
        return Err(CryptoError::MalformedCiphertext("not a keyquorum ciphertext (bad magic)"));
    }
    if ciphertext[2] != FORMAT_VERSION {
        return Err(CryptoError::MalformedCiphertext("unsupported ciphertext format version"));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&ciphertext[3..19]);
    let mut version = [0u8; 4];
    version.copy_from_slice(&ciphertext[19..23]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&ciphertext[23..35]);
    Ok(Header { key_id: Uuid::from_bytes(id), key_version: u32::from_be_bytes(version), nonce })
}

/// Canonical bytes of an encryption context: count, then each (key, value) in key order,
/// every field length-prefixed (u32 BE), so distinct contexts never encode alike.
pub fn encode_context(context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(context.len() as u32).to_be_bytes());
    for (k, v) in context {
        for field in [k.as_bytes(), v.as_bytes()] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

fn aad(header: &[u8; HEADER_LEN], context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&encode_context(context));
    aad
}

fn check_key(key: &SecretBytes) -> Result<(), CryptoError> {
    if key.len() != AES_KEY_LEN {
        return Err(CryptoError::InvalidKeyLength { expected: AES_KEY_LEN, actual: key.len() });
    }
    Ok(())
}

/// Encrypts under one KMS key version with a fresh random nonce.
pub fn encrypt(
    key: &SecretBytes,
    key_id: Uuid,
    key_version: u32,
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
    rng: &mut SecureRng,
) -> Result<Vec<u8>, CryptoError> {
    check_key(key)?;
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::PlaintextTooLarge { actual: plaintext.len(), limit: MAX_PLAINTEXT_LEN });
    }
    let header = Header { key_id, key_version, nonce: rng.bytes::<NONCE_LEN>() };
    let header_bytes = header.encode();
    let sealed = aead::seal(key.expose(), &header.nonce, &aad(&header_bytes, context), plaintext)?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypts a ciphertext made by [`encrypt`] with the key version its header names.
pub fn decrypt(
    key: &SecretBytes,
    ciphertext: &[u8],
    context: &BTreeMap<String, String>,
) -> Result<SecretBytes, CryptoError> {
    check_key(key)?;
    let header = parse_header(ciphertext)?;
    let header_bytes = header.encode();
    let plaintext = aead::open(key.expose(), &header.nonce, &aad(&header_bytes, context), &ciphertext[HEADER_LEN..])?;
    Ok(SecretBytes::new(plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn round_trip_and_header_names_key_and_version() {
        let mut rng = SecureRng::from_seed_u64(7);
        let key = SecretBytes::new(rng.bytes::<32>().to_vec());
        let id = Uuid::from_bytes(rng.bytes::<16>());
        let c = ctx(&[("tenant", "a")]);
        let ct = encrypt(&key, id, 3, &c, b"hello", &mut rng).unwrap();
        let h = parse_header(&ct).unwrap();
        assert_eq!((h.key_id, h.key_version), (id, 3));
        assert_eq!(decrypt(&key, &ct, &c).unwrap().expose(), b"hello");
    }

    #[test]
    fn wrong_context_tampered_header_or_truncation_fail_cleanly() {
        let mut rng = SecureRng::from_seed_u64(8);
        let key = SecretBytes::new(rng.bytes::<32>().to_vec());
        let c = ctx(&[("a", "b")]);
        let ct = encrypt(&key, Uuid::nil(), 1, &c, b"data", &mut rng).unwrap();
        assert_eq!(decrypt(&key, &ct, &ctx(&[("a", "c")])), Err(CryptoError::DecryptFailed));
        assert_eq!(decrypt(&key, &ct, &BTreeMap::new()), Err(CryptoError::DecryptFailed));
        let mut other_version = ct.clone();
        other_version[22] ^= 1;
        assert_eq!(decrypt(&key, &other_version, &c), Err(CryptoError::DecryptFailed));
        for cut in 0..HEADER_LEN + TAG_LEN {
            assert!(matches!(decrypt(&key, &ct[..cut], &c), Err(CryptoError::MalformedCiphertext(_))));
        }
        let mut bad_magic = ct.clone();
        bad_magic[0] = b'x';
        assert!(matches!(parse_header(&bad_magic), Err(CryptoError::MalformedCiphertext(_))));
    }

    #[test]
    fn context_encoding_is_injective_for_shifted_boundaries() {
        assert_ne!(encode_context(&ctx(&[("ab", "c")])), encode_context(&ctx(&[("a", "bc")])));
    }

    #[test]
    fn plaintext_over_64_kib_is_rejected() {
        let mut rng = SecureRng::from_seed_u64(9);
        let key = SecretBytes::new(vec![1; 32]);
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            encrypt(&key, Uuid::nil(), 1, &BTreeMap::new(), &big, &mut rng),
            Err(CryptoError::PlaintextTooLarge { .. })
        ));
    }
}
