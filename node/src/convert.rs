//! Hand-written conversions between wire types and domain types (the API boundary).

use std::collections::BTreeMap;

use proto::v1 as pb;
use raft::{Key, KeyRef, KeySpec, KeyState, KmsError, VersionState};

use crate::consensus::Consistency;
use crate::error::{NodeError, Result};

pub(crate) fn key_ref(s: &str) -> Result<KeyRef> {
    if s.is_empty() {
        return Err(NodeError::Invalid("missing key: name a key by its id or as alias/NAME".into()));
    }
    Ok(s.parse::<KeyRef>()?)
}

/// Accepts `alias/NAME` or `NAME`, returns `NAME`.
pub(crate) fn alias_name(s: &str) -> Result<String> {
    let name = s.strip_prefix("alias/").unwrap_or(s);
    raft::validate_alias(name)?;
    Ok(name.to_string())
}

pub(crate) fn consistency(c: Option<pb::Consistency>) -> Result<Consistency> {
    match c.and_then(|c| c.level) {
        None | Some(pb::consistency::Level::Linearizable(_)) => Ok(Consistency::Linearizable),
        Some(pb::consistency::Level::BoundedStaleness(b)) => {
            if b.max_staleness_ms == 0 {
                return Err(NodeError::Invalid("bounded staleness needs max_staleness_ms > 0".into()));
            }
            let read_index_when_stale = match pb::OnStale::try_from(b.on_stale) {
                Ok(pb::OnStale::Error) => false,
                Ok(pb::OnStale::ReadIndex) => true,
                Err(_) => return Err(NodeError::Invalid(format!("unknown on_stale value {}", b.on_stale))),
            };
            Ok(Consistency::BoundedStaleness { max_staleness_ms: b.max_staleness_ms, read_index_when_stale })
        }
    }
}

pub(crate) fn spec(spec: i32, usage: i32) -> Result<KeySpec> {
    let spec = match pb::KeySpec::try_from(spec) {
        Ok(pb::KeySpec::Unspecified) | Ok(pb::KeySpec::Aes256GcmSiv) => KeySpec::Aes256GcmSiv,
        Ok(pb::KeySpec::EccNistP384) => KeySpec::EccNistP384,
        Err(_) => return Err(NodeError::Invalid(format!("unknown key spec {spec}"))),
    };
    let want = match pb::KeyUsage::try_from(usage) {
        Ok(pb::KeyUsage::Unspecified) => return Ok(spec),
        Ok(pb::KeyUsage::EncryptDecrypt) => raft::KeyUsage::EncryptDecrypt,
        Ok(pb::KeyUsage::SignVerify) => raft::KeyUsage::SignVerify,
        Err(_) => return Err(NodeError::Invalid(format!("unknown key usage {usage}"))),
    };
    if spec.usage() != want {
        return Err(NodeError::Kms(KmsError::Invalid(format!(
            "key spec {} does not support usage {:?}",
            spec.name(),
            want
        ))));
    }
    Ok(spec)
}

pub(crate) fn metadata(key: &Key, aliases: Vec<String>) -> pb::KeyMetadata {
    let (state, deletion_time_ms) = match key.state {
        KeyState::Enabled => (pb::KeyState::Enabled, 0),
        KeyState::Disabled => (pb::KeyState::Disabled, 0),
        KeyState::PendingDeletion { deletion_ms } => (pb::KeyState::PendingDeletion, deletion_ms),
        KeyState::Destroyed => (pb::KeyState::Destroyed, 0),
    };
    pb::KeyMetadata {
        key_id: key.id.to_string(),
        aliases: aliases.into_iter().map(|a| format!("alias/{a}")).collect(),
        description: key.description.clone(),
        tags: key.tags.clone().into_iter().collect(),
        spec: match key.spec {
            KeySpec::Aes256GcmSiv => pb::KeySpec::Aes256GcmSiv,
            KeySpec::EccNistP384 => pb::KeySpec::EccNistP384,
        } as i32,
        usage: match key.spec.usage() {
            raft::KeyUsage::EncryptDecrypt => pb::KeyUsage::EncryptDecrypt,
            raft::KeyUsage::SignVerify => pb::KeyUsage::SignVerify,
        } as i32,
        state: state as i32,
        deletion_time_ms,
        primary_version: key.primary_version,
        rotation_period_days: key.rotation_period_days.unwrap_or(0),
        next_rotation_ms: key.next_rotation_ms.unwrap_or(0),
        created_ms: key.created_ms,
        updated_ms: key.updated_ms,
        version_count: key.versions.len() as u32,
        allowed_regions: key.allowed_regions.iter().cloned().collect(),
    }
}

pub(crate) fn versions(key: &Key) -> Vec<pb::KeyVersionInfo> {
    key.versions
        .iter()
        .map(|v| pb::KeyVersionInfo {
            version: v.version,
            state: match v.state {
                VersionState::Enabled => pb::KeyVersionState::VersionEnabled,
                VersionState::Disabled => pb::KeyVersionState::VersionDisabled,
                VersionState::Destroyed => pb::KeyVersionState::VersionDestroyed,
            } as i32,
            created_ms: v.created_ms,
            primary: v.version == key.primary_version,
        })
        .collect()
}

pub(crate) fn context(map: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
