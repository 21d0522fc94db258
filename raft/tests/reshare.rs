//! Resharing as the log applies it: a round over a new member set makes the next root key
//! beside the current one; `ReplaceRoot` re-wraps everything under it in one step (or nothing);
//! material wrapped under the replaced root is refused without being recorded under its
//! token; and a removed holder's share does not combine with the new holders' shares.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use common::T0;
use crypto::dkg::{self, CompletePart};
use crypto::identity::IdentityKey;
use crypto::threshold::{self, ShareHolder};
use crypto::{CryptoError, SecretBytes, SecureRng};
use raft::{Applied, Command, KeyRef, KeySpec, KeyStore, RootKey, WrappedMaterial};
use uuid::Uuid;

mod common;

fn holders(root: &RootKey, keys: &[IdentityKey]) -> Vec<ShareHolder> {
    let t = root.transcript.threshold;
    let complete = root.transcript.complete_parts();
    let parts: Vec<CompletePart<'_>> = complete.iter().map(|(part, acks)| CompletePart { part, acks }).collect();
    keys.iter().enumerate().map(|(i, key)| dkg::derive_share(t, keys.len(), i, key, &parts).unwrap()).collect()
}

fn wrap(root: &RootKey, material: &SecretBytes, rng: &mut SecureRng) -> WrappedMaterial {
    let w = threshold::wrap(&root.public_key_set, material, rng).unwrap();
    WrappedMaterial { root_epoch: root.epoch, ciphertext: w.ciphertext, kcv: w.kcv, public_key: None }
}

fn unwrap(root: &RootKey, w: &WrappedMaterial, holders: &[&ShareHolder]) -> Result<SecretBytes, CryptoError> {
    let shares: BTreeMap<u64, Vec<u8>> =
        holders.iter().map(|h| (h.index(), h.decryption_share(&w.ciphertext).unwrap())).collect();
    let wrapped = threshold::Wrapped { ciphertext: w.ciphertext.clone(), kcv: w.kcv };
    threshold::unwrap(&root.public_key_set, &wrapped, &shares)
}

fn create(store: &mut KeyStore, id: Uuid, token: &str, material: WrappedMaterial) -> raft::CommandResult {
    store.apply(&Command::CreateKey {
        token: Some(token.into()),
        key_id: id,
        spec: KeySpec::Aes256GcmSiv,
        description: String::new(),
        tags: BTreeMap::new(),
        alias: None,
        rotation_period_days: None,
        allowed_regions: Default::default(),
        policy: None,
        material,
        by: None,
        now_ms: T0,
    })
}

fn material_of(store: &KeyStore, id: Uuid, version: u32) -> WrappedMaterial {
    store.resolve(&KeyRef::Id(id)).unwrap().version(version).unwrap().material.clone().unwrap()
}

