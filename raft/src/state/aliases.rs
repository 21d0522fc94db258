//! Aliases, indexed both ways: by name (what a call names) and by key (what describing or
//! listing a key shows), so neither is a scan of every alias. Only the by-name map is
//! replicated state: it is what is serialized, exactly as a plain map, and the by-key index is
//! rebuilt from it when a snapshot is read.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Aliases {
    by_name: BTreeMap<String, Uuid>,
    /// Derived from `by_name`, always: the aliases of each key that has any.
    by_key: BTreeMap<Uuid, BTreeSet<String>>,
}

impl Aliases {
    pub(super) fn get(&self, name: &str) -> Option<Uuid> {
        self.by_name.get(name).copied()
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Points `name` at `key` (away from any key it pointed at before).
    pub(super) fn insert(&mut self, name: String, key: Uuid) {
        if let Some(old) = self.by_name.insert(name.clone(), key) {
            self.unindex(&name, old);
        }
        self.by_key.entry(key).or_default().insert(name);
    }

    /// Removes `name`; the key it pointed at, if it existed.
    pub(super) fn remove(&mut self, name: &str) -> Option<Uuid> {
        let key = self.by_name.remove(name)?;
        self.unindex(name, key);
        Some(key)
    }

    /// Removes every alias of `key`.
    pub(super) fn remove_key(&mut self, key: Uuid) {
        for name in self.by_key.remove(&key).unwrap_or_default() {
            self.by_name.remove(&name);
        }
    }

    /// The aliases of `key`, in name order.
    pub(super) fn of(&self, key: Uuid) -> Vec<String> {
        self.by_key.get(&key).map(|names| names.iter().cloned().collect()).unwrap_or_default()
    }

    /// How many aliases point at `key`.
    pub(super) fn count_of(&self, key: Uuid) -> usize {
        self.by_key.get(&key).map_or(0, BTreeSet::len)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Uuid)> {
        self.by_name.iter()
    }

    /// Whether the by-key index is exactly the by-name map turned around.
    pub(super) fn index_matches(&self) -> bool {
        self.by_key == Self::index(&self.by_name)
    }

    fn unindex(&mut self, name: &str, key: Uuid) {
        if let Some(names) = self.by_key.get_mut(&key) {
            names.remove(name);
            if names.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    fn index(by_name: &BTreeMap<String, Uuid>) -> BTreeMap<Uuid, BTreeSet<String>> {
        let mut by_key: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
        for (name, key) in by_name {
            by_key.entry(*key).or_default().insert(name.clone());
        }
        by_key
    }
}

impl Serialize for Aliases {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_name.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Aliases {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let by_name = BTreeMap::<String, Uuid>::deserialize(d)?;
        let by_key = Self::index(&by_name);
        Ok(Self { by_name, by_key })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn both_ways_stay_in_step_and_only_names_are_serialized() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut aliases = Aliases::default();
        aliases.insert("x".into(), a);
        aliases.insert("y".into(), a);
        aliases.insert("z".into(), b);
        aliases.insert("y".into(), b); // re-pointed
        assert_eq!((aliases.of(a), aliases.of(b)), (vec!["x".to_string()], vec!["y".to_string(), "z".to_string()]));
        assert_eq!(aliases.remove("x"), Some(a));
        assert!(aliases.of(a).is_empty() && aliases.remove("x").is_none());
        aliases.remove_key(b);
        assert!(!aliases.contains("y") && !aliases.contains("z") && aliases.of(b).is_empty());
        assert!(aliases.index_matches());

        // The serialized form is the plain by-name map's (the snapshot format is unchanged),
        // and reading it back rebuilds the index.
        aliases.insert("w".into(), a);
        aliases.insert("v".into(), b);
        let plain: BTreeMap<String, Uuid> = aliases.iter().map(|(n, k)| (n.clone(), *k)).collect();
        let bytes = serde_json::to_vec(&aliases).unwrap();
        assert_eq!(bytes, serde_json::to_vec(&plain).unwrap());
        let back: Aliases = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, aliases);
        assert!(back.index_matches());
    }
}
