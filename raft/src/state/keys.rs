//! Keys and aliases in the key store: creating, rotating, changing and destroying keys.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::{KeyStore, MAX_DESCRIPTION_LEN, MAX_ROTATION_DAYS, MAX_TAGS};
use crate::command::{Applied, CommandResult, KeyChange};
use crate::error::{Action, Unusable};
use crate::key::{
    check_regions, validate_alias, Key, KeyRef, KeySpec, KeyState, KeyVersion, VersionState, WrappedMaterial,
    DELETION_DAYS_MAX, DELETION_DAYS_MIN,
};
use crate::policy::{Actor, KeyPolicy, Permission};
use crate::{KmsError, Principal, DAY_MS};

impl KeyStore {
    /// Creates a key with its first version.
    #[allow(clippy::too_many_arguments)] // one parameter per field of `Command::CreateKey`
    pub(super) fn create_key(
        &mut self,
        key_id: &Uuid,
        spec: &KeySpec,
        description: &str,
        tags: &BTreeMap<String, String>,
        alias: &Option<String>,
        rotation_period_days: &Option<u32>,
        allowed_regions: &BTreeSet<String>,
        policy: &Option<KeyPolicy>,
        material: &WrappedMaterial,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        let owner = by.as_ref().map(|a| a.principal.clone());
        if let Some(who @ (Principal::Admin(_) | Principal::Node(_))) = &owner {
            return Err(KmsError::AccessDenied {
                principal: who.to_string(),
                operation: "CreateKey (keys are created by client principals)".into(),
                key: None,
            });
        }
        let policy = policy.clone().unwrap_or_else(|| KeyPolicy::default_for(owner.as_ref()));
        policy.validate()?;
        self.check_material(*spec, material)?;
        check_description(description)?;
        check_regions(allowed_regions)?;
        check_tags(tags.len(), tags)?;
        check_rotation(*rotation_period_days)?;
        if self.keys.contains_key(key_id) {
            return Err(KmsError::KeyExists(*key_id));
        }
        if let Some(alias) = alias {
            self.check_alias_free(alias)?;
        }
        if let Some(owner) = &owner {
            self.check_room(owner, 1, u32::from(alias.is_some()))?;
        }
        let key = Key {
            id: *key_id,
            spec: *spec,
            description: description.to_string(),
            tags: tags.clone(),
            state: KeyState::Enabled,
            versions: vec![KeyVersion {
                version: 1,
                state: VersionState::Enabled,
                created_ms: *now_ms,
                material: Some(material.clone()),
            }],
            primary_version: 1,
            rotation_period_days: *rotation_period_days,
            next_rotation_ms: rotation_period_days.map(|d| now_ms + u64::from(d) * DAY_MS),
            allowed_regions: allowed_regions.clone(),
            owner,
            policy,
            grants: BTreeMap::new(),
            created_ms: *now_ms,
            updated_ms: *now_ms,
        };
        if let Some(alias) = alias {
            self.aliases.insert(alias.clone(), *key_id);
        }
        self.keys.insert(key.clone());
        Ok(Applied::Key(Box::new(key)))
    }

    /// Adds a new primary version (once, for an automatic rotation: `if_primary_is`).
    pub(super) fn rotate_key(
        &mut self,
        key: &KeyRef,
        material: &WrappedMaterial,
        if_primary_is: &Option<u32>,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        let id = self.resolve_id(key)?;
        let k = self.resolve(key)?;
        authorize(k, Permission::Rotate, by, *now_ms)?;
        let spec = k.spec;
        self.check_material(spec, material)?;
        let k = self.key_mut(id)?;
        k.ensure_enabled(Action::Rotate)?;
        if if_primary_is.is_some_and(|v| v != k.primary_version) {
            return Ok(Applied::Key(Box::new(k.clone())));
        }
        let version = k.versions.len() as u32 + 1;
        k.versions.push(KeyVersion {
            version,
            state: VersionState::Enabled,
            created_ms: *now_ms,
            material: Some(material.clone()),
        });
        k.primary_version = version;
        k.next_rotation_ms = k.rotation_period_days.map(|d| now_ms + u64::from(d) * DAY_MS);
        k.updated_ms = *now_ms;
        Ok(Applied::Key(Box::new(k.clone())))
    }

