//! The cluster root key: a threshold BLS12-381 key set (threshold_crypto). Any `t + 1` of the
//! `n` share holders can decrypt a wrapped key; `t` or fewer learn nothing.
//!
//! What the node layer sees are byte strings (serialized with postcard), so the replicated
//! state machine never depends on pairing types.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use threshold_crypto::serde_impl::SerdeSecret;
use threshold_crypto::{Ciphertext, DecryptionShare, PublicKeySet, SecretKeyShare};
use zeroize::Zeroizing;

use crate::{decode, encode, CryptoError, SecretBytes, SecureRng};

/// The threshold `t` for `n` share holders: `t + 1` is a majority, the same quorum Raft needs.
pub fn threshold_for(n: usize) -> usize {
    n / 2
}

fn public_key_set(bytes: &[u8]) -> Result<PublicKeySet, CryptoError> {
    decode(bytes, "public key set")
}

/// How many shares a public key set needs (`t + 1`).
pub fn shares_needed(public_key_set_bytes: &[u8]) -> Result<usize, CryptoError> {
    Ok(public_key_set(public_key_set_bytes)?.threshold() + 1)
}

/// Key-check value: HMAC-SHA256 keyed by the material over a fixed label. Stored beside each
/// wrapped key so a combined result can be checked without verifying every share.
pub fn key_check_value(material: &SecretBytes) -> [u8; 32] {
    #[allow(clippy::expect_used)] // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(material.expose()).expect("hmac takes any key length");
    mac.update(b"keyquorum key-check value v1");
    mac.finalize().into_bytes().into()
}

/// Material wrapped under the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    pub ciphertext: Vec<u8>,
    pub kcv: [u8; 32],
}

/// Wraps `material` under the root public key (no secret needed: any node can wrap).
pub fn wrap(public_key_set_bytes: &[u8], material: &SecretBytes, rng: &mut SecureRng) -> Result<Wrapped, CryptoError> {
    let pks = public_key_set(public_key_set_bytes)?;
    let mut rng07 = rng.rand07();
    let ct = pks.public_key().encrypt_with_rng(&mut rng07, material.expose());
    Ok(Wrapped { ciphertext: encode(&ct)?, kcv: key_check_value(material) })
}

/// Decodes a wrapped-key ciphertext without checking it (the pairings are the costly part;
/// callers that need the check use [`verify_wrapped`]).
fn parse_ciphertext(bytes: &[u8]) -> Result<Ciphertext, CryptoError> {
    decode(bytes, "wrapped key")
}

/// One holder's secret share of the root key. Zeroized on drop (threshold_crypto clears it).
pub struct ShareHolder {
    index: u64,
    share: SecretKeyShare,
}

impl std::fmt::Debug for ShareHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareHolder {{ index: {}, share: [REDACTED] }}", self.index)
    }
}

