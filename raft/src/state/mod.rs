//! The key store and its pure `apply`: the state (`mod.rs`), the root key's lifecycle
//! (`root.rs`), keys and aliases (`keys.rs`), and the invariants that hold after every applied
//! command (`invariants.rs`).

mod access;
mod aliases;
mod invariants;
mod keys;
mod keyset;
mod root;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::command::{Applied, Command, CommandResult};
use crate::key::{Key, KeyRef, KeySpec, KeyState, WrappedMaterial};
use crate::keygen::KeyGenRound;
use crate::policy::Actor;
use crate::quota::Limits;
use crate::quota::Quotas;
use crate::{KmsError, NodeId, Principal, DAY_MS};

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

/// A root key `ReplaceRoot` replaced, with the log key versions as they were wrapped under it.
/// Kept until every holder of the current root has a durable snapshot past the replacement: a
/// node that restarts from an older snapshot reads its state with these log key wrappings,
/// so t + 1 holders must still be able to give shares of them (simulator seed 5820: holders
/// that erased their old shares at once left nodes restarted from older snapshots sealed for
/// good, and with them the quorum the new root needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredRoot {
    pub root: RootKey,
    pub log_keys: BTreeMap<u32, WrappedMaterial>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRecord {
    fingerprint: String,
    outcome: Remembered,
    at_ms: u64,
}

/// A tokened command's outcome as its token remembers it. A key's outcome keeps what a replay
/// answers with, the key's metadata as the first apply left it, without its versions, policy
/// and grants (a copy of every version's material per token made the records of a
/// often-rotated key grow with the square of its versions); the versions a replay shows are
/// the key's first `versions`, as they are now (versions are only ever appended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Remembered {
    Key { key: Box<Key>, versions: u32 },
    Other(CommandResult),
}

impl Remembered {
    fn of(outcome: &CommandResult) -> Self {
        match outcome {
            Ok(Applied::Key(k)) => {
                let key =
                    Key { versions: Vec::new(), policy: Default::default(), grants: BTreeMap::new(), ..(**k).clone() };
                Remembered::Key { key: Box::new(key), versions: k.versions.len() as u32 }
            }
            other => Remembered::Other(other.clone()),
        }
    }

    fn replay(&self, keys: &keyset::Keys) -> CommandResult {
        match self {
            Remembered::Key { key, versions } => {
                let mut k = (**key).clone();
                if let Some(now) = keys.get(&key.id) {
                    k.versions = now.versions.iter().take(*versions as usize).cloned().collect();
                }
                Ok(Applied::Key(Box::new(k)))
            }
            Remembered::Other(outcome) => outcome.clone(),
        }
    }
}

/// The whole replicated state of the KMS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStore {
    keys: keyset::Keys,
    aliases: aliases::Aliases,
    tokens: BTreeMap<String, TokenRecord>,
    root: Option<RootKey>,
    /// The root key generation in progress, if any.
    keygen: Option<KeyGenRound>,
    /// A root key a resharing round made, waiting for `ReplaceRoot` to re-wrap everything
    /// under it. New material may already be wrapped under it.
    next_root: Option<RootKey>,
    /// The log key's versions, wrapped under the root key.
    log_keys: BTreeMap<u32, WrappedMaterial>,
    /// Replaced roots some holder may still need shares of, by epoch.
    retired: BTreeMap<u64, RetiredRoot>,
    /// The root epoch of the newest durable snapshot each holder has reported.
    snapshot_epochs: BTreeMap<NodeId, u64>,
    last_token_prune_ms: u64,
    /// Each node's latest audit chain head.
    audit_heads: BTreeMap<NodeId, AuditHead>,
    /// Per-principal rates and limits (`quota.rs`).
    quotas: Quotas,
}

