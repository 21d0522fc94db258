//! Custody of the root key, checked at the end of a run on the converged members:
//!
//! - every member serves with the same keyring (root key, next root, key generation round,
//!   wrapped log keys);
//! - nothing is wrapped under a root epoch older than the root (a rotation moved all of it);
//! - every member has erased the identity keys of rounds older than the one that made the
//!   root key, so its shares of replaced roots are gone;
//! - after resharing, a removed node's share combined with t current shares unwraps nothing
//!   (`removed_share`; the combination itself is done by the caller, with the nodes' shares).

use std::collections::BTreeMap;

use raft::Keyring;

use crate::history::Violation;

/// What the checker needs to know about one member.
#[derive(Debug, Clone)]
pub struct Custody {
    pub id: u64,
    pub keyring: Keyring,
    /// Root epochs under which the member's store holds wrapped entries.
    pub wrapped_epochs: Vec<u64>,
    /// Rounds the member still holds identity keys for.
    pub identity_rounds: Vec<u64>,
}

pub fn check(members: &[Custody]) -> Vec<Violation> {
    let mut out = Vec::new();
    let violation = |detail: String| Violation { invariant: "custody", detail };
    let mut keyrings: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for m in members {
        keyrings.entry(postcard::to_stdvec(&m.keyring).unwrap_or_default()).or_default().push(m.id);
    }
    if keyrings.len() > 1 {
        out.push(violation(format!(
            "members serve with {} different keyrings: {:?}",
            keyrings.len(),
            keyrings.values().collect::<Vec<_>>()
        )));
    }
    for m in members {
        let Some(root) = &m.keyring.root else { continue };
        if let Some(old) = m.wrapped_epochs.iter().find(|e| **e < root.epoch) {
            out.push(violation(format!(
                "n{} still holds entries wrapped under root epoch {old}, replaced by epoch {}",
                m.id, root.epoch
            )));
        }
        let round = root.transcript.epoch;
        if let Some(old) = m.identity_rounds.iter().find(|r| **r < round) {
            out.push(violation(format!(
                "n{} still holds its identity key of round {old}; the root key is from round {round}",
                m.id
            )));
        }
    }
    out
}

/// `unwrapped`: whether the removed node's share of its last root, combined with t shares of
/// the current root from current holders, unwrapped the newest log key.
pub fn removed_share(removed: u64, unwrapped: bool) -> Option<Violation> {
    unwrapped.then(|| Violation {
        invariant: "custody",
        detail: format!("removed node n{removed}'s share with t current shares unwrapped the current log key"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, rounds: Vec<u64>, epochs: Vec<u64>) -> Custody {
        Custody { id, keyring: Keyring::default(), wrapped_epochs: epochs, identity_rounds: rounds }
    }

    #[test]
    fn agreeing_members_pass_and_a_different_keyring_fails() {
        assert!(check(&[member(1, vec![1], vec![1]), member(2, vec![1], vec![1])]).is_empty());
        let mut other = member(3, vec![1], vec![1]);
        other
            .keyring
            .log_keys
            .insert(1, raft::WrappedMaterial { root_epoch: 1, ciphertext: vec![1], kcv: [0; 32], public_key: None });
        let v = check(&[member(1, vec![1], vec![1]), other]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(removed_share(4, true).is_some());
        assert!(removed_share(4, false).is_none());
    }

    #[test]
    fn old_wrappings_and_old_identity_keys_fail() {
        let transcript =
            raft::keygen::KeyGenRound { epoch: 3, threshold: 1, participants: vec![], parts: BTreeMap::new() };
        let root = raft::RootKey { epoch: 2, public_key_set: vec![], holders: BTreeMap::new(), transcript };
        let with_root =
            |m: Custody| Custody { keyring: Keyring { root: Some(root.clone()), ..Keyring::default() }, ..m };
        assert!(check(&[with_root(member(1, vec![3], vec![2]))]).is_empty());
        let v = check(&[with_root(member(1, vec![2, 3], vec![2]))]);
        assert!(v.len() == 1 && v[0].detail.contains("round 2"), "{v:?}");
        let v = check(&[with_root(member(1, vec![3], vec![1, 2]))]);
        assert!(v.len() == 1 && v[0].detail.contains("epoch 1"), "{v:?}");
    }
}
