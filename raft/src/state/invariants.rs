//! What holds of the key store after every applied command, checked after each `apply` in
//! debug builds (the tests, the simulator, CI). A replica that broke one must not go on: the
//! check panics, naming the command and the numbers that disagree.

use super::KeyStore;
use crate::command::Command;
use crate::key::{KeySpec, KeyState, VersionState};

impl KeyStore {
    /// Every invariant of the key store, or a description of the first that does not hold.
    pub fn check_invariants(&self) -> Result<(), String> {
        let epochs: Vec<u64> = [&self.root, &self.next_root].into_iter().flatten().map(|r| r.epoch).collect();
        match (&self.root, &self.next_root) {
            (None, Some(next)) => return Err(format!("next root epoch {} waits with no root", next.epoch)),
            (Some(root), Some(next)) if next.epoch <= root.epoch => {
                return Err(format!("next root epoch {} is not after root epoch {}", next.epoch, root.epoch))
            }
            _ => {}
        }
        if let Some(root) = &self.root {
            let mut indices: Vec<u64> = root.holders.values().map(|h| h.share_index).collect();
            indices.sort_unstable();
            indices.dedup();
            if indices.len() != root.holders.len() {
                return Err(format!("root epoch {} gives two holders one share index", root.epoch));
            }
            if let Some(round) = &self.keygen {
                if round.epoch <= root.transcript.epoch {
                    return Err(format!(
                        "key generation round {} runs, but round {} made the root",
                        round.epoch, root.transcript.epoch
                    ));
                }
            }
        }
        for (i, (version, wrapped)) in self.log_keys.iter().enumerate() {
            if *version != i as u32 + 1 {
                return Err(format!("log key versions are not 1..n: version {version} at position {}", i + 1));
            }
            if !epochs.contains(&wrapped.root_epoch) {
                return Err(format!(
                    "log key v{version} is wrapped under root epoch {}, not one of {epochs:?}",
                    wrapped.root_epoch
                ));
            }
        }
        for (epoch, retired) in &self.retired {
            let root_epoch = self.root.as_ref().map_or(0, |r| r.epoch);
            if *epoch >= root_epoch || retired.root.epoch != *epoch {
                return Err(format!("retired root epoch {epoch} is not a replaced root (root epoch {root_epoch})"));
            }
            if let Some((v, w)) = retired.log_keys.iter().find(|(_, w)| w.root_epoch != *epoch) {
                return Err(format!(
                    "retired root epoch {epoch} keeps log key v{v} wrapped under epoch {}",
                    w.root_epoch
                ));
            }
        }
        if !self.aliases.index_matches() {
            return Err("the aliases' by-key index differs from the aliases".into());
        }
        if !self.keys.index_matches() {
            return Err("the keys' by-owner index differs from the keys' owners".into());
        }
        for (alias, id) in self.aliases.iter() {
            match self.keys.get(id) {
                None => return Err(format!("alias/{alias} points at key {id}, which does not exist")),
                Some(k) if k.state == KeyState::Destroyed => {
                    return Err(format!("alias/{alias} points at key {id}, which is destroyed"))
                }
                Some(_) => {}
            }
        }
        if !self.keys.is_empty() && self.root.is_none() {
            return Err(format!("{} keys exist without a root key", self.keys.len()));
        }
        for (id, k) in self.keys.iter() {
            if k.id != *id {
                return Err(format!("key {} is stored under id {id}", k.id));
            }
            if k.policy.statements.len() > crate::MAX_STATEMENTS || k.grants.len() > crate::MAX_GRANTS_PER_KEY {
                return Err(format!(
                    "key {id} holds {} policy statements and {} grants, over the limits",
                    k.policy.statements.len(),
                    k.grants.len()
                ));
            }
            if let Some((gid, g)) = k.grants.iter().find(|(gid, g)| **gid != g.id) {
                return Err(format!("key {id}: grant {} is stored under id {gid}", g.id));
            }
            if k.state == KeyState::Destroyed && !k.grants.is_empty() {
                return Err(format!("key {id} is destroyed but holds {} grants", k.grants.len()));
            }
            for (i, v) in k.versions.iter().enumerate() {
                if v.version != i as u32 + 1 {
                    return Err(format!("key {id}: version {} at position {}", v.version, i + 1));
                }
                match (&v.material, v.state) {
                    (Some(_), VersionState::Destroyed) => {
                        return Err(format!("key {id} version {} is destroyed but holds material", v.version))
                    }
                    (None, VersionState::Enabled | VersionState::Disabled) => {
                        return Err(format!("key {id} version {} is {:?} but holds no material", v.version, v.state))
                    }
                    (Some(m), _) => {
                        if !epochs.contains(&m.root_epoch) {
                            return Err(format!(
                                "key {id} version {} is wrapped under root epoch {}, not one of {epochs:?}",
                                v.version, m.root_epoch
                            ));
                        }
                        if (k.spec == KeySpec::EccNistP384) != m.public_key.is_some() {
                            return Err(format!("key {id} version {} does not fit spec {}", v.version, k.spec.name()));
                        }
                    }
                    (None, VersionState::Destroyed) => {}
                }
            }
            if k.state == KeyState::Destroyed {
                if let Some(v) = k.versions.iter().find(|v| v.state != VersionState::Destroyed) {
                    return Err(format!("key {id} is destroyed but version {} is {:?}", v.version, v.state));
                }
                if k.next_rotation_ms.is_some() {
                    return Err(format!("key {id} is destroyed but has a rotation due"));
                }
                continue;
            }
            let primary = k.primary_version;
            match k.versions.get((primary as usize).wrapping_sub(1)) {
                None => {
                    return Err(format!("key {id}: primary version {primary} of {} does not exist", k.versions.len()))
                }
                Some(v) if v.state != VersionState::Enabled => {
                    return Err(format!("key {id}: primary version {primary} is {:?}", v.state))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// In debug builds: panics if an invariant does not hold after applying `command`.
    pub(super) fn assert_invariants(&self, command: &Command) {
        if cfg!(debug_assertions) {
            if let Err(broken) = self.check_invariants() {
                panic!("key store invariant broken after applying {}: {broken}", command.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Key, KeyVersion, WrappedMaterial};

    fn store_with_a_key() -> (KeyStore, uuid::Uuid) {
        let mut s = KeyStore::default();
        let id = uuid::Uuid::from_u128(1);
        s.root = Some(crate::RootKey {
            epoch: 1,
            public_key_set: vec![],
            holders: Default::default(),
            transcript: crate::keygen::KeyGenRound {
                epoch: 1,
                threshold: 0,
                participants: vec![],
                parts: Default::default(),
            },
        });
        let material = WrappedMaterial { root_epoch: 1, ciphertext: vec![1], kcv: [0; 32], public_key: None };
        let version = KeyVersion { version: 1, state: VersionState::Enabled, created_ms: 0, material: Some(material) };
        let key = Key {
            id,
            spec: KeySpec::Aes256GcmSiv,
            description: String::new(),
            tags: Default::default(),
            state: KeyState::Enabled,
            versions: vec![version],
            primary_version: 1,
            rotation_period_days: None,
            next_rotation_ms: None,
            allowed_regions: Default::default(),
            owner: None,
            policy: Default::default(),
            grants: Default::default(),
            created_ms: 0,
            updated_ms: 0,
        };
        s.keys.insert(key);
        s.aliases.insert("a".into(), id);
        (s, id)
    }

    #[test]
    fn a_sound_store_passes_and_each_broken_rule_is_named() {
        let (s, id) = store_with_a_key();
        assert_eq!(s.check_invariants(), Ok(()));

        let mut dangling = s.clone();
        dangling.aliases.insert("b".into(), uuid::Uuid::from_u128(9));
        assert!(dangling.check_invariants().unwrap_err().contains("alias/b points at key"));

        let mut destroyed = s.clone();
        destroyed.keys.get_mut(&id).unwrap().versions[0].state = VersionState::Destroyed;
        assert!(destroyed.check_invariants().unwrap_err().contains("is destroyed but holds material"));

        let mut disabled_primary = s.clone();
        disabled_primary.keys.get_mut(&id).unwrap().versions[0].state = VersionState::Disabled;
        assert!(disabled_primary.check_invariants().unwrap_err().contains("primary version 1 is Disabled"));

        let mut stale = s.clone();
        stale.keys.get_mut(&id).unwrap().versions[0].material.as_mut().unwrap().root_epoch = 7;
        assert!(stale.check_invariants().unwrap_err().contains("wrapped under root epoch 7"));

        let mut missing_primary = s;
        missing_primary.keys.get_mut(&id).unwrap().primary_version = 2;
        assert!(missing_primary.check_invariants().unwrap_err().contains("primary version 2 of 1 does not exist"));
    }
}