/// A node's audit chain head as replicated: its record `seq` has hash `hash` (hex), reported
/// at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
    pub at_ms: u64,
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
    pub retired: BTreeMap<u64, RetiredRoot>,
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

    /// Replaced roots some holder may still need shares of, with their log key wrappings.
    pub fn retired(&self) -> &BTreeMap<u64, RetiredRoot> {
        &self.retired
    }

    /// The cluster's quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Every node's latest audit chain head.
    pub fn audit_heads(&self) -> &BTreeMap<NodeId, AuditHead> {
        &self.audit_heads
    }

    /// The root epoch of the newest durable snapshot `node` has reported.
    pub fn snapshot_epoch(&self, node: NodeId) -> Option<u64> {
        self.snapshot_epochs.get(&node).copied()
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
            retired: self.retired.clone(),
        }
    }

    /// A store holding only `keyring`: what a sealed node knows before it can open its snapshot.
    pub fn from_keyring(keyring: Keyring) -> Self {
        Self {
            root: keyring.root,
            keygen: keyring.keygen,
            next_root: keyring.next_root,
            log_keys: keyring.log_keys,
            retired: keyring.retired,
            ..Self::default()
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Resolves an id or alias to a key.
    pub fn resolve(&self, key: &KeyRef) -> Result<&Key, KmsError> {
        let id = self.resolve_id(key)?;
        self.keys.get(&id).ok_or(KmsError::KeyNotFound(id))
    }

    fn resolve_id(&self, key: &KeyRef) -> Result<Uuid, KmsError> {
        match key {
            KeyRef::Id(id) => Ok(*id),
            KeyRef::Alias(name) => self.aliases.get(name).ok_or_else(|| KmsError::AliasNotFound(name.clone())),
        }
    }

    /// Aliases that point at `id`.
    pub fn aliases_of(&self, id: Uuid) -> Vec<String> {
        self.aliases.of(id)
    }

    /// Keys in id order, starting after `after`.
    pub fn keys_after(&self, after: Option<Uuid>) -> impl Iterator<Item = &Key> {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.keys.range((lower, Bound::Unbounded)).map(|(_, k)| k)
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
    /// In debug builds, every invariant is checked afterwards (`invariants.rs`).
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        let outcome = self.apply_unchecked(command);
        self.assert_invariants(command);
        outcome
    }

    fn apply_unchecked(&mut self, command: &Command) -> CommandResult {
        let now_ms = command.now_ms();
        self.prune_tokens(now_ms);
        if let Some((token, fingerprint)) = command.token() {
            // Scoped by principal: one principal's token never replays another's result.
            let who = command.by().map_or_else(|| "-".to_string(), |a| a.principal.to_string());
            let scoped = format!("{who} {token}");
            if let Some(record) = self.tokens.get(&scoped) {
                if record.fingerprint != fingerprint {
                    return Err(KmsError::TokenReused(token.to_string()));
                }
                return record.outcome.replay(&self.keys);
            }
            // Material wrapped under a replaced root is refused before the token records
            // anything: the proposer re-wraps and proposes again under the same token.
            self.check_wrapped_epochs(command)?;
            let outcome = self.apply_inner(command);
            let record = TokenRecord { fingerprint, outcome: Remembered::of(&outcome), at_ms: now_ms };
            self.tokens.insert(scoped, record);
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
            return Err(KmsError::NotInitialized);
        };
        if wrapped.root_epoch < root.epoch {
            return Err(KmsError::StaleRoot { wrapped: wrapped.root_epoch, root: root.epoch });
        }
        if self.root_of_epoch(wrapped.root_epoch).is_none() {
            return Err(KmsError::Invalid(format!("material wrapped under unknown root epoch {}", wrapped.root_epoch)));
        }
        Ok(())
    }

    fn prune_tokens(&mut self, now_ms: u64) {
        if now_ms < self.last_token_prune_ms.saturating_add(DAY_MS / 24) {
            return;
        }
        self.last_token_prune_ms = now_ms;
        self.tokens.retain(|_, r| r.at_ms.saturating_add(TOKEN_RETENTION_MS) > now_ms);
    }

    /// One command, by family: the root key's lifecycle (`root.rs`), keys and aliases
    /// (`keys.rs`).
    fn apply_inner(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::StartKeyGen { epoch, participants, .. } => self.start_keygen(epoch, participants),
            Command::KeyGenPart { epoch, dealer, part, .. } => self.keygen_part(epoch, dealer, part),
            Command::KeyGenAck { epoch, dealer, acker, ack, .. } => self.keygen_ack(epoch, dealer, acker, ack),
            Command::ReplaceRoot { epoch, log_keys, materials, log_key, .. } => {
                self.replace_root(epoch, log_keys, materials, log_key)
            }
            Command::AddLogKey { version, key, .. } => self.add_log_key(version, key),
            Command::CreateKey {
                key_id,
                spec,
                description,
                tags,
                alias,
                rotation_period_days,
                allowed_regions,
                policy,
                material,
                by,
                now_ms,
                ..
            } => self.create_key(
                key_id,
                spec,
                description,
                tags,
                alias,
                rotation_period_days,
                allowed_regions,
                policy,
                material,
                by,
                now_ms,
            ),
            Command::RotateKey { key, material, if_primary_is, by, now_ms, .. } => {
                self.rotate_key(key, material, if_primary_is, by, now_ms)
            }
            Command::Update { key, change, by, now_ms, .. } => self.update(key, change, by, now_ms),
            Command::CreateAlias { alias, key, by, now_ms } => self.create_alias(alias, key, by, now_ms),
            Command::DeleteAlias { alias, by, now_ms } => self.delete_alias(alias, by, now_ms),
            Command::PutKeyPolicy { key, policy, by, now_ms } => self.put_policy(key, policy, by, now_ms),
            Command::CreateGrant { key, grant, by, now_ms, .. } => self.create_grant(key, grant, by, now_ms),
            Command::RevokeGrant { key, grant, retire, by, now_ms } => {
                self.revoke_grant(key, grant, *retire, by, now_ms)
            }
            Command::DestroyDue { now_ms, .. } => self.destroy_due(now_ms),
            Command::SnapshotDurable { node, root_epoch, .. } => self.snapshot_durable(node, root_epoch),
            Command::AuditHead { node, seq, hash, now_ms } => self.audit_head(*node, *seq, hash, *now_ms),
            Command::SetQuota { scope, limits, by, .. } => self.set_quota(scope.as_deref(), limits.as_ref(), by),
        }
    }

    /// Quotas are the operators' to set.
    fn set_quota(&mut self, scope: Option<&str>, limits: Option<&Limits>, by: &Option<Actor>) -> CommandResult {
        if let Some(who) = by.as_ref().map(|a| &a.principal).filter(|p| !matches!(p, Principal::Admin(_))) {
            return Err(KmsError::AccessDenied {
                principal: who.to_string(),
                operation: "SetQuota (quotas are set by admin principals)".into(),
                key: None,
            });
        }
        self.quotas.set(scope, limits)?;
        Ok(Applied::Done)
    }

    /// A node's audit chain head moves forward only: one that goes back, or names another
    /// hash for a record already committed to, is refused (and the refusal is the evidence:
    /// that node's audit files were cut or rewritten).
    fn audit_head(&mut self, node: NodeId, seq: u64, hash: &str, now_ms: u64) -> CommandResult {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KmsError::Invalid("an audit chain head's hash is 64 hex digits".into()));
        }
        if let Some(current) = self.audit_heads.get(&node) {
            if seq < current.seq || (seq == current.seq && hash != current.hash) {
                return Err(KmsError::Invalid(format!(
                    "node {node}'s audit chain head goes back from record {} to {seq}, or changes its hash: refused",
                    current.seq
                )));
            }
        }
        self.audit_heads.insert(node, AuditHead { seq, hash: hash.to_string(), at_ms: now_ms });
        Ok(Applied::Done)
    }
}
