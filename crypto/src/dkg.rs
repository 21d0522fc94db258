//! Dealerless generation of the root key: a Joint-Feldman distributed key generation with
//! symmetric bivariate polynomials (the scheme of hbbft's `sync_key_gen`, built here on
//! threshold_crypto's `poly` module).
//!
//! Participants have indices `0..n` (their position in the member list) and identity keys.
//! With threshold `t`:
//!
//! 1. Every participant may **deal a part**: a random symmetric bivariate polynomial `f` of
//!    degree `t`, published as its commitment, plus row `f(k + 1, ·)` for every participant
//!    `k`, each sealed to `k`'s identity key.
//! 2. Participant `j` checks its row against the commitment and **acknowledges** the part with
//!    the values `f(j + 1, k + 1)` for every `k`, each sealed to `k`.
//! 3. Once the replicated log has fixed a set of *complete* parts (each acknowledged by `t + 1`
//!    participants; at least `t + 1` such parts), the root public key set is the sum of the
//!    parts' `f(0, ·)` commitments, and participant `k` derives its secret share
//!    `Σ f(0, k + 1)` by interpolating, for each part, the `t + 1` values sealed to it in the
//!    acknowledgements (symmetry gives `f(j + 1, k + 1) = f(k + 1, j + 1)`), each checked
//!    against the commitment first.
//!
//! Nobody ever holds the master secret `Σ f(0, 0)`: it would take `t + 1` shares. Every message
//! goes through the log, so a participant that was down while the others ran the protocol
//! derives its share later from what is sealed to it there. A dealer that sends one
//! participant a bad row cannot stop it either: it uses the others' acknowledgements.

use serde::{Deserialize, Serialize};
use threshold_crypto::ff::Field;
use threshold_crypto::group::CurveAffine;
use threshold_crypto::poly::{BivarCommitment, BivarPoly, Poly};
use threshold_crypto::serde_impl::FieldWrap;
use threshold_crypto::{Fr, G1Affine, PublicKeySet, SecretKeyShare};

use crate::identity::{seal_to, IdentityKey};
use crate::threshold::ShareHolder;
use crate::{decode, encode, CryptoError, SecretBytes, SecureRng};

/// A dealer's contribution: the commitment to its polynomial and one row per participant,
/// sealed to that participant's identity key. Public: it may sit in the replicated log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    commitment: BivarCommitment,
    rows: Vec<Vec<u8>>,
}

/// A participant's acknowledgement of one part: its row evaluated at every participant's
/// index, each value sealed to that participant.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ack {
    values: Vec<Vec<u8>>,
}

fn dkg_error(what: impl Into<String>) -> CryptoError {
    CryptoError::Dkg(what.into())
}

fn check_setup(threshold: usize, participants: usize) -> Result<(), CryptoError> {
    if participants == 0 || threshold >= participants {
        return Err(dkg_error(format!("threshold {threshold} needs more than {participants} participants")));
    }
    Ok(())
}

fn parse_part(threshold: usize, participants: usize, bytes: &[u8]) -> Result<Part, CryptoError> {
    let part: Part = decode(bytes, "DKG part")?;
    if part.commitment.degree() != threshold {
        return Err(dkg_error(format!("part has degree {}, expected {threshold}", part.commitment.degree())));
    }
    if part.rows.len() != participants {
        return Err(dkg_error(format!("part has {} rows for {participants} participants", part.rows.len())));
    }
    Ok(part)
}

/// Checks that `part` is a well-formed part for this setup (what the replicated log accepts);
/// whether its rows are right only their recipients can tell.
pub fn check_part(threshold: usize, participants: usize, part: &[u8]) -> Result<(), CryptoError> {
    check_setup(threshold, participants)?;
    parse_part(threshold, participants, part).map(|_| ())
}

/// Checks that `ack` is a well-formed acknowledgement for `participants` participants.
pub fn check_ack(participants: usize, ack: &[u8]) -> Result<(), CryptoError> {
    let ack: Ack = decode(ack, "DKG ack")?;
    if ack.values.len() != participants {
        return Err(dkg_error(format!("ack has {} values for {participants} participants", ack.values.len())));
    }
    Ok(())
}

fn seal_fr(identity_public: &[u8], value: &Fr, rng: &mut SecureRng) -> Result<Vec<u8>, CryptoError> {
    seal_to(identity_public, &SecretBytes::new(encode(&FieldWrap(value))?), rng)
}

