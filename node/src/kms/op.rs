//! The KMS operations as the application layer sees them (domain types only; the gRPC edge
//! converts), and what each answers.

use std::collections::{BTreeMap, BTreeSet};

use crypto::{SecretBytes, MAX_PLAINTEXT_LEN};
use raft::{Grant, Key, KeyChange, KeyPolicy, KeyRef, KeySpec, Permission, Principal};
use uuid::Uuid;

use super::topology::Topology;
use crate::error::{NodeError, Result};

/// The most random bytes (or data-key bytes) one call returns.
pub const MAX_RANDOM_BYTES: u32 = 1024;

/// An encryption context: authenticated with the ciphertext, never stored.
pub type Context = BTreeMap<String, String>;

/// A new key.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub spec: KeySpec,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub alias: Option<String>,
    pub rotation_period_days: Option<u32>,
    pub allowed_regions: BTreeSet<String>,
    /// `None`: the default (the creator may do everything, nobody else anything).
    pub policy: Option<KeyPolicy>,
}

/// One KMS operation.
#[derive(Debug)]
pub enum Op {
    CreateKey(NewKey),
    DescribeKey {
        key: KeyRef,
    },
    ListKeys {
        after: Option<Uuid>,
        page_size: usize,
    },
    CreateAlias {
        alias: String,
        key: KeyRef,
    },
    DeleteAlias {
        alias: String,
    },
    /// Every metadata change of one key (enable, disable, deletion, description, tags,
    /// rotation policy, versions, regions).
    UpdateKey {
        key: KeyRef,
        change: KeyChange,
    },
    RotateKey {
        key: KeyRef,
    },
    ListKeyVersions {
        key: KeyRef,
    },
    Encrypt {
        key: KeyRef,
        plaintext: Vec<u8>,
        context: Context,
    },
    /// `expected_key`: the caller's claim of which key the ciphertext is under.
    Decrypt {
        ciphertext: Vec<u8>,
        context: Context,
        expected_key: Option<KeyRef>,
    },
    /// To `destination` (default: the ciphertext's own key) without the plaintext leaving the
    /// cluster.
    ReEncrypt {
        ciphertext: Vec<u8>,
        source_context: Context,
        destination: Option<KeyRef>,
        destination_context: Context,
    },
    GenerateDataKey {
        key: KeyRef,
        bytes: u32,
        context: Context,
        with_plaintext: bool,
    },
    GenerateRandom {
        bytes: u32,
    },
    Sign {
        key: KeyRef,
        message: Vec<u8>,
    },
    /// `version`: `None` for the primary.
    Verify {
        key: KeyRef,
        version: Option<u32>,
        message: Vec<u8>,
        signature: Vec<u8>,
    },
    GetPublicKey {
        key: KeyRef,
        version: Option<u32>,
    },
    GetTopology,
    GetKeyPolicy {
        key: KeyRef,
    },
    PutKeyPolicy {
        key: KeyRef,
        policy: KeyPolicy,
    },
    CreateGrant {
        key: KeyRef,
        grant: NewGrant,
    },
    ListGrants {
        key: KeyRef,
    },
    /// `retire`: the grantee gives it up.
    RevokeGrant {
        key: KeyRef,
        grant: Uuid,
        retire: bool,
    },
}

/// A grant to be made.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub grantee: Principal,
    pub operations: BTreeSet<Permission>,
    pub context: Context,
    pub expires_ms: Option<u64>,
}

/// A key with the aliases that point at it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key: Key,
    pub aliases: Vec<String>,
}

/// What an operation answers.
#[derive(Debug)]
pub enum Out {
    Key(KeyInfo),
    Keys { keys: Vec<KeyInfo>, next_after: Option<Uuid> },
    Done,
    Encrypted { ciphertext: Vec<u8>, key_id: Uuid, version: u32 },
    Decrypted { plaintext: SecretBytes, key_id: Uuid, version: u32 },
    ReEncrypted { ciphertext: Vec<u8>, source_key_id: Uuid, source_version: u32, key_id: Uuid, version: u32 },
    DataKey { plaintext: Option<SecretBytes>, ciphertext: Vec<u8>, key_id: Uuid, version: u32 },
    Random(Vec<u8>),
    Signed { signature: Vec<u8>, key_id: Uuid, version: u32 },
    Verified(bool),
    PublicKey { key_id: Uuid, version: u32, der: Vec<u8>, pem: String },
    Topology(Topology),
    Policy { key_id: Uuid, owner: Option<Principal>, policy: KeyPolicy },
    Grant { key_id: Uuid, grant: Grant },
    Grants { key_id: Uuid, grants: Vec<Grant> },
}

