//! Node identity keys: a scalar on BLS12-381's G1 per node, its public point published to the
//! cluster, and sealing secrets to it (the key generation's rows and values travel through the
//! replicated log sealed to their recipient).
//!
//! Sealing is ephemeral–static Diffie–Hellman on G1, a key derived with HMAC-SHA256 from the
//! shared point and both public points, and AES-256-GCM-SIV with both points as associated
//! data. It needs no pairing (threshold_crypto's hashed ElGamal costs a hash to G2 to seal and
//! two pairings to open), and opening with the wrong key fails rather than yielding other bytes.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use threshold_crypto::ff::Field;
use threshold_crypto::group::{CurveAffine, CurveProjective, EncodedPoint};
use threshold_crypto::serde_impl::FieldWrap;
use threshold_crypto::{Fr, G1Affine, G1};

use crate::{aead, encode, CryptoError, SecretBytes, SecureRng};

/// Length of a compressed G1 point: an identity public key.
pub const IDENTITY_PUBLIC_LEN: usize = 48;

const SEAL_LABEL: &[u8] = b"keyquorum identity seal v1";

/// A node's identity key. Holds the scalar's encoding (the same bytes threshold_crypto writes
/// for a `SecretKey`), zeroized on drop; `Debug` never shows it.
pub struct IdentityKey(SecretBytes);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey([REDACTED])")
    }
}

fn compress(point: G1) -> [u8; IDENTITY_PUBLIC_LEN] {
    let mut out = [0u8; IDENTITY_PUBLIC_LEN];
    out.copy_from_slice(point.into_affine().into_compressed().as_ref());
    out
}

/// Decodes a compressed G1 point; rejects bytes off the curve or outside the subgroup, and the
/// identity point.
fn decompress(bytes: &[u8], what: &'static str) -> Result<G1Affine, CryptoError> {
    if bytes.len() != IDENTITY_PUBLIC_LEN {
        return Err(CryptoError::InvalidPublicKey(what));
    }
    let mut compressed = <G1Affine as CurveAffine>::Compressed::empty();
    compressed.as_mut().copy_from_slice(bytes);
    let point = compressed.into_affine().map_err(|_| CryptoError::InvalidPublicKey(what))?;
    if point.is_zero() {
        return Err(CryptoError::InvalidPublicKey(what));
    }
    Ok(point)
}

