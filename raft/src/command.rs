//! The replicated command set. A command carries everything `apply` needs: the proposer's
//! clock reading (`now_ms`) and any random bytes (ids, wrapped material).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::key::{Key, KeyRef, KeySpec, WrappedMaterial};
use crate::policy::{Actor, Grant, KeyPolicy, Permission};
use crate::quota::Limits;
use crate::{KmsError, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Starts generating the root key among these participants (in share-index order, with
    /// their identity public keys). A higher epoch replaces a round that stalled.
    StartKeyGen {
        epoch: u64,
        participants: Vec<(NodeId, Vec<u8>)>,
        now_ms: u64,
    },
    /// A participant's part of the key generation (`crypto::dkg::deal_part`).
    KeyGenPart {
        epoch: u64,
        dealer: NodeId,
        part: Vec<u8>,
        now_ms: u64,
    },
    /// A participant's acknowledgement of a dealer's part (`crypto::dkg::acknowledge_part`).
    /// The one that completes the round installs the root key.
    KeyGenAck {
        epoch: u64,
        dealer: NodeId,
        acker: NodeId,
        ack: Vec<u8>,
        now_ms: u64,
    },
    /// A new version of the log key, which encrypts the log and snapshots at rest, wrapped under
    /// the root key. Proposed by the leader once the root key exists (version 1), and later on
    /// rotations of the log key. Versions are consecutive.
    AddLogKey {
        version: u32,
        key: WrappedMaterial,
        now_ms: u64,
    },
    /// Makes the root key a resharing round made (`next_root`, of this epoch) the root: every
    /// log key version and every key version's material under the old root, re-wrapped under
    /// the new one by the proposer (ciphertexts only: key-check values and public points
    /// stay), and a fresh log key version under the new root. One replicated step: all of it
    /// or, if anything under the old root is missing, none of it.
    ReplaceRoot {
        epoch: u64,
        log_keys: BTreeMap<u32, Vec<u8>>,
        materials: BTreeMap<Uuid, BTreeMap<u32, Vec<u8>>>,
        log_key: WrappedMaterial,
        now_ms: u64,
    },
    CreateKey {
        /// Idempotency token: a retried create with the same token returns the first result.
        token: Option<String>,
        key_id: Uuid,
        spec: KeySpec,
        description: String,
        tags: BTreeMap<String, String>,
        alias: Option<String>,
        rotation_period_days: Option<u32>,
        /// Empty: usable in every region (`Key::allowed_regions`).
        allowed_regions: BTreeSet<String>,
        /// `None`: the default policy (the owner may do everything).
        policy: Option<KeyPolicy>,
        material: WrappedMaterial,
        /// The owner. Administrators cannot create keys (separation of duties).
        by: Option<Actor>,
        now_ms: u64,
    },
    RotateKey {
        key: KeyRef,
        token: Option<String>,
        material: WrappedMaterial,
        /// Set by automatic rotation: rotate only if the primary is still this version, so two
        /// leaders proposing the same due rotation rotate once.
        if_primary_is: Option<u32>,
        by: Option<Actor>,
        now_ms: u64,
    },
    Update {
        key: KeyRef,
        change: KeyChange,
        /// Idempotency token: a retried update with the same token applies once.
        token: Option<String>,
        by: Option<Actor>,
        now_ms: u64,
    },
    CreateAlias {
        alias: String,
        key: KeyRef,
        by: Option<Actor>,
        now_ms: u64,
    },
    DeleteAlias {
        alias: String,
        by: Option<Actor>,
        now_ms: u64,
    },
    /// Replaces a key's policy.
    PutKeyPolicy {
        key: KeyRef,
        policy: KeyPolicy,
        by: Option<Actor>,
        now_ms: u64,
    },
    /// Gives `grant.grantee` some use of a key (the grant's id is chosen by the proposer).
    CreateGrant {
        key: KeyRef,
        grant: Grant,
        token: Option<String>,
        by: Option<Actor>,
        now_ms: u64,
    },
    /// Removes a grant: by someone with RevokeGrant on the key (`retire: false`), or by its
    /// grantee giving it up (`retire: true`).
    RevokeGrant {
        key: KeyRef,
        grant: Uuid,
        retire: bool,
        by: Option<Actor>,
        now_ms: u64,
    },
    /// Destroys every key whose deletion date is at or before `now_ms`.
    DestroyDue {
        now_ms: u64,
    },
    /// `node` holds a durable snapshot whose keyring's root is of `root_epoch`: it will never
    /// again need shares of an older root to read its own state. Once every holder has said
    /// so, the roots before are let go and their shares erased.
    SnapshotDurable {
        node: NodeId,
        root_epoch: u64,
        now_ms: u64,
    },
    /// `node`'s audit chain head: its audit record `seq` has hash `hash`. Heads only move
    /// forward; any member can then check that node's audit files against it.
    AuditHead {
        node: NodeId,
        seq: u64,
        hash: String,
        now_ms: u64,
    },
    /// Sets the cluster's default quota (`scope` `None`) or a principal's override; `limits`
    /// `None` removes the override.
    SetQuota {
        scope: Option<String>,
        limits: Option<Limits>,
        by: Option<Actor>,
        now_ms: u64,
    },
}

/// In-place changes to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyChange {
    Enable,
    Disable,
    ScheduleDeletion {
        days: u32,
    },
    CancelDeletion,
    SetDescription(String),
    Tag(BTreeMap<String, String>),
    Untag(Vec<String>),
    SetRotationPolicy {
        period_days: Option<u32>,
    },
    EnableVersion(u32),
    DisableVersion(u32),
    /// Replaces the key's region restriction (empty: every region).
    SetAllowedRegions(BTreeSet<String>),
}