impl Out {
    /// The key id and version a call used, for its audit record.
    pub fn used(&self) -> Option<(Uuid, u32)> {
        match self {
            Out::Encrypted { key_id, version, .. }
            | Out::Decrypted { key_id, version, .. }
            | Out::ReEncrypted { key_id, version, .. }
            | Out::DataKey { key_id, version, .. }
            | Out::Signed { key_id, version, .. }
            | Out::PublicKey { key_id, version, .. } => Some((*key_id, *version)),
            Out::Key(k) => Some((k.key.id, k.key.primary_version)),
            _ => None,
        }
    }
}

impl Op {
    /// A copy of a crypto read that may be served before its read barrier confirms this node's
    /// state (`Kms::presume`); `None` for every other operation.
    pub fn presumable(&self) -> Option<Op> {
        Some(match self {
            Op::Encrypt { key, plaintext, context } => {
                Op::Encrypt { key: key.clone(), plaintext: plaintext.clone(), context: context.clone() }
            }
            Op::Decrypt { ciphertext, context, expected_key } => Op::Decrypt {
                ciphertext: ciphertext.clone(),
                context: context.clone(),
                expected_key: expected_key.clone(),
            },
            Op::ReEncrypt { ciphertext, source_context, destination, destination_context } => Op::ReEncrypt {
                ciphertext: ciphertext.clone(),
                source_context: source_context.clone(),
                destination: destination.clone(),
                destination_context: destination_context.clone(),
            },
            Op::GenerateDataKey { key, bytes, context, with_plaintext } => Op::GenerateDataKey {
                key: key.clone(),
                bytes: *bytes,
                context: context.clone(),
                with_plaintext: *with_plaintext,
            },
            Op::Sign { key, message } => Op::Sign { key: key.clone(), message: message.clone() },
            _ => return None,
        })
    }