/// `g1^value`: what a commitment evaluates to at the point whose secret value is `value`.
fn g1_of(value: Fr) -> threshold_crypto::G1 {
    G1Affine::one().mul(value)
}

/// Deals a new part for participants with these identity public keys (48 bytes each, in
/// participant order). Returns the serialized part.
pub fn deal_part(threshold: usize, identities: &[Vec<u8>], rng: &mut SecureRng) -> Result<Vec<u8>, CryptoError> {
    check_setup(threshold, identities.len())?;
    let mut rng07 = rng.rand07();
    // Zeroized on drop by threshold_crypto, like the rows taken from it.
    let poly = BivarPoly::random(threshold, &mut rng07);
    let mut rows = Vec::with_capacity(identities.len());
    for (k, identity) in identities.iter().enumerate() {
        let row = poly.row(k + 1);
        rows.push(seal_to(identity, &SecretBytes::new(encode(&row)?), rng)?);
    }
    encode(&Part { commitment: poly.commitment(), rows })
}

/// Checks participant `me`'s row of a part and returns its serialized acknowledgement.
/// Fails, naming the reason, when the row does not match the part's commitment: the dealer
/// is faulty, and `me` must not acknowledge.
pub fn acknowledge_part(
    threshold: usize,
    me: usize,
    my_identity: &IdentityKey,
    identities: &[Vec<u8>],
    part: &[u8],
    rng: &mut SecureRng,
) -> Result<Vec<u8>, CryptoError> {
    check_setup(threshold, identities.len())?;
    let part = parse_part(threshold, identities.len(), part)?;
    let sealed = part.rows.get(me).ok_or_else(|| dkg_error(format!("no row for participant {me}")))?;
    let row: Poly = decode(my_identity.open(sealed)?.expose(), "DKG row")
        .map_err(|_| dkg_error("the row sealed to us does not open: faulty dealer"))?;
    if row.degree() > threshold || row.commitment() != part.commitment.row(me + 1) {
        return Err(dkg_error("the row sealed to us does not match the part's commitment: faulty dealer"));
    }
    let mut values = Vec::with_capacity(identities.len());
    for (k, identity) in identities.iter().enumerate() {
        values.push(seal_fr(identity, &row.evaluate(k + 1), rng)?);
    }
    encode(&Ack { values })
}

/// A part the log has fixed as complete, with the acknowledgements it received
/// (`(acknowledging participant, serialized ack)`).
#[derive(Debug, Clone, Copy)]
pub struct CompletePart<'a> {
    pub part: &'a [u8],
    pub acks: &'a [(usize, Vec<u8>)],
}

