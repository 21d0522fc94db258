//! The root key generation as the log applies it: a round started, parts and acknowledgements
//! recorded once each, hostile entries refused, and the root installed by the acknowledgement
//! that completes the round — with shares that actually unwrap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use common::T0;
use crypto::dkg::{self, CompletePart};
use crypto::threshold;
use crypto::{SecretBytes, SecureRng};
use raft::{Command, KeyStore, KmsError};

mod common;

fn start(store: &mut KeyStore, epoch: u64, members: &[(u64, Vec<u8>)]) -> Result<raft::Applied, KmsError> {
    store.apply(&Command::StartKeyGen { epoch, participants: members.to_vec(), now_ms: T0 })
}

fn part(store: &mut KeyStore, epoch: u64, dealer: u64, part: Vec<u8>) -> Result<raft::Applied, KmsError> {
    store.apply(&Command::KeyGenPart { epoch, dealer, part, now_ms: T0 })
}

fn ack(store: &mut KeyStore, dealer: u64, acker: u64, ack: Vec<u8>) -> Result<raft::Applied, KmsError> {
    store.apply(&Command::KeyGenAck { epoch: 1, dealer, acker, ack, now_ms: T0 })
}

#[test]
fn the_completing_ack_installs_a_root_whose_shares_unwrap() {
    let mut store = KeyStore::default();
    let keys = common::generate_root(&mut store, 5, 7);
    assert!(store.keygen().is_none(), "the round ends with the root");
    let root = store.root().unwrap().clone();
    assert_eq!(root.holders.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let t = root.transcript.threshold;
    assert_eq!(t, 2);
    // Exactly t + 1 complete parts define the key; each holder derives a matching share.
    let complete = root.transcript.complete_parts();
    assert_eq!(complete.len(), t + 1);
    let parts: Vec<CompletePart<'_>> = complete.iter().map(|(part, acks)| CompletePart { part, acks }).collect();
    let holders: Vec<_> =
        keys.iter().enumerate().map(|(i, key)| dkg::derive_share(t, keys.len(), i, key, &parts).unwrap()).collect();
    let mut rng = SecureRng::from_seed_u64(1);
    let material = SecretBytes::new(vec![9; 32]);
    let wrapped = threshold::wrap(&root.public_key_set, &material, &mut rng).unwrap();
    let shares: BTreeMap<u64, Vec<u8>> = holders
        .iter()
        .skip(2)
        .map(|h| {
            assert!(h.matches(&root.public_key_set).unwrap());
            (h.index(), h.decryption_share(&wrapped.ciphertext).unwrap())
        })
        .collect();
    assert_eq!(threshold::unwrap(&root.public_key_set, &wrapped, &shares).unwrap(), material);
    // Later commands of the finished round are refused, and so is a new round.
    assert_eq!(ack(&mut store, 1, 2, vec![]).unwrap_err().kind(), "InvalidState");
    assert_eq!(start(&mut store, 1, &[(1, keys[0].public())]).unwrap_err().kind(), "AlreadyExists");
}

#[test]
fn entries_count_once_and_hostile_ones_are_refused() {
    let mut rng = SecureRng::from_seed_u64(2);
    let (members, keys) = common::participants(3, &mut rng);
    let identities: Vec<Vec<u8>> = members.iter().map(|(_, k)| k.clone()).collect();
    let mut store = KeyStore::default();

    // Starting: participants must be distinct with 48-byte identities; a retry is a no-op.
    assert_eq!(start(&mut store, 1, &[]).unwrap_err().kind(), "Invalid");
    assert_eq!(start(&mut store, 1, &[(1, vec![0; 3])]).unwrap_err().kind(), "Invalid");
    let twice = [members[0].clone(), members[0].clone()];
    assert_eq!(start(&mut store, 1, &twice).unwrap_err().kind(), "Invalid");
    start(&mut store, 1, &members).unwrap();
    start(&mut store, 1, &members).unwrap();
    assert_eq!(start(&mut store, 1, &members[..2]).unwrap_err().kind(), "InvalidState");

    // Parts: from participants only, well formed, for the running epoch; the first one stands.
    let t = store.keygen().unwrap().threshold;
    let p1 = dkg::deal_part(t, &identities, &mut rng).unwrap();
    assert_eq!(part(&mut store, 1, 9, p1.clone()).unwrap_err().kind(), "Invalid");
    assert_eq!(part(&mut store, 1, 1, b"junk".to_vec()).unwrap_err().kind(), "Invalid");
    assert_eq!(part(&mut store, 2, 1, p1.clone()).unwrap_err().kind(), "InvalidState");
    part(&mut store, 1, 1, p1.clone()).unwrap();
    part(&mut store, 1, 1, dkg::deal_part(t, &identities, &mut rng).unwrap()).unwrap();
    assert_eq!(store.keygen().unwrap().parts[&1].part, p1);

    // Acks: for an existing part, from participants, well formed; each counts once.
    let a = |i: usize, rng: &mut SecureRng| dkg::acknowledge_part(t, i, &keys[i], &identities, &p1, rng).unwrap();
    assert_eq!(ack(&mut store, 2, 1, a(0, &mut rng)).unwrap_err().kind(), "NotFound");
    assert_eq!(ack(&mut store, 1, 9, a(0, &mut rng)).unwrap_err().kind(), "Invalid");
    assert_eq!(ack(&mut store, 1, 1, b"junk".to_vec()).unwrap_err().kind(), "Invalid");
    ack(&mut store, 1, 1, a(0, &mut rng)).unwrap();
    ack(&mut store, 1, 1, a(0, &mut rng)).unwrap();
    assert_eq!(store.keygen().unwrap().parts[&1].acks.len(), 1);
    // One complete part (t + 1 = 2 acks) is not enough: t + 1 parts must be complete.
    ack(&mut store, 1, 2, a(1, &mut rng)).unwrap();
    assert!(store.root().is_none());

    // A stalled round is replaced by a higher epoch, never a lower one.
    start(&mut store, 3, &members).unwrap();
    assert!(store.keygen().unwrap().parts.is_empty());
    assert_eq!(start(&mut store, 2, &members).unwrap_err().kind(), "InvalidState");
}

#[test]
fn a_round_survives_a_snapshot() {
    let mut rng = SecureRng::from_seed_u64(3);
    let (members, _) = common::participants(3, &mut rng);
    let mut store = KeyStore::default();
    start(&mut store, 1, &members).unwrap();
    let t = store.keygen().unwrap().threshold;
    let identities: Vec<Vec<u8>> = members.iter().map(|(_, k)| k.clone()).collect();
    part(&mut store, 1, 2, dkg::deal_part(t, &identities, &mut rng).unwrap()).unwrap();
    let bytes = postcard::to_stdvec(&store).unwrap();
    let restored: KeyStore = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored, store);
}

