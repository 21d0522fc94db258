//! The key store and its pure `apply`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::command::{Applied, Command, CommandResult, KeyChange};
use crate::key::{
    check_regions, validate_alias, Key, KeyRef, KeySpec, KeyState, KeyVersion, VersionState, WrappedMaterial,
    DELETION_DAYS_MAX, DELETION_DAYS_MIN,
};
use crate::keygen::KeyGenRound;
use crate::{KmsError, NodeId, DAY_MS};

/// How long an idempotency token is remembered (by command time).
pub(crate) const TOKEN_RETENTION_MS: u64 = DAY_MS;
const MAX_TAGS: usize = 50;
const MAX_DESCRIPTION_LEN: usize = 8192;
const MAX_ROTATION_DAYS: u32 = 2560;

/// The cluster root key as the log records it. Nobody ever held its secret: it was generated
/// by the holders together (`keygen`), and each derives its own share from the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKey {
    pub epoch: u64,
    /// Serialized threshold public key set.
    pub public_key_set: Vec<u8>,
    pub holders: BTreeMap<NodeId, RootHolder>,
    /// The key generation's complete parts and their acknowledgements, holding every holder's
    /// share sealed to its identity key.
    pub transcript: KeyGenRound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootHolder {
    pub share_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRecord {
    fingerprint: String,
    outcome: CommandResult,
    at_ms: u64,
}

/// The whole replicated state of the KMS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStore {
    keys: BTreeMap<Uuid, Key>,
    aliases: BTreeMap<String, Uuid>,
    tokens: BTreeMap<String, TokenRecord>,
    root: Option<RootKey>,
    /// The root key generation in progress, if any.
    keygen: Option<KeyGenRound>,
    /// A root key a resharing round made, waiting for `ReplaceRoot` to re-wrap everything
    /// under it. New material may already be wrapped under it.
    next_root: Option<RootKey>,
    /// The log key's versions, wrapped under the root key.
    log_keys: BTreeMap<u32, WrappedMaterial>,
    last_token_prune_ms: u64,
}

/// The part of the state a sealed node needs before it can read the rest: the root key (to
/// derive its share and give shares to peers), a key generation in progress, and the wrapped
/// log keys. Nothing in it is secret; snapshots keep it in the clear beside their sealed body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    pub root: Option<RootKey>,
    pub keygen: Option<KeyGenRound>,
    pub next_root: Option<RootKey>,
    pub log_keys: BTreeMap<u32, WrappedMaterial>,
}

impl KeyStore {
    pub fn root(&self) -> Option<&RootKey> {
        self.root.as_ref()
    }

    pub fn keygen(&self) -> Option<&KeyGenRound> {
        self.keygen.as_ref()
    }

    /// The root key a resharing round made, before `ReplaceRoot` makes it the root.
    pub fn next_root(&self) -> Option<&RootKey> {
        self.next_root.as_ref()
    }

    /// The root key new material is wrapped under: the next root while one waits, else the root.
    pub fn newest_root(&self) -> Option<&RootKey> {
        self.next_root.as_ref().or(self.root.as_ref())
    }

    /// The root key of `epoch`, if it is the root or the next root.
    pub fn root_of_epoch(&self, epoch: u64) -> Option<&RootKey> {
        [self.root.as_ref(), self.next_root.as_ref()].into_iter().flatten().find(|r| r.epoch == epoch)
    }

    /// Every wrapped entry under root epoch `epoch`: log key versions (`None`, version) and
    /// key versions (`Some(key)`, version). What `ReplaceRoot` must re-wrap.
    pub fn wrapped_under(&self, epoch: u64) -> Vec<(Option<Uuid>, u32, &WrappedMaterial)> {
        let log = self.log_keys.iter().filter(|(_, w)| w.root_epoch == epoch).map(|(v, w)| (None, *v, w));
        let keys = self.keys.values().flat_map(|k| {
            k.versions.iter().filter_map(move |v| {
                v.material.as_ref().filter(|m| m.root_epoch == epoch).map(|m| (Some(k.id), v.version, m))
            })
        });
        log.chain(keys).collect()
    }

    /// The wrapped versions of the log key.
    pub fn log_keys(&self) -> &BTreeMap<u32, WrappedMaterial> {
        &self.log_keys
    }

