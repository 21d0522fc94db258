//! Runs a root key generation through `KeyStore::apply`, as the nodes' commands would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crypto::dkg;
use crypto::identity::IdentityKey;
use crypto::SecureRng;
use raft::{Command, KeyStore, NodeId};

pub(crate) const T0: u64 = 1_700_000_000_000;

/// Participants `1..=n` with their identity keys.
pub(crate) fn participants(n: u64, rng: &mut SecureRng) -> (Vec<(NodeId, Vec<u8>)>, Vec<IdentityKey>) {
    let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
    ((1..=n).zip(keys.iter().map(IdentityKey::public)).collect(), keys)
}

/// Every participant deals a part and acknowledges every part, in order; returns the keys.
pub(crate) fn generate_root(store: &mut KeyStore, n: u64, seed: u64) -> Vec<IdentityKey> {
    let ids: Vec<NodeId> = (1..=n).collect();
    run_round(store, 1, &ids, &mut SecureRng::from_seed_u64(seed))
}

/// Runs key generation round `epoch` among `ids` (fresh identity keys) to its end: the root
/// key, or the next root key when one exists. Returns the participants' identity keys.
pub(crate) fn run_round(store: &mut KeyStore, epoch: u64, ids: &[NodeId], rng: &mut SecureRng) -> Vec<IdentityKey> {
    let keys: Vec<IdentityKey> = ids.iter().map(|_| IdentityKey::generate(rng)).collect();
    let members: Vec<(NodeId, Vec<u8>)> = ids.iter().copied().zip(keys.iter().map(IdentityKey::public)).collect();
    store.apply(&Command::StartKeyGen { epoch, participants: members.clone(), now_ms: T0 }).unwrap();
    let t = store.keygen().unwrap().threshold;
    let identities: Vec<Vec<u8>> = members.iter().map(|(_, k)| k.clone()).collect();
    for (dealer, _) in &members {
        let part = dkg::deal_part(t, &identities, rng).unwrap();
        store.apply(&Command::KeyGenPart { epoch, dealer: *dealer, part, now_ms: T0 }).unwrap();
    }
    for (dealer, _) in &members {
        for (index, (acker, _)) in members.iter().enumerate() {
            let Some(round) = store.keygen() else { return keys };
            let part = round.parts[dealer].part.clone();
            let ack = dkg::acknowledge_part(t, index, &keys[index], &identities, &part, rng).unwrap();
            store.apply(&Command::KeyGenAck { epoch, dealer: *dealer, acker: *acker, ack, now_ms: T0 }).unwrap();
        }
    }
    keys
}
