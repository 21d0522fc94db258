//! What the benchmarks share: a threshold root key made the way a cluster makes it (a
//! dealerless key generation among `n` participants), and a key store with keys in it.
//!
//! `cargo bench -p benches` measures (criterion, the `bench` profile); CI compiles the
//! benchmarks and runs each once (`cargo test -p benches --benches`), so they keep working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail loudly

use std::collections::{BTreeMap, BTreeSet};

use crypto::dkg::{acknowledge_part, deal_part, derive_share, public_key_set, CompletePart};
use crypto::identity::IdentityKey;
use crypto::threshold::{threshold_for, wrap, ShareHolder};
use crypto::{SecretBytes, SecureRng};
use raft::keygen::KeyGenRound;
use raft::{Command, KeySpec, KeyStore, WrappedMaterial};
use uuid::Uuid;

/// A root key among `n` holders: its public key set and every holder's share.
#[derive(Debug)]
pub struct Root {
    pub public_key_set: Vec<u8>,
    pub holders: Vec<ShareHolder>,
}

/// Generates a root key among `n` participants, every one dealing and acknowledging.
pub fn root(n: usize, rng: &mut SecureRng) -> Root {
    let t = threshold_for(n);
    let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
    let publics: Vec<Vec<u8>> = keys.iter().map(IdentityKey::public).collect();
    let parts: Vec<raft::keygen::CompletePartBytes> = (0..n)
        .map(|_| {
            let part = deal_part(t, &publics, rng).unwrap();
            let acks = (0..n).map(|j| (j, acknowledge_part(t, j, &keys[j], &publics, &part, rng).unwrap())).collect();
            (part, acks)
        })
        .collect();
    let complete: Vec<CompletePart<'_>> = parts.iter().map(|(part, acks)| CompletePart { part, acks }).collect();
    let public_key_set = public_key_set(t, n, &complete).unwrap();
    let holders = (0..n).map(|k| derive_share(t, n, k, &keys[k], &complete).unwrap()).collect();
    Root { public_key_set, holders }
}

/// Fresh 32-byte material wrapped under `root`, as a key version holds it.
pub fn wrapped(root: &Root, epoch: u64, rng: &mut SecureRng) -> WrappedMaterial {
    let material = SecretBytes::new(rng.bytes::<32>().to_vec());
    let w = wrap(&root.public_key_set, &material, rng).unwrap();
    WrappedMaterial { root_epoch: epoch, ciphertext: w.ciphertext, kcv: w.kcv, public_key: None }
}

/// A key store initialised by a real key generation round among three participants (its
/// transcript applied as the cluster's log would), with `keys` AES keys in it.
pub fn store_with_keys(keys: usize, rng: &mut SecureRng) -> (KeyStore, Root) {
    let n = 3;
    let t = threshold_for(n);
    let ids: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
    let participants: Vec<(u64, Vec<u8>)> = ids.iter().enumerate().map(|(i, k)| (i as u64 + 1, k.public())).collect();
    let publics: Vec<Vec<u8>> = participants.iter().map(|(_, p)| p.clone()).collect();
    let mut store = KeyStore::default();
    store.apply(&Command::StartKeyGen { epoch: 1, participants: participants.clone(), now_ms: 0 }).unwrap();
    // Parts and acknowledgements through the log until the round completes.
    'round: for dealer in 0..n {
        let part = deal_part(t, &publics, rng).unwrap();
        let dealer_id = dealer as u64 + 1;
        store.apply(&Command::KeyGenPart { epoch: 1, dealer: dealer_id, part: part.clone(), now_ms: 0 }).unwrap();
        for (acker, key) in ids.iter().enumerate() {
            let ack = acknowledge_part(t, acker, key, &publics, &part, rng).unwrap();
            let acker = acker as u64 + 1;
            store.apply(&Command::KeyGenAck { epoch: 1, dealer: dealer_id, acker, ack, now_ms: 0 }).unwrap();
            if store.root().is_some() {
                break 'round;
            }
        }
    }
    let root_key = store.root().cloned().expect("the round made a root key");
    let round: &KeyGenRound = &root_key.transcript;
    let complete = round.complete_parts();
    let parts: Vec<CompletePart<'_>> = complete.iter().map(|(part, acks)| CompletePart { part, acks }).collect();
    assert!(!parts.is_empty());
    let holders = (0..n).map(|k| derive_share(t, n, k, &ids[k], &parts).unwrap()).collect();
    let root = Root { public_key_set: root_key.public_key_set.clone(), holders };
    for i in 0..keys {
        store.apply(&create_key(Uuid::from_u128(i as u128 + 1), wrapped(&root, 1, rng), None)).unwrap();
    }
    (store, root)
}

/// A CreateKey command for an AES key.
pub fn create_key(key_id: Uuid, material: WrappedMaterial, alias: Option<String>) -> Command {
    Command::CreateKey {
        token: None,
        key_id,
        spec: KeySpec::Aes256GcmSiv,
        description: String::new(),
        tags: BTreeMap::new(),
        alias,
        rotation_period_days: None,
        allowed_regions: BTreeSet::new(),
        policy: None,
        material,
        by: None,
        now_ms: 1,
    }
}