    /// Changes a key's metadata or state.
    pub(super) fn update(
        &mut self,
        key: &KeyRef,
        change: &KeyChange,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        let id = self.resolve_id(key)?;
        let k = self.key_mut(id)?;
        authorize(k, change.permission(), by, *now_ms)?;
        apply_change(k, change, *now_ms)?;
        k.updated_ms = *now_ms;
        Ok(Applied::Key(Box::new(k.clone())))
    }

    /// Points a new alias at a key.
    pub(super) fn create_alias(
        &mut self,
        alias: &str,
        key: &KeyRef,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        validate_alias(alias)?;
        let k = self.resolve(key)?;
        authorize(k, Permission::ManageAliases, by, *now_ms)?;
        self.check_alias_free(alias)?;
        k.ensure_mutable(Action::CreateAlias)?;
        let id = k.id;
        if let Some(owner) = k.owner.clone() {
            self.check_room(&owner, 0, 1)?;
        }
        self.aliases.insert(alias.to_string(), id);
        Ok(Applied::Done)
    }

    /// Removes an alias.
    pub(super) fn delete_alias(&mut self, alias: &str, by: &Option<Actor>, now_ms: &u64) -> CommandResult {
        validate_alias(alias)?;
        let k = self.resolve(&KeyRef::Alias(alias.to_string()))?;
        authorize(k, Permission::ManageAliases, by, *now_ms)?;
        self.aliases.remove(alias).map(|_| Applied::Done).ok_or_else(|| KmsError::AliasNotFound(alias.to_string()))
    }

    /// Destroys every key whose deletion date is at or before `now_ms`.
    pub(super) fn destroy_due(&mut self, now_ms: &u64) -> CommandResult {
        let mut destroyed = Vec::new();
        for k in self.keys.values_mut() {
            if let KeyState::PendingDeletion { deletion_ms } = k.state {
                if deletion_ms <= *now_ms {
                    destroy(k, *now_ms);
                    destroyed.push(k.id);
                }
            }
        }
        for id in &destroyed {
            self.aliases.remove_key(*id);
        }
        Ok(Applied::Destroyed(destroyed))
    }

    /// `owner` may own `keys` more keys and `aliases` more aliases within its quota: keys
    /// not destroyed, and aliases pointing at its keys.
    fn check_room(&self, owner: &Principal, keys: u32, aliases: u32) -> Result<(), KmsError> {
        let (limits, scope) = self.quotas.of(owner);
        if let Some(max) = limits.max_keys.filter(|_| keys > 0) {
            let live = self.keys.owned_by(owner).filter(|k| k.state != KeyState::Destroyed).count();
            if live as u64 + u64::from(keys) > u64::from(max) {
                return Err(KmsError::QuotaExceeded(format!(
                    "{owner} owns {live} keys that are not destroyed, the most its quota allows ({max}, {})",
                    crate::quota::source(scope)
                )));
            }
        }
        if let Some(max) = limits.max_aliases.filter(|_| aliases > 0) {
            let held: usize = self.keys.owned_by(owner).map(|k| self.aliases.count_of(k.id)).sum();
            if held as u64 + u64::from(aliases) > u64::from(max) {
                return Err(KmsError::QuotaExceeded(format!(
                    "{owner}'s keys have {held} aliases, the most its quota allows ({max}, {})",
                    crate::quota::source(scope)
                )));
            }
        }
        Ok(())
    }

    pub(super) fn key_mut(&mut self, id: Uuid) -> Result<&mut Key, KmsError> {
        self.keys.get_mut(&id).ok_or(KmsError::KeyNotFound(id))
    }

    fn check_alias_free(&self, alias: &str) -> Result<(), KmsError> {
        validate_alias(alias)?;
        if self.aliases.contains(alias) {
            return Err(KmsError::AliasExists(alias.to_string()));
        }
        Ok(())
    }

    /// The wrapping's epoch was checked before (`check_wrapped_epochs`); here, its fit.
    fn check_material(&self, spec: KeySpec, material: &WrappedMaterial) -> Result<(), KmsError> {
        if (spec == KeySpec::EccNistP384) != material.public_key.is_some() {
            return Err(KmsError::Invalid(format!("material does not fit key spec {}", spec.name())));
        }
        Ok(())
    }
}

/// Fails unless `by` may do `permission` to `key`. `None` is the cluster itself (automatic
/// rotation, destruction) or a node serving without authentication: not checked.
pub(super) fn authorize(key: &Key, permission: Permission, by: &Option<Actor>, now_ms: u64) -> Result<(), KmsError> {
    match by {
        None => Ok(()),
        Some(actor) => key.authorize(permission, &actor.request(None, now_ms)),
    }
}

