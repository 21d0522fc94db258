//! Per-principal quotas, kept in the replicated state so every node enforces the same ones:
//! call rates (token buckets each node keeps for the calls that reach it) and limits on what a
//! principal may hold in the replicated state (keys and aliases), which the state machine
//! enforces as it applies.
//!
//! A principal's limits are those of the most specific entry that names it: an override for
//! exactly that principal, else the override with the longest matching `prefix*` pattern,
//! else the cluster default.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{KmsError, Principal};

/// At most this many per-principal overrides.
pub const MAX_QUOTA_OVERRIDES: usize = 1000;
/// The highest rate a quota may set, per second.
pub const MAX_RATE_PER_SECOND: u32 = 10_000_000;

/// A token bucket's shape: refilled at `per_second`, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s (burst {})", self.per_second, self.burst)
    }
}

/// What one principal may do. `None`: no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Calls that use key material (Encrypt, Decrypt, ReEncrypt, GenerateDataKey, Sign,
    /// Verify, GenerateRandom), per node the calls reach.
    pub crypto: Option<Rate>,
    /// Every other KMS call (creating, describing, listing and changing keys, aliases,
    /// policies and grants), per node the calls reach.
    pub management: Option<Rate>,
    /// Keys the principal owns that are not destroyed.
    pub max_keys: Option<u32>,
    /// Aliases pointing at keys the principal owns.
    pub max_aliases: Option<u32>,
}

impl Default for Limits {
    /// The cluster defaults a new cluster starts with: rates above what one node of the sizes
    /// we measure serves (so they bind only a principal that would take a node for itself),
    /// and room for 10,000 keys and 10,000 aliases per principal.
    fn default() -> Self {
        Self {
            crypto: Some(Rate { per_second: 50_000, burst: 50_000 }),
            management: Some(Rate { per_second: 5_000, burst: 5_000 }),
            max_keys: Some(10_000),
            max_aliases: Some(10_000),
        }
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), KmsError> {
        for (what, rate) in [("crypto", &self.crypto), ("management", &self.management)] {
            if let Some(r) = rate {
                if r.per_second == 0
                    || r.per_second > MAX_RATE_PER_SECOND
                    || r.burst == 0
                    || r.burst > MAX_RATE_PER_SECOND
                {
                    return Err(KmsError::Invalid(format!(
                        "a {what} rate is 1-{MAX_RATE_PER_SECOND} calls per second with a burst of 1-{MAX_RATE_PER_SECOND} \
                         (to forbid calls, use key policies)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The cluster's quotas: a default and per-principal overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub default: Limits,
    /// By principal (`client/payments`) or pattern (`client/batch-*`).
    pub overrides: BTreeMap<String, Limits>,
}

impl Quotas {
    /// The limits that apply to `principal`, and the override they come from (`None`: the
    /// default).
    pub fn of(&self, principal: &Principal) -> (&Limits, Option<&str>) {
        let name = principal.to_string();
        if let Some((scope, limits)) = self.overrides.get_key_value(&name) {
            return (limits, Some(scope));
        }
        let longest = self
            .overrides
            .iter()
            .filter(|(p, _)| p.strip_suffix('*').is_some_and(|prefix| name.starts_with(prefix)))
            .max_by_key(|(p, _)| p.len());
        match longest {
            Some((scope, limits)) => (limits, Some(scope)),
            None => (&self.default, None),
        }
    }

    /// Sets the default (`scope` `None`) or an override; `limits` `None` removes the override.
    pub(crate) fn set(&mut self, scope: Option<&str>, limits: Option<&Limits>) -> Result<(), KmsError> {
        if let Some(l) = limits {
            l.validate()?;
        }
        match (scope, limits) {
            (None, Some(l)) => self.default = l.clone(),
            (None, None) => return Err(KmsError::Invalid("the default quota can be changed, not removed".into())),
            (Some(scope), Some(l)) => {
                check_scope(scope)?;
                if !self.overrides.contains_key(scope) && self.overrides.len() >= MAX_QUOTA_OVERRIDES {
                    return Err(KmsError::Invalid(format!("at most {MAX_QUOTA_OVERRIDES} quota overrides")));
                }
                self.overrides.insert(scope.to_string(), l.clone());
            }
            (Some(scope), None) => {
                if self.overrides.remove(scope).is_none() {
                    return Err(KmsError::NotFound(format!("no quota override for {scope}")));
                }
            }
        }
        Ok(())
    }
}

/// Where limits come from, as refusals name it: `scope` is the override [`Quotas::of`] found.
pub fn source(scope: Option<&str>) -> String {
    scope.map_or_else(|| "the cluster default".to_string(), |s| format!("the override for {s}"))
}

/// An override names an application or operator principal, or a `prefix*` of them.
pub fn check_scope(scope: &str) -> Result<(), KmsError> {
    let bad = || {
        KmsError::Invalid(format!(
            "bad quota scope {scope:?}: expected client/<name>, admin/<name>, or such a prefix ending in * \
             (client/batch-*)"
        ))
    };
    if scope.len() > 256 {
        return Err(bad());
    }
    match scope.strip_suffix('*') {
        Some(prefix) => {
            let named = prefix.strip_prefix("client/").or_else(|| prefix.strip_prefix("admin/"));
            if named.is_none_or(|rest| rest.contains(['/', '*'])) {
                return Err(bad());
            }
        }
        None => match Principal::parse(scope) {
            Ok(Principal::Client(_) | Principal::Admin(_)) => {}
            _ => return Err(bad()),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(keys: u32) -> Limits {
        Limits { max_keys: Some(keys), ..Limits::default() }
    }

    #[test]
    fn the_most_specific_entry_applies() {
        let mut q = Quotas::default();
        q.set(Some("client/batch-*"), Some(&limits(1))).unwrap();
        q.set(Some("client/batch-nightly*"), Some(&limits(2))).unwrap();
        q.set(Some("client/batch-nightly-7"), Some(&limits(3))).unwrap();
        let of = |q: &Quotas, p: &str| q.of(&Principal::parse(p).unwrap()).0.max_keys;
        assert_eq!(of(&q, "client/batch-x"), Some(1));
        assert_eq!(of(&q, "client/batch-nightly-1"), Some(2));
        assert_eq!(of(&q, "client/batch-nightly-7"), Some(3));
        assert_eq!(of(&q, "client/web"), Limits::default().max_keys);
        assert_eq!(q.of(&Principal::parse("client/batch-x").unwrap()).1, Some("client/batch-*"));
        q.set(Some("client/batch-nightly-7"), None).unwrap();
        assert_eq!(of(&q, "client/batch-nightly-7"), Some(2));
    }

    #[test]
    fn bad_scopes_and_rates_are_refused() {
        let mut q = Quotas::default();
        for scope in ["node/1", "node/*", "*", "client/a/b", "client/a*b*", "alice", "client/"] {
            assert!(q.set(Some(scope), Some(&limits(1))).is_err(), "{scope}");
        }
        let zero = Limits { crypto: Some(Rate { per_second: 0, burst: 1 }), ..Limits::default() };
        assert!(q.set(None, Some(&zero)).is_err());
        assert!(q.set(None, None).is_err());
        assert!(matches!(q.set(Some("client/x"), None), Err(KmsError::NotFound(_))));
        assert!(q.set(Some("client/*"), Some(&limits(1))).is_ok());
    }
}