#[test]
fn log_key_versions_follow_the_root_and_each_other() {
    let wrapped =
        |root_epoch| raft::WrappedMaterial { root_epoch, ciphertext: vec![1; 8], kcv: [2; 32], public_key: None };
    let add = |store: &mut KeyStore, version, epoch| {
        store.apply(&Command::AddLogKey { version, key: wrapped(epoch), now_ms: T0 })
    };
    let mut store = KeyStore::default();
    assert_eq!(add(&mut store, 1, 1).unwrap_err().kind(), "InvalidState", "no log key before the root key");
    common::generate_root(&mut store, 3, 11);
    assert_eq!(add(&mut store, 2, 1).unwrap_err().kind(), "AlreadyExists", "versions start at 1");
    assert_eq!(add(&mut store, 1, 2).unwrap_err().kind(), "Invalid", "wrapped under an unknown root epoch");
    add(&mut store, 1, 1).unwrap();
    assert_eq!(add(&mut store, 1, 1).unwrap_err().kind(), "AlreadyExists", "a second v1 (another proposer) loses");
    add(&mut store, 2, 1).unwrap();
    assert_eq!(store.log_keys().keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    // The keyring alone rebuilds a store that knows the same root and log keys.
    let sealed_view = KeyStore::from_keyring(store.keyring());
    assert_eq!(sealed_view.keyring(), store.keyring());
    assert_eq!(sealed_view.key_count(), 0);
}