/// The root public key set the complete parts define (serialized, as
/// [`crate::threshold`] takes it). Anyone can compute it: it needs no secret.
pub fn public_key_set(
    threshold: usize,
    participants: usize,
    complete: &[CompletePart<'_>],
) -> Result<Vec<u8>, CryptoError> {
    check_setup(threshold, participants)?;
    if complete.len() <= threshold {
        return Err(dkg_error(format!("{} complete parts; at least {} are needed", complete.len(), threshold + 1)));
    }
    let mut sum = Poly::zero().commitment();
    for c in complete {
        sum += parse_part(threshold, participants, c.part)?.commitment.row(0);
    }
    encode(&PublicKeySet::from(sum))
}

/// Participant `me`'s secret share of the root key defined by the complete parts. For each
/// part it opens the values sealed to it in the acknowledgements, keeps those that match the
/// commitment, and needs `t + 1` of them.
pub fn derive_share(
    threshold: usize,
    participants: usize,
    me: usize,
    my_identity: &IdentityKey,
    complete: &[CompletePart<'_>],
) -> Result<ShareHolder, CryptoError> {
    check_setup(threshold, participants)?;
    if me >= participants {
        return Err(dkg_error(format!("participant {me} is not among {participants}")));
    }
    let mut secret = Fr::zero();
    for (p, c) in complete.iter().enumerate() {
        let part = parse_part(threshold, participants, c.part)?;
        let mut samples: Vec<(usize, Fr)> = Vec::with_capacity(threshold + 1);
        for (from, ack) in c.acks {
            if samples.len() > threshold {
                break;
            }
            if *from >= participants || samples.iter().any(|(x, _)| *x == from + 1) {
                continue;
            }
            let Ok(ack) = decode::<Ack>(ack, "DKG ack") else { continue };
            let Some(sealed) = ack.values.get(me) else { continue };
            let Ok(opened) = my_identity.open(sealed) else { continue };
            let Ok(FieldWrap(value)) = decode::<FieldWrap<Fr>>(opened.expose(), "DKG value") else { continue };
            // f(from + 1, me + 1), checked against the dealer's commitment.
            if part.commitment.evaluate(from + 1, me + 1) == g1_of(value) {
                samples.push((from + 1, value));
            }
        }
        if samples.len() <= threshold {
            return Err(dkg_error(format!(
                "complete part {p}: only {} valid values for participant {me}; {} are needed",
                samples.len(),
                threshold + 1
            )));
        }
        // The polynomial x ↦ f(x, me + 1) at 0 is f(0, me + 1), this part's term of our share.
        let column = Poly::interpolate(samples);
        secret.add_assign(&column.evaluate(0));
    }
    let share = SecretKeyShare::from_mut(&mut secret);
    Ok(ShareHolder::from_secret_key_share(me as u64, share))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::threshold::{shares_needed, threshold_for, unwrap, wrap};

    /// A serialized part with its `(acknowledger, ack)` list.
    type Dealt = (Vec<u8>, Vec<(usize, Vec<u8>)>);

    struct Run {
        t: usize,
        keys: Vec<IdentityKey>,
        publics: Vec<Vec<u8>>,
        rng: SecureRng,
    }

    impl Run {
        fn new(n: usize, seed: u64) -> Self {
            let mut rng = SecureRng::from_seed_u64(seed);
            let keys: Vec<_> = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
            let publics = keys.iter().map(IdentityKey::public).collect();
            Self { t: threshold_for(n), keys, publics, rng }
        }

        fn deal(&mut self) -> Vec<u8> {
            deal_part(self.t, &self.publics, &mut self.rng).unwrap()
        }

        fn ack(&mut self, me: usize, part: &[u8]) -> Result<Vec<u8>, CryptoError> {
            acknowledge_part(self.t, me, &self.keys[me], &self.publics, part, &mut self.rng)
        }

        /// Parts dealt by `dealers`, each acknowledged by `ackers`.
        fn parts(&mut self, dealers: &[usize], ackers: &[usize]) -> Vec<Dealt> {
            dealers
                .iter()
                .map(|_| {
                    let part = self.deal();
                    let acks = ackers.iter().map(|&j| (j, self.ack(j, &part).unwrap())).collect();
                    (part, acks)
                })
                .collect()
        }
    }

    fn complete(parts: &[Dealt]) -> Vec<CompletePart<'_>> {
        parts.iter().map(|(part, acks)| CompletePart { part, acks }).collect()
    }

    /// Checks that every holder's share belongs to the key set, and that `t + 1` shares unwrap
    /// while `t` do not.
    fn assert_usable(pks: &[u8], holders: &[ShareHolder], rng: &mut SecureRng) {
        let need = shares_needed(pks).unwrap();
        for h in holders {
            assert!(h.matches(pks).unwrap(), "share {} does not match the key set", h.index());
        }
        let material = SecretBytes::new(rng.bytes::<32>().to_vec());
        let wrapped = wrap(pks, &material, rng).unwrap();
        let shares: BTreeMap<u64, Vec<u8>> =
            holders.iter().map(|h| (h.index(), h.decryption_share(&wrapped.ciphertext).unwrap())).collect();
        let first = |k: usize| shares.iter().take(k).map(|(i, s)| (*i, s.clone())).collect::<BTreeMap<_, _>>();
        assert_eq!(unwrap(pks, &wrapped, &first(need)).unwrap(), material);
        let last: BTreeMap<_, _> = shares.iter().rev().take(need).map(|(i, s)| (*i, s.clone())).collect();
        assert_eq!(unwrap(pks, &wrapped, &last).unwrap(), material);
        assert!(matches!(unwrap(pks, &wrapped, &first(need - 1)), Err(CryptoError::NotEnoughShares { .. })));
    }

    #[test]
    fn every_participant_derives_a_share_of_one_key_nobody_dealt() {
        let mut run = Run::new(4, 1);
        let (n, t) = (4, run.t);
        let parts = run.parts(&[0, 1, 2, 3], &[0, 1, 2, 3]);
        let complete = complete(&parts);
        let pks = public_key_set(t, n, &complete).unwrap();
        let holders: Vec<_> = (0..n).map(|k| derive_share(t, n, k, &run.keys[k], &complete).unwrap()).collect();
        assert_usable(&pks, &holders, &mut run.rng);
    }

    #[test]
    fn a_silent_dealer_and_a_participant_that_was_down_do_not_stop_it() {
        // Five participants (t = 2): dealer 4 never deals, participant 3 acknowledges nothing,
        // yet every participant, 3 included, derives its share from the others' acks.
        let mut run = Run::new(5, 2);
        let (n, t) = (5, run.t);
        let parts = run.parts(&[0, 1, 2], &[0, 1, 2]);
        let complete = complete(&parts);
        let pks = public_key_set(t, n, &complete).unwrap();
        let holders: Vec<_> = (0..n).map(|k| derive_share(t, n, k, &run.keys[k], &complete).unwrap()).collect();
        assert_usable(&pks, &holders, &mut run.rng);
    }

    #[test]
    fn a_participant_refuses_a_row_that_does_not_match_the_commitment() {
        let mut run = Run::new(3, 3);
        let part = run.deal();
        let mut decoded: Part = decode(&part, "part").unwrap();
        // The dealer seals participant 2's row to participant 2 but takes it from another part.
        let other: Part = decode(&run.deal(), "part").unwrap();
        decoded.rows[2] = other.rows[2].clone();
        let forged = encode(&decoded).unwrap();
        assert!(run.ack(0, &forged).is_ok());
        let err = run.ack(2, &forged).unwrap_err();
        assert!(err.to_string().contains("faulty dealer"), "{err}");
        // A row sealed to someone else does not open for us either.
        decoded.rows[1] = decoded.rows[0].clone();
        assert!(run.ack(1, &encode(&decoded).unwrap()).is_err());
    }

    #[test]
    fn forged_ack_values_are_skipped_and_too_few_good_ones_fail_clearly() {
        let mut run = Run::new(3, 4);
        let (n, t) = (3, run.t);
        let mut parts = run.parts(&[0, 1], &[0, 1, 2]);
        // Participant 1's ack of part 0 carries, for participant 0, a value from another part.
        let stray = run.parts(&[0], &[1]).remove(0).1.remove(0).1;
        let mut ack: Ack = decode(&parts[0].1[1].1, "ack").unwrap();
        ack.values[0] = decode::<Ack>(&stray, "ack").unwrap().values[0].clone();
        parts[0].1[1].1 = encode(&ack).unwrap();
        // Two good acks remain for participant 0 (t + 1 = 2): it still derives its share.
        let pks = public_key_set(t, n, &complete(&parts)).unwrap();
        let holders: Vec<_> = (0..n).map(|k| derive_share(t, n, k, &run.keys[k], &complete(&parts)).unwrap()).collect();
        assert_usable(&pks, &holders, &mut run.rng);
        // Drop a good one: now participant 0 has one valid value and says so.
        parts[0].1.remove(0);
        let err = derive_share(t, n, 0, &run.keys[0], &complete(&parts)).unwrap_err();
        assert!(err.to_string().contains("only 1 valid values for participant 0"), "{err}");
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let mut run = Run::new(3, 5);
        let (n, t) = (3, run.t);
        assert!(run.ack(0, b"not a part").is_err());
        let part = run.deal();
        assert!(acknowledge_part(t, 7, &run.keys[0], &run.publics, &part, &mut run.rng).is_err());
        assert!(deal_part(3, &run.publics, &mut run.rng).is_err());
        assert!(deal_part(1, &vec![vec![0u8; 48]; 3], &mut run.rng).is_err());
        // A part of the wrong degree.
        let low = deal_part(0, &run.publics, &mut run.rng).unwrap();
        assert!(run.ack(0, &low).is_err());
        let junk = [(0usize, b"junk".to_vec())];
        let parts = [CompletePart { part: b"junk", acks: &junk }, CompletePart { part: b"junk", acks: &junk }];
        assert!(public_key_set(t, n, &parts).is_err());
        assert!(derive_share(t, n, 0, &run.keys[0], &parts).is_err());
        assert!(public_key_set(t, n, &parts[..1]).is_err(), "t + 1 parts are needed");
        assert!(check_part(t, n, b"junk").is_err());
        assert!(check_part(t, n, &low).is_err());
        assert!(check_part(t, n, &run.deal()).is_ok());
        let ack = run.ack(0, &part).unwrap();
        assert!(check_ack(n, &ack).is_ok());
        assert!(check_ack(n + 1, &ack).is_err());
        assert!(check_ack(n, b"junk").is_err());
    }
}
