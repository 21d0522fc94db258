//! The root key's lifecycle in the key store: key generation rounds, the root and the next
//! root, replacing one by the other, and the log key's versions.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{KeyStore, RetiredRoot, RootHolder, RootKey};
use crate::command::{Applied, CommandResult};
use crate::key::WrappedMaterial;
use crate::keygen::KeyGenRound;
use crate::{KmsError, NodeId};

impl KeyStore {
    fn running_keygen(&mut self, epoch: u64) -> Result<&mut KeyGenRound, KmsError> {
        match &mut self.keygen {
            Some(round) if round.epoch == epoch => Ok(round),
            _ => Err(KmsError::InvalidState(format!("key generation epoch {epoch} is not running"))),
        }
    }

    /// Starts a key generation round: the first root key, or (with a root) the next one.
    pub(super) fn start_keygen(&mut self, epoch: &u64, participants: &[(NodeId, Vec<u8>)]) -> CommandResult {
        // With a root key, a round is a resharing: it makes the next root key.
        if self.next_root.is_some() {
            return Err(KmsError::InvalidState(
                "a new root key is waiting to replace the current one; start another round after it has".into(),
            ));
        }
        if let Some(root) = &self.root {
            if *epoch <= root.transcript.epoch {
                return Err(KmsError::AlreadyExists(format!(
                    "key generation round {epoch} is over: round {} made the current root key",
                    root.transcript.epoch
                )));
            }
        }
        if let Some(round) = &self.keygen {
            if round.epoch == *epoch && round.participants == *participants {
                return Ok(Applied::Done); // a retried start
            }
            if round.epoch >= *epoch {
                return Err(KmsError::InvalidState(format!(
                    "key generation epoch {} is running; a new one needs a higher epoch",
                    round.epoch
                )));
            }
        }
        self.keygen = Some(KeyGenRound::new(*epoch, participants)?);
        Ok(Applied::Done)
    }

    /// Records a participant's part of the running round.
    pub(super) fn keygen_part(&mut self, epoch: &u64, dealer: &NodeId, part: &[u8]) -> CommandResult {
        self.running_keygen(*epoch)?.add_part(*dealer, part)?;
        Ok(Applied::Done)
    }

    /// Records an acknowledgement; the one that completes the round installs the root key it
    /// made (the root, or the next root beside it).
    pub(super) fn keygen_ack(&mut self, epoch: &u64, dealer: &NodeId, acker: &NodeId, ack: &[u8]) -> CommandResult {
        let Some(public_key_set) = self.running_keygen(*epoch)?.add_ack(*dealer, *acker, ack)? else {
            return Ok(Applied::Done);
        };
        let Some(round) = self.keygen.take() else { return Ok(Applied::Done) };
        let holders = round
            .participants
            .iter()
            .enumerate()
            .map(|(index, (id, _))| (*id, RootHolder { share_index: index as u64 }))
            .collect();
        let epoch = self.root.as_ref().map_or(1, |r| r.epoch + 1);
        let made = RootKey { epoch, public_key_set, holders, transcript: round.transcript() };
        if self.root.is_some() {
            self.next_root = Some(made);
        } else {
            self.root = Some(made);
        }
        Ok(Applied::Done)
    }