#[test]
fn a_new_member_set_gets_a_new_root_and_everything_moves_in_one_step() {
    let mut rng = SecureRng::from_seed_u64(21);
    let mut store = KeyStore::default();
    // Root epoch 1 among nodes 1..=5 (t = 2), a log key and two keys under it.
    let old_keys = common::run_round(&mut store, 1, &[1, 2, 3, 4, 5], &mut rng);
    let old = store.root().unwrap().clone();
    let log_key = SecretBytes::new(vec![7; 32]);
    store.apply(&Command::AddLogKey { version: 1, key: wrap(&old, &log_key, &mut rng), now_ms: T0 }).unwrap();
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let (ma, mb) = (SecretBytes::new(vec![0xA; 32]), SecretBytes::new(vec![0xB; 32]));
    create(&mut store, a, "a", wrap(&old, &ma, &mut rng)).unwrap();
    create(&mut store, b, "b", wrap(&old, &mb, &mut rng)).unwrap();

    // Node 5 leaves, node 6 joins: round 2 among 1, 2, 3, 4, 6 makes the next root.
    let new_keys = common::run_round(&mut store, 2, &[1, 2, 3, 4, 6], &mut rng);
    let next = store.next_root().unwrap().clone();
    assert_eq!((store.root().unwrap().epoch, next.epoch), (1, 2));
    assert_eq!(store.newest_root().unwrap().epoch, 2);
    assert_eq!(store.keyring().next_root.as_ref(), Some(&next), "sealed nodes see it too");
    // No third round while one root waits to replace the other; never a finished round again.
    let again = Command::StartKeyGen { epoch: 3, participants: vec![], now_ms: T0 };
    assert_eq!(store.apply(&again).unwrap_err().kind(), "InvalidState");

    // Meanwhile, material under either root is accepted.
    let c = Uuid::from_u128(3);
    let mc = SecretBytes::new(vec![0xC; 32]);
    create(&mut store, c, "c", wrap(&next, &mc, &mut rng)).unwrap();

    // The proposer re-wraps what is under epoch 1 (it unwraps with old shares; here, directly).
    let under_old = store.wrapped_under(1);
    assert_eq!(under_old.len(), 3, "log key v1, key a v1, key b v1: {under_old:?}");
    let rewrap = |m: &SecretBytes, rng: &mut SecureRng| wrap(&next, m, rng).ciphertext;
    let log_keys = BTreeMap::from([(1, rewrap(&log_key, &mut rng))]);
    let mut materials = BTreeMap::from([(a, BTreeMap::from([(1, rewrap(&ma, &mut rng))]))]);
    let fresh_log_key = SecretBytes::new(vec![8; 32]);
    let replace = |materials: &BTreeMap<Uuid, BTreeMap<u32, Vec<u8>>>, rng: &mut SecureRng| Command::ReplaceRoot {
        epoch: 2,
        log_keys: log_keys.clone(),
        materials: materials.clone(),
        log_key: wrap(&next, &fresh_log_key, rng),
        now_ms: T0,
    };
    // Missing key b: nothing moves.
    let before = store.clone();
    assert_eq!(store.apply(&replace(&materials, &mut rng)).unwrap_err().kind(), "InvalidState");
    assert_eq!(store, before);
    materials.insert(b, BTreeMap::from([(1, rewrap(&mb, &mut rng))]));
    assert_eq!(store.apply(&replace(&materials, &mut rng)).unwrap(), Applied::Done);

    assert_eq!(store.root().unwrap(), &next);
    assert!(store.next_root().is_none());
    assert!(store.wrapped_under(1).is_empty());
    assert_eq!(store.log_keys().keys().copied().collect::<Vec<_>>(), vec![1, 2], "a fresh log key version");
    assert_eq!(store.log_keys()[&2].root_epoch, 2);

    // Everything opens with t + 1 new shares, key-check values unchanged.
    let new_holders = holders(&next, &new_keys);
    let three: Vec<&ShareHolder> = new_holders.iter().skip(2).collect();
    assert_eq!(unwrap(&next, &store.log_keys()[&1], &three).unwrap(), log_key);
    assert_eq!(unwrap(&next, &material_of(&store, a, 1), &three).unwrap(), ma);
    assert_eq!(unwrap(&next, &material_of(&store, b, 1), &three).unwrap(), mb);
    assert_eq!(unwrap(&next, &material_of(&store, c, 1), &three).unwrap(), mc);

    // Node 5's old share with t current shares unwraps nothing: wrong key, caught by the KCV.
    let removed = &holders(&old, &old_keys)[4];
    let mixed = [removed, &new_holders[0], &new_holders[1]];
    for w in [material_of(&store, a, 1), store.log_keys()[&2].clone()] {
        assert!(matches!(unwrap(&next, &w, &mixed), Err(CryptoError::KeyCheckMismatch { .. })));
    }

    // The replaced root stays retired, with log key v1 as it was wrapped under it, so a node
    // restarted from a snapshot before the replacement can still read its state: its old
    // holders' shares still open that wrapping.
    let retired = &store.retired()[&1];
    assert_eq!(retired.root, old);
    assert_eq!(retired.log_keys.keys().copied().collect::<Vec<_>>(), vec![1]);
    let old_three: Vec<ShareHolder> = holders(&old, &old_keys).into_iter().take(3).collect();
    assert_eq!(unwrap(&old, &retired.log_keys[&1], &old_three.iter().collect::<Vec<_>>()).unwrap(), log_key);
    assert_eq!(store.keyring().retired, store.retired().clone(), "sealed nodes see it too");
    // It is let go once every holder of the new root has a durable snapshot past it.
    let durable = |node, root_epoch| Command::SnapshotDurable { node, root_epoch, now_ms: T0 };
    for node in [1, 2, 3, 4] {
        store.apply(&durable(node, 2)).unwrap();
    }
    store.apply(&durable(5, 2)).unwrap();
    assert!(store.retired().contains_key(&1), "node 6 has not said so yet (node 5 holds nothing now)");
    store.apply(&durable(6, 1)).unwrap();
    assert!(store.retired().contains_key(&1), "a snapshot under the old root does not count");
    assert_eq!(store.apply(&durable(6, 3)).unwrap_err().kind(), "Invalid", "no such root yet");
    store.apply(&durable(6, 2)).unwrap();
    assert!(store.retired().is_empty());

    // Late material under the replaced root is refused, and its token stays free.
    let d = Uuid::from_u128(4);
    let md = SecretBytes::new(vec![0xD; 32]);
    assert_eq!(create(&mut store, d, "d", wrap(&old, &md, &mut rng)).unwrap_err().kind(), "StaleRoot");
    let created = create(&mut store, d, "d", wrap(&next, &md, &mut rng)).unwrap();
    assert!(matches!(created, Applied::Key(k) if k.id == d));
    // A replayed ReplaceRoot is refused.
    assert_eq!(store.apply(&replace(&materials, &mut rng)).unwrap_err().kind(), "InvalidState");
    // The store and keyring survive a snapshot round trip.
    let restored: KeyStore = postcard::from_bytes(&postcard::to_stdvec(&store).unwrap()).unwrap();
    assert_eq!(restored, store);
}