    pub fn keyring(&self) -> Keyring {
        Keyring {
            root: self.root.clone(),
            keygen: self.keygen.clone(),
            next_root: self.next_root.clone(),
            log_keys: self.log_keys.clone(),
        }
    }

    /// A store holding only `keyring`: what a sealed node knows before it can open its snapshot.
    pub fn from_keyring(keyring: Keyring) -> Self {
        Self {
            root: keyring.root,
            keygen: keyring.keygen,
            next_root: keyring.next_root,
            log_keys: keyring.log_keys,
            ..Self::default()
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Resolves an id or alias to a key.
    pub fn resolve(&self, key: &KeyRef) -> Result<&Key, KmsError> {
        let id = self.resolve_id(key)?;
        self.keys.get(&id).ok_or_else(|| KmsError::NotFound(format!("key {key} does not exist")))
    }

    fn resolve_id(&self, key: &KeyRef) -> Result<Uuid, KmsError> {
        match key {
            KeyRef::Id(id) => Ok(*id),
            KeyRef::Alias(name) => {
                self.aliases.get(name).copied().ok_or_else(|| {
                    KmsError::NotFound(format!("alias/{name} does not exist; create it or list aliases"))
                })
            }
        }
    }

    /// Aliases that point at `id`.
    pub fn aliases_of(&self, id: Uuid) -> Vec<String> {
        self.aliases.iter().filter(|(_, k)| **k == id).map(|(a, _)| a.clone()).collect()
    }

    /// Keys in id order, starting after `after`, at most `limit`.
    pub fn list(&self, after: Option<Uuid>, limit: usize) -> Vec<&Key> {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.keys.range((lower, Bound::Unbounded)).take(limit).map(|(_, k)| k).collect()
    }

    /// Keys whose automatic rotation is due at `now_ms`: `(id, current primary)`.
    pub fn rotations_due(&self, now_ms: u64) -> Vec<(Uuid, u32, KeySpec)> {
        self.keys
            .values()
            .filter(|k| k.state == KeyState::Enabled && k.next_rotation_ms.is_some_and(|t| t <= now_ms))
            .map(|k| (k.id, k.primary_version, k.spec))
            .collect()
    }

    /// Whether any key's deletion date has passed at `now_ms`.
    pub fn destruction_due(&self, now_ms: u64) -> bool {
        self.keys
            .values()
            .any(|k| matches!(k.state, KeyState::PendingDeletion { deletion_ms } if deletion_ms <= now_ms))
    }

    /// Applies one command. Deterministic: same state and command, same result, on every node.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        let now_ms = command.now_ms();
        self.prune_tokens(now_ms);
        if let Some((token, fingerprint)) = command.token() {
            if let Some(record) = self.tokens.get(token) {
                if record.fingerprint != fingerprint {
                    return Err(KmsError::Invalid(format!(
                        "idempotency token {token:?} was already used for a different request; use a new token"
                    )));
                }
                return record.outcome.clone();
            }
            // Material wrapped under a replaced root is refused before the token records
            // anything: the proposer re-wraps and proposes again under the same token.
            self.check_wrapped_epochs(command)?;
            let outcome = self.apply_inner(command);
            let record = TokenRecord { fingerprint, outcome: outcome.clone(), at_ms: now_ms };
            self.tokens.insert(token.to_string(), record);
            return outcome;
        }
        self.check_wrapped_epochs(command)?;
        self.apply_inner(command)
    }

    /// New material must be wrapped under the root or, while one waits, the next root; under
    /// an older root it is `StaleRoot`, which the proposer handles by wrapping again.
    fn check_wrapped_epochs(&self, command: &Command) -> Result<(), KmsError> {
        let wrapped = match command {
            Command::CreateKey { material, .. } | Command::RotateKey { material, .. } => material,
            Command::AddLogKey { key, .. } => key,
            _ => return Ok(()),
        };
        let Some(root) = &self.root else {
            return Err(KmsError::InvalidState("the cluster is not initialised: run keyquorum cluster init".into()));
        };
        if wrapped.root_epoch < root.epoch {
            return Err(KmsError::StaleRoot(format!(
                "material wrapped under root epoch {}, which was replaced by epoch {}",
                wrapped.root_epoch, root.epoch
            )));
        }
        if self.root_of_epoch(wrapped.root_epoch).is_none() {
            return Err(KmsError::Invalid(format!("material wrapped under unknown root epoch {}", wrapped.root_epoch)));
        }
        Ok(())
    }

    fn running_keygen(&mut self, epoch: u64) -> Result<&mut KeyGenRound, KmsError> {
        match &mut self.keygen {
            Some(round) if round.epoch == epoch => Ok(round),
            _ => Err(KmsError::InvalidState(format!("key generation epoch {epoch} is not running"))),
        }
    }

    fn prune_tokens(&mut self, now_ms: u64) {
        if now_ms < self.last_token_prune_ms.saturating_add(DAY_MS / 24) {
            return;
        }
        self.last_token_prune_ms = now_ms;
        self.tokens.retain(|_, r| r.at_ms.saturating_add(TOKEN_RETENTION_MS) > now_ms);
    }

    fn apply_inner(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::StartKeyGen { epoch, participants, .. } => {
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
            Command::KeyGenPart { epoch, dealer, part, .. } => {
                self.running_keygen(*epoch)?.add_part(*dealer, part)?;
                Ok(Applied::Done)
            }
            Command::KeyGenAck { epoch, dealer, acker, ack, .. } => {
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
            Command::ReplaceRoot { epoch, log_keys, materials, log_key, .. } => {
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
                    return Err(KmsError::InvalidState(format!(
                        "{missing} entries under root epoch {old} are not re-wrapped; re-read and retry"
                    )));
                }
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
                Ok(Applied::Done)
            }
            Command::AddLogKey { version, key, .. } => {
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
                    return Err(KmsError::StaleRoot(format!(
                        "log key wrapped under root epoch {} but the root is at {}",
                        key.root_epoch, root.epoch
                    )));
                }
                self.log_keys.insert(*version, key.clone());
                Ok(Applied::Done)
            }
            Command::CreateKey {
                key_id,
                spec,
                description,
                tags,
                alias,
                rotation_period_days,
                allowed_regions,
                material,
                now_ms,
                ..
            } => {
                self.check_material(*spec, material)?;
                check_description(description)?;
                check_regions(allowed_regions)?;
                check_tags(tags.len(), tags)?;
                check_rotation(*rotation_period_days)?;
                if self.keys.contains_key(key_id) {
                    return Err(KmsError::AlreadyExists(format!("key {key_id} already exists")));
                }
                if let Some(alias) = alias {
                    self.check_alias_free(alias)?;
                }
                let key = Key {
                    id: *key_id,
                    spec: *spec,
                    description: description.clone(),
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
                    created_ms: *now_ms,
                    updated_ms: *now_ms,
                };
                if let Some(alias) = alias {
                    self.aliases.insert(alias.clone(), *key_id);
                }
                self.keys.insert(*key_id, key.clone());
                Ok(Applied::Key(Box::new(key)))
            }
            Command::RotateKey { key, material, if_primary_is, now_ms, .. } => {
                let id = self.resolve_id(key)?;
                let spec = self.resolve(key)?.spec;
                self.check_material(spec, material)?;
                let k = self.key_mut(id)?;
                k.ensure_enabled().map_err(|e| KmsError::InvalidState(format!("cannot rotate: {e}")))?;
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
            Command::Update { key, change, now_ms, .. } => {
                let id = self.resolve_id(key)?;
                let k = self.key_mut(id)?;
                apply_change(k, change, *now_ms)?;
                k.updated_ms = *now_ms;
                Ok(Applied::Key(Box::new(k.clone())))
            }
            Command::CreateAlias { alias, key, .. } => {
                self.check_alias_free(alias)?;
                let k = self.resolve(key)?;
                k.ensure_mutable("create an alias")?;
                let id = k.id;
                self.aliases.insert(alias.clone(), id);
                Ok(Applied::Done)
            }
            Command::DeleteAlias { alias, .. } => {
                validate_alias(alias)?;
                self.aliases
                    .remove(alias)
                    .map(|_| Applied::Done)
                    .ok_or_else(|| KmsError::NotFound(format!("alias/{alias} does not exist")))
            }
            Command::DestroyDue { now_ms } => {
                let mut destroyed = Vec::new();
                for k in self.keys.values_mut() {
                    if let KeyState::PendingDeletion { deletion_ms } = k.state {
                        if deletion_ms <= *now_ms {
                            destroy(k, *now_ms);
                            destroyed.push(k.id);
                        }
                    }
                }
                self.aliases.retain(|_, id| !destroyed.contains(id));
                Ok(Applied::Destroyed(destroyed))
            }
        }
    }

    fn key_mut(&mut self, id: Uuid) -> Result<&mut Key, KmsError> {
        self.keys.get_mut(&id).ok_or_else(|| KmsError::NotFound(format!("key {id} does not exist")))
    }

    fn check_alias_free(&self, alias: &str) -> Result<(), KmsError> {
        validate_alias(alias)?;
        if self.aliases.contains_key(alias) {
            return Err(KmsError::AlreadyExists(format!(
                "alias/{alias} already exists; choose another name or delete the alias first"
            )));
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

/// Replaces a wrapping with the same material wrapped under another root: the key-check value
/// and public point stay, so a wrong re-wrap shows as a key-check mismatch at unwrap.
fn rewrap(w: &mut WrappedMaterial, epoch: u64, ciphertext: &[u8]) {
    w.root_epoch = epoch;
    w.ciphertext = ciphertext.to_vec();
}

fn destroy(k: &mut Key, now_ms: u64) {
    k.state = KeyState::Destroyed;
    for v in &mut k.versions {
        v.state = VersionState::Destroyed;
        v.material = None;
    }
    k.next_rotation_ms = None;
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
            k.ensure_mutable("enable the key")?;
            k.state = KeyState::Enabled;
        }
        KeyChange::Disable => {
            k.ensure_mutable("disable the key")?;
            k.state = KeyState::Disabled;
        }
        KeyChange::ScheduleDeletion { days } => {
            if !(DELETION_DAYS_MIN..=DELETION_DAYS_MAX).contains(days) {
                return Err(KmsError::Invalid(format!(
                    "deletion window must be {DELETION_DAYS_MIN}-{DELETION_DAYS_MAX} days, got {days}"
                )));
            }
            k.ensure_mutable("schedule deletion")?;
            k.state = KeyState::PendingDeletion { deletion_ms: now_ms + u64::from(*days) * DAY_MS };
        }
        KeyChange::CancelDeletion => match k.state {
            KeyState::PendingDeletion { .. } => k.state = KeyState::Disabled,
            _ => {
                return Err(KmsError::InvalidState(format!(
                    "cannot cancel deletion: key {} is not pending deletion",
                    k.id
                )))
            }
        },
        KeyChange::SetDescription(d) => {
            check_description(d)?;
            k.ensure_mutable("update the description")?;
            k.description = d.clone();
        }
        KeyChange::Tag(tags) => {
            let new = tags.keys().filter(|t| !k.tags.contains_key(*t)).count();
            check_tags(k.tags.len() + new, tags)?;
            k.ensure_mutable("tag the key")?;
            k.tags.extend(tags.iter().map(|(a, b)| (a.clone(), b.clone())));
        }
        KeyChange::Untag(names) => {
            k.ensure_mutable("untag the key")?;
            for n in names {
                k.tags.remove(n);
            }
        }
        KeyChange::SetRotationPolicy { period_days } => {
            check_rotation(*period_days)?;
            k.ensure_enabled().map_err(|e| KmsError::InvalidState(format!("cannot set rotation policy: {e}")))?;
            k.rotation_period_days = *period_days;
            k.next_rotation_ms = period_days.map(|d| now_ms + u64::from(d) * DAY_MS);
        }
        KeyChange::EnableVersion(v) | KeyChange::DisableVersion(v) => {
            k.ensure_mutable("change a version's state")?;
            let enable = matches!(change, KeyChange::EnableVersion(_));
            if !enable && *v == k.primary_version {
                return Err(KmsError::InvalidState(format!(
                    "cannot disable version {v}: it is the primary version of key {}; rotate the key first",
                    k.id
                )));
            }
            let version = k.version_mut(*v)?;
            if version.state == VersionState::Destroyed {
                return Err(KmsError::InvalidState(format!("version {v} is destroyed")));
            }
            version.state = if enable { VersionState::Enabled } else { VersionState::Disabled };
        }
        KeyChange::SetAllowedRegions(regions) => {
            check_regions(regions)?;
            k.ensure_mutable("change the allowed regions")?;
            k.allowed_regions = regions.clone();
        }
    }
    Ok(())
}
