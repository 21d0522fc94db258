//! The keys, indexed by id (what calls name) and by owner (what a per-principal limit counts),
//! so enforcing `max_keys` or `max_aliases` is not a scan of every key. Only the by-id map is
//! replicated state: it is what is serialized, exactly as a plain map, and the by-owner index is
//! rebuilt from it when a snapshot is read. An owner never changes once a key exists, so
//! changing a key in place (`get_mut`, `values_mut`) cannot move it in the index; the
//! invariants check that it did not.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::key::Key;
use crate::Principal;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Keys {
    by_id: BTreeMap<Uuid, Key>,
    /// Derived from `by_id`, always: the keys of each owner (destroyed ones included).
    by_owner: BTreeMap<Principal, BTreeSet<Uuid>>,
}

impl Deref for Keys {
    type Target = BTreeMap<Uuid, Key>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

impl Keys {
    /// Adds a key that does not exist yet.
    pub(super) fn insert(&mut self, key: Key) {
        if let Some(owner) = &key.owner {
            self.by_owner.entry(owner.clone()).or_default().insert(key.id);
        }
        self.by_id.insert(key.id, key);
    }

    /// A key to change in place (its owner stays).
    pub(super) fn get_mut(&mut self, id: &Uuid) -> Option<&mut Key> {
        self.by_id.get_mut(id)
    }

    /// Every key, to change in place (their owners stay).
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Key> {
        self.by_id.values_mut()
    }

    /// The keys `owner` created, in id order.
    pub(super) fn owned_by<'a>(&'a self, owner: &Principal) -> impl Iterator<Item = &'a Key> + 'a {
        let ids = self.by_owner.get(owner).into_iter().flatten();
        ids.filter_map(|id| self.by_id.get(id))
    }

    /// Whether the by-owner index is exactly the keys' owners turned around.
    pub(super) fn index_matches(&self) -> bool {
        self.by_owner == Self::index(&self.by_id)
    }

    fn index(by_id: &BTreeMap<Uuid, Key>) -> BTreeMap<Principal, BTreeSet<Uuid>> {
        let mut by_owner: BTreeMap<Principal, BTreeSet<Uuid>> = BTreeMap::new();
        for (id, key) in by_id {
            if let Some(owner) = &key.owner {
                by_owner.entry(owner.clone()).or_default().insert(*id);
            }
        }
        by_owner
    }
}

impl Serialize for Keys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_id.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let by_id = BTreeMap::<Uuid, Key>::deserialize(d)?;
        let by_owner = Self::index(&by_id);
        Ok(Self { by_id, by_owner })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::key::{KeySpec, KeyState};

    fn key(id: u128, owner: Option<&str>) -> Key {
        Key {
            id: Uuid::from_u128(id),
            spec: KeySpec::Aes256GcmSiv,
            description: String::new(),
            tags: BTreeMap::new(),
            state: KeyState::Enabled,
            versions: Vec::new(),
            primary_version: 1,
            rotation_period_days: None,
            next_rotation_ms: None,
            allowed_regions: BTreeSet::new(),
            owner: owner.map(|o| o.parse().unwrap()),
            policy: Default::default(),
            grants: BTreeMap::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn owners_are_indexed_and_only_the_keys_are_serialized() {
        let mut keys = Keys::default();
        keys.insert(key(1, Some("client/a")));
        keys.insert(key(2, Some("client/b")));
        keys.insert(key(3, Some("client/a")));
        keys.insert(key(4, None));
        let a: Principal = "client/a".parse().unwrap();
        assert_eq!(keys.owned_by(&a).map(|k| k.id.as_u128()).collect::<Vec<_>>(), vec![1, 3]);
        assert!(keys.index_matches());

        // The serialized form is the plain by-id map's, and reading it back rebuilds the index.
        let bytes = serde_json::to_vec(&keys).unwrap();
        assert_eq!(bytes, serde_json::to_vec(&keys.by_id).unwrap());
        let back: Keys = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, keys);
        assert!(back.index_matches());
    }
}