impl KeyChange {
    /// What a principal needs to make this change.
    pub fn permission(&self) -> Permission {
        match self {
            KeyChange::Enable | KeyChange::EnableVersion(_) => Permission::Enable,
            KeyChange::Disable | KeyChange::DisableVersion(_) => Permission::Disable,
            KeyChange::ScheduleDeletion { .. } => Permission::ScheduleDeletion,
            KeyChange::CancelDeletion => Permission::CancelDeletion,
            KeyChange::SetDescription(_) | KeyChange::SetRotationPolicy { .. } => Permission::Update,
            KeyChange::Tag(_) | KeyChange::Untag(_) => Permission::Tag,
            KeyChange::SetAllowedRegions(_) => Permission::SetAllowedRegions,
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The key after the command.
    Key(Box<Key>),
    /// Ids of the keys destroyed.
    Destroyed(Vec<Uuid>),
    /// The grant created, of key `key`.
    Grant {
        key: Uuid,
        grant: Box<Grant>,
    },
    Done,
}

/// The outcome replicated back to the proposer.
pub type CommandResult = Result<Applied, KmsError>;

impl Command {
    /// The command's name, for logs and assertion messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::StartKeyGen { .. } => "StartKeyGen",
            Command::KeyGenPart { .. } => "KeyGenPart",
            Command::KeyGenAck { .. } => "KeyGenAck",
            Command::AddLogKey { .. } => "AddLogKey",
            Command::ReplaceRoot { .. } => "ReplaceRoot",
            Command::CreateKey { .. } => "CreateKey",
            Command::RotateKey { .. } => "RotateKey",
            Command::Update { .. } => "Update",
            Command::CreateAlias { .. } => "CreateAlias",
            Command::DeleteAlias { .. } => "DeleteAlias",
            Command::PutKeyPolicy { .. } => "PutKeyPolicy",
            Command::CreateGrant { .. } => "CreateGrant",
            Command::RevokeGrant { retire: false, .. } => "RevokeGrant",
            Command::RevokeGrant { retire: true, .. } => "RetireGrant",
            Command::DestroyDue { .. } => "DestroyDue",
            Command::SnapshotDurable { .. } => "SnapshotDurable",
            Command::AuditHead { .. } => "AuditHead",
            Command::SetQuota { .. } => "SetQuota",
        }
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            Command::StartKeyGen { now_ms, .. }
            | Command::KeyGenPart { now_ms, .. }
            | Command::KeyGenAck { now_ms, .. }
            | Command::AddLogKey { now_ms, .. }
            | Command::ReplaceRoot { now_ms, .. }
            | Command::CreateKey { now_ms, .. }
            | Command::RotateKey { now_ms, .. }
            | Command::Update { now_ms, .. }
            | Command::CreateAlias { now_ms, .. }
            | Command::DeleteAlias { now_ms, .. }
            | Command::PutKeyPolicy { now_ms, .. }
            | Command::CreateGrant { now_ms, .. }
            | Command::RevokeGrant { now_ms, .. }
            | Command::SnapshotDurable { now_ms, .. }
            | Command::AuditHead { now_ms, .. }
            | Command::SetQuota { now_ms, .. }
            | Command::DestroyDue { now_ms } => *now_ms,
        }
    }

    /// Whether the command may be stored in the clear when no log key exists yet: the root
    /// key generation and the first log key, which precede every log key and carry nothing
    /// secret (shares travel sealed to identity keys; material wrapped under the root key).
    /// Every other command is only ever stored sealed.
    pub fn may_be_clear(&self) -> bool {
        matches!(
            self,
            Command::StartKeyGen { .. }
                | Command::KeyGenPart { .. }
                | Command::KeyGenAck { .. }
                | Command::AddLogKey { .. }
        )
    }

    /// Who made the command: `None` for the cluster's own commands and unauthenticated calls.
    pub fn by(&self) -> Option<&Actor> {
        match self {
            Command::CreateKey { by, .. }
            | Command::RotateKey { by, .. }
            | Command::Update { by, .. }
            | Command::CreateAlias { by, .. }
            | Command::DeleteAlias { by, .. }
            | Command::PutKeyPolicy { by, .. }
            | Command::CreateGrant { by, .. }
            | Command::RevokeGrant { by, .. }
            | Command::SetQuota { by, .. } => by.as_ref(),
            Command::StartKeyGen { .. }
            | Command::KeyGenPart { .. }
            | Command::KeyGenAck { .. }
            | Command::AddLogKey { .. }
            | Command::ReplaceRoot { .. }
            | Command::SnapshotDurable { .. }
            | Command::AuditHead { .. }
            | Command::DestroyDue { .. } => None,
        }
    }

    /// The idempotency token and what it must stand for: a token reused for a different
    /// request is an error, not a silent replay. Tokens are scoped by principal (the state
    /// machine keys them by both), so one principal's token never replays another's result.
    pub(crate) fn token(&self) -> Option<(&str, String)> {
        match self {
            Command::CreateKey {
                token: Some(t),
                spec,
                description,
                tags,
                alias,
                rotation_period_days,
                allowed_regions,
                policy,
                ..
            } => Some((
                t,
                format!(
                    "create|{spec:?}|{description:?}|{tags:?}|{alias:?}|{rotation_period_days:?}|{allowed_regions:?}|\
                     {policy:?}"
                ),
            )),
            Command::CreateGrant { token: Some(t), key, grant, .. } => Some((
                t,
                format!(
                    "grant|{key:?}|{:?}|{:?}|{:?}|{:?}",
                    grant.grantee, grant.operations, grant.context, grant.expires_ms
                ),
            )),
            Command::RotateKey { token: Some(t), key, .. } => Some((t, format!("rotate|{key:?}"))),
            Command::Update { token: Some(t), key, change, .. } => Some((t, format!("update|{key:?}|{change:?}"))),
            _ => None,
        }
    }
}

/// A log entry's application data as openraft carries it. The leader proposes `Clear`; every
/// log store seals it under the newest log key it holds before writing it (see
/// `storage::LogCipher`), so what is stored, replicated and applied is `Sealed`, except the
/// commands that precede the first log key (`Command::may_be_clear`).
// A payload is built once per entry and moved a few times; boxing the command would add an
// allocation per entry to save copying ~200 bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Clear(Command),
    Sealed(SealedRecord),
}

/// A record encrypted under one version of the log key: AES-256-GCM-SIV over the postcard
/// encoding of the value, with associated data naming the record's place (a log id, a
/// snapshot's last log id), so a record moved elsewhere does not open.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    pub key_version: u32,
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedRecord {{ log key v{}, {} bytes }}", self.key_version, self.ciphertext.len())
    }
}