fn destroy(k: &mut Key, now_ms: u64) {
    k.state = KeyState::Destroyed;
    for v in &mut k.versions {
        v.state = VersionState::Destroyed;
        v.material = None;
    }
    k.next_rotation_ms = None;
    k.grants.clear();
    k.updated_ms = now_ms;
}

fn check_description(description: &str) -> Result<(), KmsError> {
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(KmsError::Invalid(format!("description is longer than {MAX_DESCRIPTION_LEN} bytes")));
    }
    Ok(())
}

fn check_tags(total: usize, tags: &BTreeMap<String, String>) -> Result<(), KmsError> {
    if total > MAX_TAGS {
        return Err(KmsError::Invalid(format!("a key has at most {MAX_TAGS} tags")));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(KmsError::Invalid(format!("invalid tag {k:?}: keys are 1-128 bytes, values at most 256")));
        }
    }
    Ok(())
}

fn check_rotation(period_days: Option<u32>) -> Result<(), KmsError> {
    if let Some(d) = period_days {
        if !(1..=MAX_ROTATION_DAYS).contains(&d) {
            return Err(KmsError::Invalid(format!("rotation period must be 1-{MAX_ROTATION_DAYS} days, got {d}")));
        }
    }
    Ok(())
}

fn apply_change(k: &mut Key, change: &KeyChange, now_ms: u64) -> Result<(), KmsError> {
    match change {
        KeyChange::Enable => {
            k.ensure_mutable(Action::Enable)?;
            k.state = KeyState::Enabled;
        }
        KeyChange::Disable => {
            k.ensure_mutable(Action::Disable)?;
            k.state = KeyState::Disabled;
        }
        KeyChange::ScheduleDeletion { days } => {
            if !(DELETION_DAYS_MIN..=DELETION_DAYS_MAX).contains(days) {
                return Err(KmsError::Invalid(format!(
                    "deletion window must be {DELETION_DAYS_MIN}-{DELETION_DAYS_MAX} days, got {days}"
                )));
            }
            k.ensure_mutable(Action::ScheduleDeletion)?;
            k.state = KeyState::PendingDeletion { deletion_ms: now_ms + u64::from(*days) * DAY_MS };
        }
        KeyChange::CancelDeletion => match k.state {
            KeyState::PendingDeletion { .. } => k.state = KeyState::Disabled,
            _ => return Err(KmsError::NotPendingDeletion(k.id)),
        },
        KeyChange::SetDescription(d) => {
            check_description(d)?;
            k.ensure_mutable(Action::SetDescription)?;
            k.description = d.clone();
        }
        KeyChange::Tag(tags) => {
            let new = tags.keys().filter(|t| !k.tags.contains_key(*t)).count();
            check_tags(k.tags.len() + new, tags)?;
            k.ensure_mutable(Action::Tag)?;
            k.tags.extend(tags.iter().map(|(a, b)| (a.clone(), b.clone())));
        }
        KeyChange::Untag(names) => {
            k.ensure_mutable(Action::Untag)?;
            for n in names {
                k.tags.remove(n);
            }
        }
        KeyChange::SetRotationPolicy { period_days } => {
            check_rotation(*period_days)?;
            k.ensure_enabled(Action::SetRotationPolicy)?;
            k.rotation_period_days = *period_days;
            k.next_rotation_ms = period_days.map(|d| now_ms + u64::from(d) * DAY_MS);
        }
        KeyChange::EnableVersion(v) | KeyChange::DisableVersion(v) => {
            k.ensure_mutable(Action::ChangeVersion)?;
            let enable = matches!(change, KeyChange::EnableVersion(_));
            if !enable && *v == k.primary_version {
                return Err(KmsError::PrimaryVersion { key: k.id, version: *v });
            }
            let version = k.version_mut(*v)?;
            if version.state == VersionState::Destroyed {
                return Err(KmsError::VersionNotUsable { key: k.id, version: *v, state: Unusable::Destroyed });
            }
            version.state = if enable { VersionState::Enabled } else { VersionState::Disabled };
        }
        KeyChange::SetAllowedRegions(regions) => {
            check_regions(regions)?;
            k.ensure_mutable(Action::SetAllowedRegions)?;
            k.allowed_regions = regions.clone();
        }
    }
    Ok(())
}
