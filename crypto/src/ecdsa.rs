//! ECDSA over P-384 with SHA-384 (FIPS 186-4), signatures DER-encoded on the wire.

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{EncodePublicKey, LineEnding};

use crate::{CryptoError, SecretBytes, SecureRng, P384_SCALAR_LEN};

/// A fresh private scalar (big-endian, 48 bytes), uniformly in [1, n).
pub fn generate_scalar(rng: &mut SecureRng) -> SecretBytes {
    let key = SigningKey::random(rng);
    SecretBytes::new(key.to_bytes().to_vec())
}

fn signing_key(scalar: &SecretBytes) -> Result<SigningKey, CryptoError> {
    if scalar.len() != P384_SCALAR_LEN {
        return Err(CryptoError::InvalidKeyLength { expected: P384_SCALAR_LEN, actual: scalar.len() });
    }
    SigningKey::from_slice(scalar.expose()).map_err(|_| CryptoError::InvalidPrivateKey)
}

/// The SEC1 uncompressed public point of a private scalar.
pub fn public_key_sec1(scalar: &SecretBytes) -> Result<Vec<u8>, CryptoError> {
    let key = signing_key(scalar)?;
    Ok(key.verifying_key().to_encoded_point(false).as_bytes().to_vec())
}

/// Signs `message` (hashed with SHA-384 here); returns a DER signature. RFC 6979 nonces.
pub fn sign(scalar: &SecretBytes, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = signing_key(scalar)?;
    let sig: Signature = key.sign(message);
    Ok(sig.to_der().as_bytes().to_vec())
}

fn verifying_key(public_key: &[u8]) -> Result<VerifyingKey, CryptoError> {
    if let Ok(key) = VerifyingKey::from_sec1_bytes(public_key) {
        return Ok(key);
    }
    use p384::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_der(public_key)
        .map_err(|_| CryptoError::InvalidPublicKey("neither a SEC1 point nor SPKI DER on P-384"))
}

/// Verifies a DER signature over `message` under a SEC1 or SPKI-DER public key.
pub fn verify_der(public_key: &[u8], message: &[u8], signature_der: &[u8]) -> Result<(), CryptoError> {
    let key = verifying_key(public_key)?;
    let sig = Signature::from_der(signature_der).map_err(|_| CryptoError::InvalidSignatureEncoding)?;
    key.verify(message, &sig).map_err(|_| CryptoError::BadSignature)
}

/// Verifies a fixed-size IEEE P1363 (r || s) signature.
pub fn verify_p1363(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    let key = verifying_key(public_key)?;
    let sig = Signature::from_slice(signature).map_err(|_| CryptoError::InvalidSignatureEncoding)?;
    key.verify(message, &sig).map_err(|_| CryptoError::BadSignature)
}

/// SubjectPublicKeyInfo DER and PEM of a SEC1 public point.
pub fn public_key_spki(public_key_sec1: &[u8]) -> Result<(Vec<u8>, String), CryptoError> {
    let key = verifying_key(public_key_sec1)?;
    let der = key.to_public_key_der().map_err(|e| CryptoError::Encoding(e.to_string()))?.as_bytes().to_vec();
    let pem = key.to_public_key_pem(LineEnding::LF).map_err(|e| CryptoError::Encoding(e.to_string()))?;
    Ok((der, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_reject_other_message() {
        let mut rng = SecureRng::from_seed_u64(1);
        let d = generate_scalar(&mut rng);
        let pk = public_key_sec1(&d).unwrap();
        let sig = sign(&d, b"msg").unwrap();
        verify_der(&pk, b"msg", &sig).unwrap();
        assert_eq!(verify_der(&pk, b"other", &sig), Err(CryptoError::BadSignature));
        let (der, pem) = public_key_spki(&pk).unwrap();
        verify_der(&der, b"msg", &sig).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn garbage_keys_and_signatures_are_errors() {
        assert!(verify_der(b"junk", b"m", b"s").is_err());
        assert_eq!(signing_key(&SecretBytes::new(vec![0; 48])).err(), Some(CryptoError::InvalidPrivateKey));
    }
}