impl ShareHolder {
    pub fn from_bytes(index: u64, share: &SecretBytes) -> Result<Self, CryptoError> {
        let SerdeSecret(share): SerdeSecret<SecretKeyShare> = decode(share.expose(), "secret share")?;
        Ok(Self { index, share })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn from_secret_key_share(index: u64, share: SecretKeyShare) -> Self {
        Self { index, share }
    }

    /// This holder's decryption share for a wrapped key (serialized). Checks that the
    /// ciphertext is well formed first (two pairings).
    pub fn decryption_share(&self, wrapped_ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ct = parse_ciphertext(wrapped_ciphertext)?;
        let share = self
            .share
            .decrypt_share(&ct)
            .ok_or_else(|| CryptoError::Threshold("ciphertext rejected by share".into()))?;
        encode(&share)
    }

    /// Like [`Self::decryption_share`] for a ciphertext this holder has already checked with
    /// [`verify_wrapped`] (the caller remembers which ones), skipping the pairings.
    pub fn decryption_share_of_verified(&self, wrapped_ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ct = parse_ciphertext(wrapped_ciphertext)?;
        encode(&self.share.decrypt_share_no_verify(&ct))
    }
}

/// Whether a wrapped key's ciphertext is well formed (threshold_crypto's CCA check: two
/// pairings). Holders check each ciphertext once before giving shares for it.
pub fn verify_wrapped(wrapped_ciphertext: &[u8]) -> Result<bool, CryptoError> {
    Ok(parse_ciphertext(wrapped_ciphertext)?.verify())
}

/// Combines decryption shares (`index -> serialized share`) into the material. Optimistic:
/// the first `t + 1` shares are combined and checked against the key-check value; only on a
/// mismatch is every share verified, the faulty ones dropped and named.
pub fn unwrap(
    public_key_set_bytes: &[u8],
    wrapped: &Wrapped,
    shares: &BTreeMap<u64, Vec<u8>>,
) -> Result<SecretBytes, CryptoError> {
    let pks = public_key_set(public_key_set_bytes)?;
    // Not re-checked here: the holders check a ciphertext before giving shares for it, and
    // the key-check value catches a wrong result.
    let ct = parse_ciphertext(&wrapped.ciphertext)?;
    let need = pks.threshold() + 1;
    let mut parsed = BTreeMap::new();
    let mut faulty = Vec::new();
    for (index, bytes) in shares {
        match decode::<DecryptionShare>(bytes, "decryption share") {
            Ok(share) => {
                parsed.insert(*index, share);
            }
            Err(_) => faulty.push(*index),
        }
    }
    if parsed.len() < need {
        // Malformed shares are faulty ones: name them, so the caller drops them and asks others.
        if !faulty.is_empty() {
            return Err(CryptoError::KeyCheckMismatch { faulty });
        }
        return Err(CryptoError::NotEnoughShares { have: parsed.len(), need });
    }
    let combine = |shares: &BTreeMap<u64, DecryptionShare>| -> Result<SecretBytes, CryptoError> {
        let material = Zeroizing::new(
            pks.decrypt(shares.iter().take(need).map(|(i, s)| (*i, s)), &ct)
                .map_err(|e| CryptoError::Threshold(e.to_string()))?,
        );
        let material = SecretBytes::from_slice(&material);
        if bool::from(key_check_value(&material).ct_eq(&wrapped.kcv)) {
            Ok(material)
        } else {
            Err(CryptoError::KeyCheckMismatch { faulty: vec![] })
        }
    };
    if faulty.is_empty() {
        if let Ok(material) = combine(&parsed) {
            return Ok(material);
        }
    }
    // Slow path: verify each share against its public key share.
    parsed.retain(|index, share| {
        let ok = pks.public_key_share(*index).verify_decryption_share(share, &ct);
        if !ok {
            faulty.push(*index);
        }
        ok
    });
    faulty.sort_unstable();
    if parsed.len() < need {
        return Err(CryptoError::KeyCheckMismatch { faulty });
    }
    combine(&parsed).map_err(|_| CryptoError::KeyCheckMismatch { faulty })
}

impl ShareHolder {
    /// Whether this share belongs to `public_key_set` at its index: a share opened with the
    /// wrong identity, or corrupted on disk, fails this.
    pub fn matches(&self, public_key_set_bytes: &[u8]) -> Result<bool, CryptoError> {
        let pks = public_key_set(public_key_set_bytes)?;
        Ok(pks.public_key_share(self.index) == self.share.public_key_share())
    }
}

#[cfg(test)]
mod tests {
    use threshold_crypto::SecretKeySet;

    use super::*;

    /// A dealt root key: the public key set (public) and one secret share per holder index.
    #[derive(Debug)]
    struct DealtRootKey {
        public_key_set: Vec<u8>,
        /// `(share index, serialized secret share)`; zeroized when dropped.
        shares: Vec<(u64, SecretBytes)>,
    }

