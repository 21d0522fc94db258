//! A KMS key, its versions and the checks that decide whether it may be used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Action, Unusable};
use crate::policy::{Grant, KeyPolicy};
use crate::{KmsError, Principal};

pub const DELETION_DAYS_MIN: u32 = 7;
pub const DELETION_DAYS_MAX: u32 = 30;
pub const DELETION_DAYS_DEFAULT: u32 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySpec {
    Aes256GcmSiv,
    EccNistP384,
}

impl KeySpec {
    pub fn usage(self) -> KeyUsage {
        match self {
            KeySpec::Aes256GcmSiv => KeyUsage::EncryptDecrypt,
            KeySpec::EccNistP384 => KeyUsage::SignVerify,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KeySpec::Aes256GcmSiv => "AES_256_GCM_SIV",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyUsage {
    EncryptDecrypt,
    SignVerify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    /// Destroyed at (or after) `deletion_ms`, unless cancelled.
    PendingDeletion {
        deletion_ms: u64,
    },
    Destroyed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionState {
    Enabled,
    Disabled,
    Destroyed,
}

/// Key material wrapped under the cluster root key: never plaintext in the log or on disk.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedMaterial {
    /// Which root key (epoch) wrapped it.
    pub root_epoch: u64,
    /// Threshold ciphertext of the 32-byte AES key or the 48-byte P-384 scalar.
    pub ciphertext: Vec<u8>,
    /// Key-check value of the material.
    pub kcv: [u8; 32],
    /// SEC1 public point, for P-384 keys.
    pub public_key: Option<Vec<u8>>,
}

impl fmt::Debug for WrappedMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedMaterial {{ root_epoch: {}, {} bytes }}", self.root_epoch, self.ciphertext.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub version: u32,
    pub state: VersionState,
    pub created_ms: u64,
    /// `None` once destroyed.
    pub material: Option<WrappedMaterial>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub id: Uuid,
    pub spec: KeySpec,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub state: KeyState,
    /// Version `n` is `versions[n - 1]`.
    pub versions: Vec<KeyVersion>,
    pub primary_version: u32,
    pub rotation_period_days: Option<u32>,
    pub next_rotation_ms: Option<u64>,
    /// The regions whose nodes may hold this key's material unwrapped (and make it); empty:
    /// every region. Share holders refuse shares to nodes elsewhere.
    pub allowed_regions: BTreeSet<String>,
    /// The principal that created the key (`None`: made without authentication).
    pub owner: Option<Principal>,
    /// Who may do what to the key (`policy.rs`).
    pub policy: KeyPolicy,
    /// Live grants by id; expired ones are dropped by the next write to the key.
    pub grants: BTreeMap<Uuid, Grant>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// At most this many regions in a key's `allowed_regions`.
pub const MAX_ALLOWED_REGIONS: usize = 16;
/// A region name's length limit (the same names nodes are configured with).
pub const MAX_REGION_LEN: usize = 64;

/// Checks a set of region names: at most [`MAX_ALLOWED_REGIONS`], each 1-64 characters of
/// letters, digits, `.`, `_` and `-`.
pub fn check_regions(regions: &BTreeSet<String>) -> Result<(), KmsError> {
    if regions.len() > MAX_ALLOWED_REGIONS {
        return Err(KmsError::Invalid(format!(
            "allowed_regions names {} regions; the limit is {MAX_ALLOWED_REGIONS}",
            regions.len()
        )));
    }
    for r in regions {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if r.is_empty() || r.len() > MAX_REGION_LEN || !r.chars().all(valid_char) {
            return Err(KmsError::Invalid(format!(
                "invalid region name {r:?}: 1-{MAX_REGION_LEN} letters, digits, '.', '_' or '-'"
            )));
        }
    }
    Ok(())
}

impl Key {
    /// Whether a node in `region` may hold this key's material.
    pub fn allows_region(&self, region: &str) -> bool {
        self.allowed_regions.is_empty() || self.allowed_regions.contains(region)
    }

    pub fn version(&self, version: u32) -> Result<&KeyVersion, KmsError> {
        version
            .checked_sub(1)
            .and_then(|i| self.versions.get(i as usize))
            .ok_or(KmsError::VersionNotFound { key: self.id, version })
    }

    pub(crate) fn version_mut(&mut self, version: u32) -> Result<&mut KeyVersion, KmsError> {
        let id = self.id;
        version
            .checked_sub(1)
            .and_then(|i| self.versions.get_mut(i as usize))
            .ok_or(KmsError::VersionNotFound { key: id, version })
    }

    /// Fails unless the key is enabled: `action` needs it to be.
    pub fn ensure_enabled(&self, action: Action) -> Result<(), KmsError> {
        match self.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::KeyNotUsable { key: self.id, state: Unusable::Disabled, action }),
            KeyState::PendingDeletion { .. } => {
                Err(KmsError::KeyNotUsable { key: self.id, state: Unusable::PendingDeletion, action })
            }
            KeyState::Destroyed => Err(KmsError::KeyNotUsable { key: self.id, state: Unusable::Destroyed, action }),
        }
    }

    fn ensure_usage(&self, usage: KeyUsage) -> Result<(), KmsError> {
        if self.spec.usage() != usage {
            return Err(KmsError::Invalid(format!(
                "key {} is a {} key and cannot be used for {}",
                self.id,
                self.spec.name(),
                match usage {
                    KeyUsage::EncryptDecrypt => "encryption",
                    KeyUsage::SignVerify => "signing",
                }
            )));
        }
        Ok(())
    }

    /// The version a new encryption (or signature) uses: the primary, which must be enabled.
    pub fn primary_for(&self, usage: KeyUsage) -> Result<&KeyVersion, KmsError> {
        self.ensure_usage(usage)?;
        self.ensure_enabled(Action::Use)?;
        let primary = self.version(self.primary_version)?;
        usable(self, primary)?;
        Ok(primary)
    }

    /// The version a decryption (or verification) of existing data uses.
    pub fn version_for(&self, usage: KeyUsage, version: u32) -> Result<&KeyVersion, KmsError> {
        self.ensure_usage(usage)?;
        self.ensure_enabled(Action::Use)?;
        let v = self.version(version)?;
        usable(self, v)?;
        Ok(v)
    }

    /// Whether `action` is allowed in the key's current state (the transition table's rows).
    pub(crate) fn ensure_mutable(&self, action: Action) -> Result<(), KmsError> {
        match self.state {
            KeyState::Enabled | KeyState::Disabled => Ok(()),
            KeyState::PendingDeletion { .. } => {
                Err(KmsError::KeyNotUsable { key: self.id, state: Unusable::PendingDeletion, action })
            }
            KeyState::Destroyed => Err(KmsError::KeyNotUsable { key: self.id, state: Unusable::Destroyed, action }),
        }
    }
}

fn usable<'k>(key: &Key, v: &'k KeyVersion) -> Result<&'k KeyVersion, KmsError> {
    match v.state {
        VersionState::Enabled => Ok(v),
        VersionState::Disabled => {
            Err(KmsError::VersionNotUsable { key: key.id, version: v.version, state: Unusable::Disabled })
        }
        VersionState::Destroyed => {
            Err(KmsError::VersionNotUsable { key: key.id, version: v.version, state: Unusable::Destroyed })
        }
    }
}

