//! AES-GCM-SIV (RFC 8452). KMS keys are always 256-bit; 128-bit keys are accepted here only so
//! the RFC/Wycheproof vectors exercise the same code path.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes128GcmSiv, Aes256GcmSiv, Nonce};

use crate::CryptoError;

/// AES-GCM-SIV nonce length.
pub const NONCE_LEN: usize = 12;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;

enum Cipher {
    Aes128(Box<Aes128GcmSiv>),
    Aes256(Box<Aes256GcmSiv>),
}

fn cipher(key: &[u8]) -> Result<Cipher, CryptoError> {
    match key.len() {
        16 => Aes128GcmSiv::new_from_slice(key).map(|c| Cipher::Aes128(Box::new(c))),
        32 => Aes256GcmSiv::new_from_slice(key).map(|c| Cipher::Aes256(Box::new(c))),
        actual => return Err(CryptoError::InvalidKeyLength { expected: 32, actual }),
    }
    .map_err(|_| CryptoError::InvalidKeyLength { expected: 32, actual: key.len() })
}

/// Encrypts `plaintext`, returning `ciphertext || tag`.
pub fn seal(key: &[u8], nonce: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::InvalidNonceLength(nonce.len()));
    }
    let nonce = Nonce::from_slice(nonce);
    let payload = Payload { msg: plaintext, aad };
    match cipher(key)? {
        Cipher::Aes128(c) => c.encrypt(nonce, payload),
        Cipher::Aes256(c) => c.encrypt(nonce, payload),
    }
    .map_err(|_| CryptoError::PlaintextTooLarge { actual: plaintext.len(), limit: usize::MAX })
}

/// Decrypts `ciphertext || tag`; any mismatch of key, nonce, AAD or bytes is `DecryptFailed`.
pub fn open(key: &[u8], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::InvalidNonceLength(nonce.len()));
    }
    if sealed.len() < TAG_LEN {
        return Err(CryptoError::DecryptFailed);
    }
    let nonce = Nonce::from_slice(nonce);
    let payload = Payload { msg: sealed, aad };
    match cipher(key)? {
        Cipher::Aes128(c) => c.decrypt(nonce, payload),
        Cipher::Aes256(c) => c.decrypt(nonce, payload),
    }
    .map_err(|_| CryptoError::DecryptFailed)
}