    /// The operation's name, as audit records and logs spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateKey(_) => "CreateKey",
            Op::DescribeKey { .. } => "DescribeKey",
            Op::ListKeys { .. } => "ListKeys",
            Op::CreateAlias { .. } => "CreateAlias",
            Op::DeleteAlias { .. } => "DeleteAlias",
            Op::UpdateKey { change, .. } => change_name(change),
            Op::RotateKey { .. } => "RotateKey",
            Op::ListKeyVersions { .. } => "ListKeyVersions",
            Op::Encrypt { .. } => "Encrypt",
            Op::Decrypt { .. } => "Decrypt",
            Op::ReEncrypt { .. } => "ReEncrypt",
            Op::GenerateDataKey { with_plaintext: true, .. } => "GenerateDataKey",
            Op::GenerateDataKey { with_plaintext: false, .. } => "GenerateDataKeyWithoutPlaintext",
            Op::GenerateRandom { .. } => "GenerateRandom",
            Op::Sign { .. } => "Sign",
            Op::Verify { .. } => "Verify",
            Op::GetPublicKey { .. } => "GetPublicKey",
            Op::GetTopology => "GetTopology",
            Op::GetKeyPolicy { .. } => "GetKeyPolicy",
            Op::PutKeyPolicy { .. } => "PutKeyPolicy",
            Op::CreateGrant { .. } => "CreateGrant",
            Op::ListGrants { .. } => "ListGrants",
            Op::RevokeGrant { retire: false, .. } => "RevokeGrant",
            Op::RevokeGrant { retire: true, .. } => "RetireGrant",
        }
    }

    /// The quota the call is charged to; `None`: none (the topology, which clients poll to
    /// find the cluster).
    pub(super) fn class(&self) -> Option<super::quota::Class> {
        use super::quota::Class;
        match self {
            Op::Encrypt { .. }
            | Op::Decrypt { .. }
            | Op::ReEncrypt { .. }
            | Op::GenerateDataKey { .. }
            | Op::GenerateRandom { .. }
            | Op::Sign { .. }
            | Op::Verify { .. }
            | Op::GetPublicKey { .. } => Some(Class::Crypto),
            Op::GetTopology => None,
            Op::CreateKey(_)
            | Op::DescribeKey { .. }
            | Op::ListKeys { .. }
            | Op::CreateAlias { .. }
            | Op::DeleteAlias { .. }
            | Op::UpdateKey { .. }
            | Op::RotateKey { .. }
            | Op::ListKeyVersions { .. }
            | Op::GetKeyPolicy { .. }
            | Op::PutKeyPolicy { .. }
            | Op::CreateGrant { .. }
            | Op::ListGrants { .. }
            | Op::RevokeGrant { .. } => Some(Class::Management),
        }
    }

    /// The key the operation names, as the caller named it (a ciphertext names its own).
    pub fn key(&self) -> Option<String> {
        match self {
            Op::DescribeKey { key }
            | Op::CreateAlias { key, .. }
            | Op::UpdateKey { key, .. }
            | Op::RotateKey { key }
            | Op::ListKeyVersions { key }
            | Op::Encrypt { key, .. }
            | Op::GenerateDataKey { key, .. }
            | Op::Sign { key, .. }
            | Op::Verify { key, .. }
            | Op::GetPublicKey { key, .. }
            | Op::GetKeyPolicy { key }
            | Op::PutKeyPolicy { key, .. }
            | Op::CreateGrant { key, .. }
            | Op::ListGrants { key }
            | Op::RevokeGrant { key, .. } => Some(key.to_string()),
            Op::Decrypt { ciphertext, .. } | Op::ReEncrypt { ciphertext, .. } => {
                crypto::ciphertext::parse_header(ciphertext).ok().map(|h| h.key_id.to_string())
            }
            Op::DeleteAlias { alias } => Some(format!("alias/{alias}")),
            Op::CreateKey(_) | Op::ListKeys { .. } | Op::GenerateRandom { .. } | Op::GetTopology => None,
        }
    }

    /// The encryption context the call names (a re-encryption's source context).
    pub fn context(&self) -> Option<&Context> {
        match self {
            Op::Encrypt { context, .. } | Op::Decrypt { context, .. } | Op::GenerateDataKey { context, .. } => {
                Some(context)
            }
            Op::ReEncrypt { source_context, .. } => Some(source_context),
            _ => None,
        }
    }

    /// Whether the operation changes the replicated state.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Op::CreateKey(_)
                | Op::CreateAlias { .. }
                | Op::DeleteAlias { .. }
                | Op::UpdateKey { .. }
                | Op::RotateKey { .. }
                | Op::PutKeyPolicy { .. }
                | Op::CreateGrant { .. }
                | Op::RevokeGrant { .. }
        )
    }

    /// Checks what can be checked without any state: sizes and counts.
    pub fn validate(&self) -> Result<()> {
        if let Some(context) = self.context() {
            check_call_context(context)?;
        }
        if let Op::ReEncrypt { destination_context, .. } = self {
            check_call_context(destination_context)?;
        }
        match self {
            Op::Encrypt { plaintext, .. } if plaintext.len() > MAX_PLAINTEXT_LEN => Err(NodeError::Invalid(format!(
                "plaintext is {} bytes; the limit is {MAX_PLAINTEXT_LEN} (64 KiB): encrypt a data key instead (envelope \
                 encryption)",
                plaintext.len()
            ))),
            Op::Sign { message, .. } if message.len() > MAX_PLAINTEXT_LEN => {
                Err(NodeError::Invalid(format!("message is over {MAX_PLAINTEXT_LEN} bytes")))
            }
            Op::GenerateDataKey { bytes, .. } if !(1..=MAX_RANDOM_BYTES).contains(bytes) => {
                Err(NodeError::Invalid(format!("number_of_bytes must be 1-{MAX_RANDOM_BYTES}")))
            }
            Op::GenerateRandom { bytes } if !(1..=MAX_RANDOM_BYTES).contains(bytes) => {
                Err(NodeError::Invalid(format!("number_of_bytes must be 1-{MAX_RANDOM_BYTES}, got {bytes}")))
            }
            Op::CreateKey(new) => {
                raft::check_regions(&new.allowed_regions)?;
                Ok(new.policy.as_ref().map(KeyPolicy::validate).transpose().map(drop)?)
            }
            Op::PutKeyPolicy { policy, .. } => Ok(policy.validate()?),
            Op::CreateGrant { grant, .. } => {
                let check = Grant {
                    id: Uuid::nil(),
                    grantee: grant.grantee.clone(),
                    operations: grant.operations.clone(),
                    context: grant.context.clone(),
                    expires_ms: grant.expires_ms,
                    created_by: None,
                    created_ms: 0,
                };
                Ok(check.validate()?)
            }
            Op::UpdateKey { change: KeyChange::SetAllowedRegions(regions), .. } => Ok(raft::check_regions(regions)?),
            _ => Ok(()),
        }
    }
}