/// How a request names a key: its id, or `alias/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRef {
    Id(Uuid),
    /// The alias name without the `alias/` prefix.
    Alias(String),
}

impl FromStr for KeyRef {
    type Err = KmsError;
    fn from_str(s: &str) -> Result<Self, KmsError> {
        if let Some(name) = s.strip_prefix("alias/") {
            validate_alias(name)?;
            return Ok(KeyRef::Alias(name.to_string()));
        }
        Uuid::parse_str(s).map(KeyRef::Id).map_err(|_| {
            KmsError::Invalid(format!("{s:?} is not a key: name a key by its id (a UUID) or as alias/NAME"))
        })
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Id(id) => write!(f, "{id}"),
            KeyRef::Alias(name) => write!(f, "alias/{name}"),
        }
    }
}

/// Alias names: 1–256 characters of `A-Z a-z 0-9 / _ -`, not starting with `/`.
pub fn validate_alias(name: &str) -> Result<(), KmsError> {
    let ok_len = (1..=256).contains(&name.len());
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
    if !ok_len || !ok_chars || name.starts_with('/') {
        return Err(KmsError::Invalid(format!(
            "invalid alias name {name:?}: use 1-256 characters of A-Z a-z 0-9 / _ - (not starting with /)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs_parse_ids_and_aliases_and_reject_the_rest() {
        let id = Uuid::from_u128(5);
        assert_eq!(id.to_string().parse::<KeyRef>(), Ok(KeyRef::Id(id)));
        assert_eq!("alias/app".parse::<KeyRef>(), Ok(KeyRef::Alias("app".into())));
        for bad in ["", "app", "alias/", "alias/a b", "alias//x", "not-a-uuid"] {
            assert_eq!(bad.parse::<KeyRef>().map_err(|e| e.kind()), Err("Invalid"), "{bad}");
        }
    }
}