/// The AEAD key for one sealed message, and its associated data.
fn seal_key(shared: G1, ephemeral: &[u8], recipient: &[u8]) -> (SecretBytes, Vec<u8>) {
    let shared = compress(shared);
    #[allow(clippy::expect_used)] // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&shared).expect("hmac takes any key length");
    let aad = [ephemeral, recipient].concat();
    mac.update(SEAL_LABEL);
    mac.update(&aad);
    (SecretBytes::new(mac.finalize().into_bytes().to_vec()), aad)
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    ephemeral: Vec<u8>,
    nonce: [u8; aead::NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl IdentityKey {
    pub fn generate(rng: &mut SecureRng) -> Self {
        let mut rng07 = rng.rand07();
        loop {
            let scalar = Fr::random(&mut rng07);
            if !scalar.is_zero() {
                #[allow(clippy::expect_used)] // a field element always encodes
                return Self(SecretBytes::new(encode(&FieldWrap(&scalar)).expect("a scalar encodes")));
            }
        }
    }

    pub fn to_bytes(&self) -> Result<SecretBytes, CryptoError> {
        Ok(self.0.clone())
    }

    pub fn from_bytes(bytes: &SecretBytes) -> Result<Self, CryptoError> {
        let key = Self(bytes.clone());
        if key.scalar()?.is_zero() {
            return Err(CryptoError::Encoding("identity key: the zero scalar is not a key".into()));
        }
        Ok(key)
    }

    fn scalar(&self) -> Result<Fr, CryptoError> {
        let FieldWrap(scalar): FieldWrap<Fr> =
            postcard::from_bytes(self.0.expose()).map_err(|e| CryptoError::Encoding(format!("identity key: {e}")))?;
        Ok(scalar)
    }

    /// The public point, 48 bytes (compressed G1).
    pub fn public(&self) -> Vec<u8> {
        // `from_bytes` and `generate` only build keys whose scalar decodes.
        self.scalar().map(|s| compress(G1Affine::one().mul(s)).to_vec()).unwrap_or_default()
    }

    /// Opens something sealed to this identity with [`seal_to`].
    pub fn open(&self, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let sealed: Sealed = postcard::from_bytes(sealed).map_err(|_| CryptoError::DecryptFailed)?;
        let ephemeral = decompress(&sealed.ephemeral, "sealed message: bad ephemeral point")?;
        let (key, aad) = seal_key(ephemeral.mul(self.scalar()?), &sealed.ephemeral, &self.public());
        aead::open(key.expose(), &sealed.nonce, &aad, &sealed.ciphertext).map(SecretBytes::new)
    }
}

/// Seals `secret` to an identity public key (48 bytes): only that identity can open it.
pub fn seal_to(identity_public: &[u8], secret: &SecretBytes, rng: &mut SecureRng) -> Result<Vec<u8>, CryptoError> {
    let recipient = decompress(identity_public, "identity key must be a 48-byte G1 point")?;
    let ephemeral_key = IdentityKey::generate(rng);
    let ephemeral = ephemeral_key.public();
    let (key, aad) = seal_key(recipient.mul(ephemeral_key.scalar()?), &ephemeral, identity_public);
    let nonce = rng.bytes::<{ aead::NONCE_LEN }>();
    let ciphertext = aead::seal(key.expose(), &nonce, &aad, secret.expose())?;
    encode(&Sealed { ephemeral, nonce, ciphertext })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_nobody_else_can_open() {
        let mut rng = SecureRng::from_seed_u64(3);
        let a = IdentityKey::generate(&mut rng);
        let b = IdentityKey::generate(&mut rng);
        let secret = SecretBytes::new(b"share bytes".to_vec());
        let sealed = seal_to(&a.public(), &secret, &mut rng).unwrap();
        assert_eq!(a.open(&sealed).unwrap(), secret);
        assert_eq!(b.open(&sealed), Err(CryptoError::DecryptFailed));
        let restored = IdentityKey::from_bytes(&a.to_bytes().unwrap()).unwrap();
        assert_eq!(restored.public(), a.public());
        assert!(format!("{a:?}").contains("REDACTED"));
    }

    #[test]
    fn keys_written_as_threshold_crypto_secret_keys_still_load() {
        use threshold_crypto::serde_impl::SerdeSecret;
        let sk: threshold_crypto::SecretKey = rand07::Rng::gen(&mut SecureRng::from_seed_u64(4).rand07());
        let bytes = SecretBytes::new(postcard::to_stdvec(&SerdeSecret(&sk)).unwrap());
        let key = IdentityKey::from_bytes(&bytes).unwrap();
        assert_eq!(key.public(), sk.public_key().to_bytes().to_vec());
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let mut rng = SecureRng::from_seed_u64(5);
        let a = IdentityKey::generate(&mut rng);
        let secret = SecretBytes::new(vec![1; 8]);
        assert!(seal_to(&[0u8; 48], &secret, &mut rng).is_err());
        assert!(seal_to(&[1u8; 3], &secret, &mut rng).is_err());
        assert!(a.open(b"junk").is_err());
        let mut sealed = seal_to(&a.public(), &secret, &mut rng).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(a.open(&sealed), Err(CryptoError::DecryptFailed));
        assert!(IdentityKey::from_bytes(&SecretBytes::new(vec![0; 3])).is_err());
        assert!(IdentityKey::from_bytes(&SecretBytes::new(vec![0xff; 40])).is_err());
    }
}