/// Pairs a call's encryption context may hold.
pub(crate) const MAX_CALL_CONTEXT_PAIRS: usize = 64;
/// Bytes of one encryption-context key (at least 1) or value.
pub(crate) const MAX_CALL_CONTEXT_ITEM: usize = 1024;
/// Bytes of a call's whole encryption context, keys and values.
pub(crate) const MAX_CALL_CONTEXT_BYTES: usize = 8192;

/// A call's encryption context is bounded (it is authenticated, written to the audit log and
/// matched against conditions): at most [`MAX_CALL_CONTEXT_PAIRS`] pairs, each key 1 to
/// [`MAX_CALL_CONTEXT_ITEM`] bytes and each value at most that, [`MAX_CALL_CONTEXT_BYTES`] in all.
fn check_call_context(context: &Context) -> Result<()> {
    if context.len() > MAX_CALL_CONTEXT_PAIRS {
        return Err(NodeError::Invalid(format!(
            "the encryption context has {} pairs; the limit is {MAX_CALL_CONTEXT_PAIRS}",
            context.len()
        )));
    }
    if context.iter().any(|(k, v)| k.is_empty() || k.len() > MAX_CALL_CONTEXT_ITEM || v.len() > MAX_CALL_CONTEXT_ITEM) {
        return Err(NodeError::Invalid(format!(
            "encryption-context keys are 1-{MAX_CALL_CONTEXT_ITEM} bytes and values at most {MAX_CALL_CONTEXT_ITEM}"
        )));
    }
    let total: usize = context.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_CALL_CONTEXT_BYTES {
        return Err(NodeError::Invalid(format!(
            "the encryption context is {total} bytes; the limit is {MAX_CALL_CONTEXT_BYTES}"
        )));
    }
    Ok(())
}

fn change_name(change: &KeyChange) -> &'static str {
    match change {
        KeyChange::Enable => "EnableKey",
        KeyChange::Disable => "DisableKey",
        KeyChange::ScheduleDeletion { .. } => "ScheduleKeyDeletion",
        KeyChange::CancelDeletion => "CancelKeyDeletion",
        KeyChange::SetDescription(_) => "UpdateKeyDescription",
        KeyChange::Tag(_) => "TagKey",
        KeyChange::Untag(_) => "UntagKey",
        KeyChange::SetRotationPolicy { .. } => "SetRotationPolicy",
        KeyChange::EnableVersion(_) => "EnableKeyVersion",
        KeyChange::DisableVersion(_) => "DisableKeyVersion",
        KeyChange::SetAllowedRegions(_) => "SetAllowedRegions",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypt(context: Context) -> Op {
        Op::Encrypt { key: KeyRef::Alias("k".into()), plaintext: b"x".to_vec(), context }
    }

    #[test]
    fn a_calls_encryption_context_is_bounded() {
        let pairs =
            |n: usize, len: usize| -> Context { (0..n).map(|i| (format!("{i:0len$}"), "v".repeat(len))).collect() };
        assert!(encrypt(pairs(MAX_CALL_CONTEXT_PAIRS, 8)).validate().is_ok());
        let over = [
            pairs(MAX_CALL_CONTEXT_PAIRS + 1, 8),
            pairs(1, MAX_CALL_CONTEXT_ITEM + 1),
            pairs(9, MAX_CALL_CONTEXT_ITEM / 2 + 1),
            [(String::new(), "v".to_string())].into(),
        ];
        for context in over {
            let n = context.len();
            assert!(matches!(encrypt(context).validate(), Err(NodeError::Invalid(_))), "{n} pairs");
        }
    }
}