    /// Makes the waiting next root the root: everything under the old root re-wrapped under the
    /// new one, and a new log key version, all at once or not at all.
    pub(super) fn replace_root(
        &mut self,
        epoch: &u64,
        log_keys: &BTreeMap<u32, Vec<u8>>,
        materials: &BTreeMap<Uuid, BTreeMap<u32, Vec<u8>>>,
        log_key: &WrappedMaterial,
    ) -> CommandResult {
        let (Some(root), Some(next)) = (&self.root, &self.next_root) else {
            return Err(KmsError::InvalidState("no new root key is waiting to replace the root".into()));
        };
        if next.epoch != *epoch {
            return Err(KmsError::InvalidState(format!(
                "root epoch {epoch} is not the one waiting (epoch {})",
                next.epoch
            )));
        }
        if log_key.root_epoch != *epoch {
            return Err(KmsError::Invalid(format!("the new log key is not wrapped under root epoch {epoch}")));
        }
        // Everything still under the old root must be re-wrapped, or nothing is.
        let old = root.epoch;
        let missing = self
            .wrapped_under(old)
            .into_iter()
            .filter(|(key, version, _)| match key {
                None => !log_keys.contains_key(version),
                Some(id) => !materials.get(id).is_some_and(|m| m.contains_key(version)),
            })
            .count();
        if missing > 0 {
            return Err(KmsError::InvalidState(format!("{missing} entries under root epoch {old} are not re-wrapped")));
        }
        let old_log_keys = self.log_keys.iter().filter(|(_, w)| w.root_epoch == old).map(|(v, w)| (*v, w.clone()));
        let retired = RetiredRoot { root: root.clone(), log_keys: old_log_keys.collect() };
        self.retired.insert(old, retired);
        for (version, w) in self.log_keys.iter_mut().filter(|(_, w)| w.root_epoch == old) {
            rewrap(w, *epoch, &log_keys[version]);
        }
        for k in self.keys.values_mut() {
            for v in &mut k.versions {
                if let Some(w) = v.material.as_mut().filter(|w| w.root_epoch == old) {
                    rewrap(w, *epoch, &materials[&k.id][&v.version]);
                }
            }
        }
        self.root = self.next_root.take();
        let version = self.log_keys.last_key_value().map_or(1, |(v, _)| v + 1);
        self.log_keys.insert(version, log_key.clone());
        self.prune_retired();
        Ok(Applied::Done)
    }

    /// Records that `node` holds a durable snapshot whose keyring is at `root_epoch`, and
    /// lets go of the retired roots no holder needs any more.
    pub(super) fn snapshot_durable(&mut self, node: &NodeId, root_epoch: &u64) -> CommandResult {
        let known = self.root.as_ref().is_some_and(|r| *root_epoch <= r.epoch);
        if !known {
            return Err(KmsError::Invalid(format!("root epoch {root_epoch} is not one this cluster has had")));
        }
        let e = self.snapshot_epochs.entry(*node).or_default();
        *e = (*e).max(*root_epoch);
        self.prune_retired();
        Ok(Applied::Done)
    }

    /// Drops every retired root that all holders of the current root have a durable snapshot
    /// past, and the reports of nodes that hold no share of the current or next root.
    fn prune_retired(&mut self) {
        let holders: Vec<NodeId> =
            [&self.root, &self.next_root].into_iter().flatten().flat_map(|r| r.holders.keys().copied()).collect();
        let Some(root) = &self.root else { return };
        let past = |epoch: u64| {
            root.holders.keys().all(|h| self.snapshot_epochs.get(h).is_some_and(|reported| *reported > epoch))
        };
        let done: Vec<u64> = self.retired.keys().copied().filter(|e| past(*e)).collect();
        for epoch in done {
            self.retired.remove(&epoch);
        }
        self.snapshot_epochs.retain(|node, _| holders.contains(node));
    }

    /// Adds the next log key version, wrapped under the root.
    pub(super) fn add_log_key(&mut self, version: &u32, key: &WrappedMaterial) -> CommandResult {
        let Some(root) = &self.root else {
            return Err(KmsError::InvalidState("a log key needs the root key first".into()));
        };
        let next = self.log_keys.last_key_value().map_or(1, |(v, _)| v + 1);
        if *version != next {
            return Err(KmsError::AlreadyExists(format!(
                "log key version {version} cannot be added: the next version is {next}"
            )));
        }
        // Log keys follow the root; `ReplaceRoot` brings its own.
        if key.root_epoch != root.epoch {
            return Err(KmsError::StaleRoot { wrapped: key.root_epoch, root: root.epoch });
        }
        self.log_keys.insert(*version, key.clone());
        Ok(Applied::Done)
    }
}

/// Replaces a wrapping with the same material wrapped under another root: the key-check value
/// and public point stay, so a wrong re-wrap shows as a key-check mismatch at unwrap.
fn rewrap(w: &mut WrappedMaterial, epoch: u64, ciphertext: &[u8]) {
    w.root_epoch = epoch;
    w.ciphertext = ciphertext.to_vec();
}