    /// A dealer, for these tests only: the cluster generates its root key without one
    /// (`crate::dkg`).
    fn deal_root_key(holders: usize, rng: &mut SecureRng) -> Result<DealtRootKey, CryptoError> {
        if holders == 0 {
            return Err(CryptoError::Threshold("a root key needs at least one holder".into()));
        }
        let mut rng07 = rng.rand07();
        let secret_set = SecretKeySet::random(threshold_for(holders), &mut rng07);
        let public_key_set = encode(&secret_set.public_keys())?;
        let mut shares = Vec::with_capacity(holders);
        for index in 0..holders as u64 {
            let share = secret_set.secret_key_share(index);
            shares.push((index, SecretBytes::new(encode(&SerdeSecret(&share))?)));
        }
        drop(secret_set);
        Ok(DealtRootKey { public_key_set, shares })
    }

    fn setup(n: usize) -> (DealtRootKey, Vec<ShareHolder>, Wrapped, SecretBytes) {
        let mut rng = SecureRng::from_seed_u64(42);
        let dealt = deal_root_key(n, &mut rng).unwrap();
        let holders = dealt.shares.iter().map(|(i, s)| ShareHolder::from_bytes(*i, s).unwrap()).collect::<Vec<_>>();
        let material = SecretBytes::new(rng.bytes::<32>().to_vec());
        let wrapped = wrap(&dealt.public_key_set, &material, &mut rng).unwrap();
        (dealt, holders, wrapped, material)
    }

    #[test]
    fn one_share_alone_cannot_unwrap_but_a_majority_can() {
        let (dealt, holders, wrapped, material) = setup(3);
        assert_eq!(shares_needed(&dealt.public_key_set).unwrap(), 2);
        let share = |h: &ShareHolder| (h.index(), h.decryption_share(&wrapped.ciphertext).unwrap());
        let one: BTreeMap<_, _> = [share(&holders[0])].into_iter().collect();
        assert_eq!(
            unwrap(&dealt.public_key_set, &wrapped, &one),
            Err(CryptoError::NotEnoughShares { have: 1, need: 2 })
        );
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let two: BTreeMap<_, _> = pair.iter().map(|&i| share(&holders[i])).collect();
            assert_eq!(unwrap(&dealt.public_key_set, &wrapped, &two).unwrap(), material);
        }
    }

    #[test]
    fn a_corrupted_share_is_detected_and_named_then_bypassed() {
        let (dealt, holders, wrapped, material) = setup(5);
        let mut shares: BTreeMap<_, _> =
            holders.iter().map(|h| (h.index(), h.decryption_share(&wrapped.ciphertext).unwrap())).collect();
        // Replace holder 0's share by holder 1's: well-formed, but wrong for index 0.
        let forged = shares[&1].clone();
        shares.insert(0, forged);
        assert_eq!(unwrap(&dealt.public_key_set, &wrapped, &shares).unwrap(), material);
        let only_three: BTreeMap<_, _> = shares.iter().take(3).map(|(i, s)| (*i, s.clone())).collect();
        assert_eq!(
            unwrap(&dealt.public_key_set, &wrapped, &only_three),
            Err(CryptoError::KeyCheckMismatch { faulty: vec![0] })
        );
        // Bytes that are no share at all are named the same way, at once: with too few
        // well-formed shares left to combine, the caller drops them and waits for others.
        let mut garbled = only_three.clone();
        garbled.insert(1, vec![0xff; 7]);
        assert_eq!(
            unwrap(&dealt.public_key_set, &wrapped, &garbled),
            Err(CryptoError::KeyCheckMismatch { faulty: vec![1] })
        );
        garbled.insert(3, shares[&3].clone());
        garbled.insert(4, shares[&4].clone());
        assert_eq!(
            unwrap(&dealt.public_key_set, &wrapped, &garbled).unwrap(),
            material,
            "with t+1 good shares among them, both faulty ones are bypassed"
        );
    }
}
