use thiserror::Error;

/// What went wrong in a cryptographic operation. Messages never contain secret bytes.
///
/// Not `#[non_exhaustive]`: the node maps every kind to a status code exhaustively, so a new
/// kind does not compile until someone decides its code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("invalid key length: expected {expected} bytes, got {actual}")]
    InvalidKeyLength { expected: usize, actual: usize },
    #[error("invalid nonce length: expected 12 bytes, got {0}")]
    InvalidNonceLength(usize),
    #[error("decryption failed: the ciphertext, its encryption context or the key does not match")]
    DecryptFailed,
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(&'static str),
    #[error("plaintext too large: {actual} bytes, the limit is {limit}")]
    PlaintextTooLarge { actual: usize, limit: usize },
    #[error("invalid private key")]
    InvalidPrivateKey,
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    #[error("invalid signature encoding")]
    InvalidSignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("threshold: {0}")]
    Threshold(String),
    #[error("not enough decryption shares: have {have}, need {need}")]
    NotEnoughShares { have: usize, need: usize },
    #[error("unwrapped material does not match its key-check value; faulty share holders: {faulty:?}")]
    KeyCheckMismatch { faulty: Vec<u64> },
    #[error("key generation: {0}")]
    Dkg(String),
    #[error("encoding: {0}")]
    Encoding(String),
}
