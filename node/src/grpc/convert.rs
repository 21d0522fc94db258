//! Hand-written conversions between wire types and domain types: requests into operations,
//! outcomes into responses, and (for calls forwarded to another member) operations back into
//! requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proto::v1 as pb;
use raft::{
    Grant, Key, KeyPolicy, KeyRef, KeySpec, KeyState, KmsError, NodeId, NodeInfo, Permission, Principal, VersionState,
};
use uuid::Uuid;

use crate::admin::{ClusterStatus, NodeStatus};
use crate::consensus::Consistency;
use crate::error::{NodeError, Result};
use crate::kms::topology::{Health, Topology};
use crate::kms::{CallContext, KeyInfo, NewGrant, NewKey, Op, Out};

pub(crate) fn key_ref(s: &str) -> Result<KeyRef> {
    if s.is_empty() {
        return Err(NodeError::Invalid("missing key: name a key by its id or as alias/NAME".into()));
    }
    Ok(s.parse::<KeyRef>()?)
}

/// An optional key: empty means none.
pub(crate) fn key_ref_or_none(s: &str) -> Result<Option<KeyRef>> {
    if s.is_empty() {
        return Ok(None);
    }
    key_ref(s).map(Some)
}

/// Accepts `alias/NAME` or `NAME`, returns `NAME`.
pub(crate) fn alias_name(s: &str) -> Result<String> {
    let name = s.strip_prefix("alias/").unwrap_or(s);
    raft::validate_alias(name)?;
    Ok(name.to_string())
}

/// An idempotency token: empty means none.
pub(crate) fn token(t: &str) -> Result<Option<String>> {
    match t.len() {
        0 => Ok(None),
        1..=128 => Ok(Some(t.to_string())),
        _ => Err(NodeError::Invalid("idempotency_token is at most 128 characters".into())),
    }
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

fn wire_consistency(c: Consistency) -> Option<pb::Consistency> {
    let level = match c {
        Consistency::Linearizable => pb::consistency::Level::Linearizable(pb::Linearizable {}),
        Consistency::BoundedStaleness { max_staleness_ms, read_index_when_stale } => {
            let on_stale = if read_index_when_stale { pb::OnStale::ReadIndex } else { pb::OnStale::Error };
            pb::consistency::Level::BoundedStaleness(pb::BoundedStaleness {
                max_staleness_ms,
                on_stale: on_stale.into(),
            })
        }
    };
    Some(pb::Consistency { level: Some(level) })
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

fn wire_spec(spec: KeySpec) -> pb::KeySpec {
    match spec {
        KeySpec::Aes256GcmSiv => pb::KeySpec::Aes256GcmSiv,
        KeySpec::EccNistP384 => pb::KeySpec::EccNistP384,
    }
}

pub(crate) fn context(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn wire_context(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn new_key(r: &pb::CreateKeyRequest) -> Result<NewKey> {
    Ok(NewKey {
        spec: spec(r.spec, r.usage)?,
        description: r.description.clone(),
        tags: r.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        alias: if r.alias.is_empty() { None } else { Some(alias_name(&r.alias)?) },
        rotation_period_days: (r.rotation_period_days > 0).then_some(r.rotation_period_days),
        allowed_regions: r.allowed_regions.iter().cloned().collect(),
        policy: if r.policy.is_empty() { None } else { Some(policy(&r.policy)?) },
    })
}

/// A grant to make, from its request.
pub(crate) fn new_grant(r: &pb::CreateGrantRequest) -> Result<Op> {
    let grantee = Principal::parse(&r.grantee).map_err(NodeError::Invalid)?;
    let operations =
        r.operations.iter().map(|o| o.parse::<Permission>()).collect::<std::result::Result<BTreeSet<_>, _>>()?;
    let grant = NewGrant {
        grantee,
        operations,
        context: context(&r.encryption_context),
        expires_ms: (r.expires_ms > 0).then_some(r.expires_ms),
    };
    Ok(Op::CreateGrant { key: key_ref(&r.key)?, grant })
}

/// Revoking (or, by its grantee, retiring) a grant.
pub(crate) fn revoke_grant(r: &pb::RevokeGrantRequest, retire: bool) -> Result<Op> {
    let grant =
        Uuid::parse_str(&r.grant_id).map_err(|_| NodeError::Invalid(format!("{:?} is not a grant id", r.grant_id)))?;
    Ok(Op::RevokeGrant { key: key_ref(&r.key)?, grant, retire })
}

pub(crate) fn decrypt(r: pb::DecryptRequest) -> Result<Op> {
    let expected_key = key_ref_or_none(&r.key)?;
    Ok(Op::Decrypt { context: context(&r.encryption_context), ciphertext: r.ciphertext, expected_key })
}

pub(crate) fn re_encrypt(r: pb::ReEncryptRequest) -> Result<Op> {
    Ok(Op::ReEncrypt {
        destination: key_ref_or_none(&r.destination_key)?,
        source_context: context(&r.source_encryption_context),
        destination_context: context(&r.destination_encryption_context),
        ciphertext: r.ciphertext,
    })
}

fn wire_grant(key_id: Uuid, g: &Grant) -> pb::Grant {
    pb::Grant {
        grant_id: g.id.to_string(),
        key_id: key_id.to_string(),
        grantee: g.grantee.to_string(),
        operations: g.operations.iter().map(ToString::to_string).collect(),
        encryption_context: wire_context(&g.context),
        expires_ms: g.expires_ms.unwrap_or(0),
        created_by: g.created_by.as_ref().map(ToString::to_string).unwrap_or_default(),
        created_ms: g.created_ms,
    }
}

pub(crate) fn grant_response(out: Out) -> Result<pb::GrantResponse> {
    match out {
        Out::Grant { key_id, grant } => Ok(pb::GrantResponse { grant: Some(wire_grant(key_id, &grant)) }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn grants_response(out: Out) -> Result<pb::ListGrantsResponse> {
    match out {
        Out::Grants { key_id, grants } => {
            Ok(pb::ListGrantsResponse { grants: grants.iter().map(|g| wire_grant(key_id, g)).collect() })
        }
        other => Err(unexpected(&other)),
    }
}

/// The largest key policy document accepted, in bytes.
const MAX_POLICY_BYTES: usize = 32 * 1024;

/// A key policy from its JSON document.
pub(crate) fn policy(json: &str) -> Result<KeyPolicy> {
    if json.len() > MAX_POLICY_BYTES {
        return Err(NodeError::Invalid(format!("the policy is {} bytes; the limit is {MAX_POLICY_BYTES}", json.len())));
    }
    serde_json::from_str(json)
        .map_err(|e| NodeError::Invalid(format!("the policy is not a valid policy document: {e}")))
}

fn policy_json(policy: &KeyPolicy) -> Result<String> {
    serde_json::to_string(policy).map_err(|e| NodeError::Internal(format!("encoding a policy: {e}")))
}

/// A data key of the bytes asked for (default 32).
pub(crate) fn data_key(r: &pb::GenerateDataKeyRequest, with_plaintext: bool) -> Result<Op> {
    Ok(Op::GenerateDataKey {
        key: key_ref(&r.key)?,
        bytes: if r.number_of_bytes == 0 { 32 } else { r.number_of_bytes },
        context: context(&r.encryption_context),
        with_plaintext,
    })
}

/// The page a `ListKeys` asks for: keys after which id, and how many.
pub(crate) fn page(r: &pb::ListKeysRequest) -> Result<(Option<Uuid>, usize)> {
    let page_size = match r.page_size {
        0 => 100,
        n @ 1..=1000 => n as usize,
        _ => return Err(NodeError::Invalid("page_size must be 1-1000".into())),
    };
    let after = if r.page_token.is_empty() {
        None
    } else {
        Some(Uuid::parse_str(&r.page_token).map_err(|_| NodeError::Invalid("invalid page_token".into()))?)
    };
    Ok((after, page_size))
}

fn metadata(key: &Key, aliases: &[String]) -> pb::KeyMetadata {
    let (state, deletion_time_ms) = match key.state {
        KeyState::Enabled => (pb::KeyState::Enabled, 0),
        KeyState::Disabled => (pb::KeyState::Disabled, 0),
        KeyState::PendingDeletion { deletion_ms } => (pb::KeyState::PendingDeletion, deletion_ms),
        KeyState::Destroyed => (pb::KeyState::Destroyed, 0),
    };
    pb::KeyMetadata {
        key_id: key.id.to_string(),
        aliases: aliases.iter().map(|a| format!("alias/{a}")).collect(),
        description: key.description.clone(),
        tags: key.tags.clone().into_iter().collect(),
        spec: wire_spec(key.spec) as i32,
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
        owner: key.owner.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

fn versions(key: &Key) -> Vec<pb::KeyVersionInfo> {
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

fn unexpected(out: &Out) -> NodeError {
    NodeError::Internal(format!("unexpected outcome {}", out_name(out)))
}

fn out_name(out: &Out) -> &'static str {
    match out {
        Out::Key(_) => "Key",
        Out::Keys { .. } => "Keys",
        Out::Done => "Done",
        Out::Encrypted { .. } => "Encrypted",
        Out::Decrypted { .. } => "Decrypted",
        Out::ReEncrypted { .. } => "ReEncrypted",
        Out::DataKey { .. } => "DataKey",
        Out::Random(_) => "Random",
        Out::Signed { .. } => "Signed",
        Out::Verified(_) => "Verified",
        Out::PublicKey { .. } => "PublicKey",
        Out::Topology(_) => "Topology",
        Out::Policy { .. } => "Policy",
        Out::Grant { .. } => "Grant",
        Out::Grants { .. } => "Grants",
    }
}

// Outcomes into responses.

pub(crate) fn key_response(out: Out) -> Result<pb::KeyResponse> {
    match out {
        Out::Key(KeyInfo { key, aliases }) => Ok(pb::KeyResponse { key: Some(metadata(&key, &aliases)) }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn policy_response(out: Out) -> Result<pb::KeyPolicyResponse> {
    match out {
        Out::Policy { key_id, owner, policy } => Ok(pb::KeyPolicyResponse {
            key_id: key_id.to_string(),
            owner: owner.map(|o| o.to_string()).unwrap_or_default(),
            policy: policy_json(&policy)?,
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn list_keys_response(out: Out) -> Result<pb::ListKeysResponse> {
    match out {
        Out::Keys { keys, next_after } => Ok(pb::ListKeysResponse {
            keys: keys.iter().map(|k| metadata(&k.key, &k.aliases)).collect(),
            next_page_token: next_after.map(|id| id.to_string()).unwrap_or_default(),
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn empty(out: Out) -> Result<pb::Empty> {
    match out {
        Out::Done => Ok(pb::Empty {}),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn versions_response(out: Out) -> Result<pb::ListKeyVersionsResponse> {
    match out {
        Out::Key(info) => Ok(pb::ListKeyVersionsResponse { versions: versions(&info.key) }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn encrypt_response(out: Out) -> Result<pb::EncryptResponse> {
    match out {
        Out::Encrypted { ciphertext, key_id, version } => {
            Ok(pb::EncryptResponse { ciphertext, key_id: key_id.to_string(), key_version: version })
        }
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn decrypt_response(out: Out) -> Result<pb::DecryptResponse> {
    match out {
        Out::Decrypted { plaintext, key_id, version } => Ok(pb::DecryptResponse {
            plaintext: plaintext.expose().to_vec(),
            key_id: key_id.to_string(),
            key_version: version,
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn re_encrypt_response(out: Out) -> Result<pb::ReEncryptResponse> {
    match out {
        Out::ReEncrypted { ciphertext, source_key_id, source_version, key_id, version } => Ok(pb::ReEncryptResponse {
            ciphertext,
            source_key_id: source_key_id.to_string(),
            source_key_version: source_version,
            key_id: key_id.to_string(),
            key_version: version,
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn data_key_response(out: Out) -> Result<pb::GenerateDataKeyResponse> {
    match out {
        Out::DataKey { plaintext, ciphertext, key_id, version } => Ok(pb::GenerateDataKeyResponse {
            plaintext: plaintext.map(|p| p.expose().to_vec()).unwrap_or_default(),
            ciphertext,
            key_id: key_id.to_string(),
            key_version: version,
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn random_response(out: Out) -> Result<pb::GenerateRandomResponse> {
    match out {
        Out::Random(random) => Ok(pb::GenerateRandomResponse { random }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn sign_response(out: Out) -> Result<pb::SignResponse> {
    match out {
        Out::Signed { signature, key_id, version } => {
            Ok(pb::SignResponse { signature, key_id: key_id.to_string(), key_version: version })
        }
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn verify_response(out: Out) -> Result<pb::VerifyResponse> {
    match out {
        Out::Verified(valid) => Ok(pb::VerifyResponse { valid }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn public_key_response(out: Out) -> Result<pb::GetPublicKeyResponse> {
    match out {
        Out::PublicKey { key_id, version, der, pem } => Ok(pb::GetPublicKeyResponse {
            key_id: key_id.to_string(),
            key_version: version,
            public_key_der: der,
            public_key_pem: pem,
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn topology_response(out: Out) -> Result<pb::TopologyResponse> {
    match out {
        Out::Topology(t) => Ok(topology(t)),
        other => Err(unexpected(&other)),
    }
}

fn topology(t: Topology) -> pb::TopologyResponse {
    pb::TopologyResponse {
        members: t
            .members
            .into_iter()
            .map(|m| pb::TopologyMember {
                id: m.id,
                region: m.region,
                zone: m.zone,
                addr: m.addr,
                role: m.role.into(),
                health: match m.health {
                    Health::Unknown => pb::Health::Unknown,
                    Health::Healthy => pb::Health::Healthy,
                    Health::Unreachable => pb::Health::Unreachable,
                } as i32,
                last_contact_ms: m.last_contact_ms,
            })
            .collect(),
        leader_id: t.leader_id.unwrap_or(0),
        answered_by: t.answered_by,
        from_leader: t.from_leader,
        placement_warnings: t.placement_warnings,
    }
}

// Operations back into requests, for a call forwarded to another member (with the call's
// token and consistency). `None`: not an operation of that request.

pub(crate) fn create_key_request(op: &Op, ctx: &CallContext) -> Option<pb::CreateKeyRequest> {
    let Op::CreateKey(new) = op else { return None };
    let policy = match &new.policy {
        Some(p) => policy_json(p).ok()?,
        None => String::new(),
    };
    Some(pb::CreateKeyRequest {
        spec: wire_spec(new.spec) as i32,
        usage: 0,
        description: new.description.clone(),
        tags: new.tags.clone().into_iter().collect(),
        alias: new.alias.clone().unwrap_or_default(),
        idempotency_token: ctx.token.clone().unwrap_or_default(),
        rotation_period_days: new.rotation_period_days.unwrap_or(0),
        allowed_regions: new.allowed_regions.iter().cloned().collect(),
        policy,
    })
}

pub(crate) fn rotate_key_request(op: &Op, ctx: &CallContext) -> Option<pb::RotateKeyRequest> {
    let Op::RotateKey { key } = op else { return None };
    Some(pb::RotateKeyRequest { key: key.to_string(), idempotency_token: ctx.token.clone().unwrap_or_default() })
}

pub(crate) fn encrypt_request(op: &Op, ctx: &CallContext) -> Option<pb::EncryptRequest> {
    let Op::Encrypt { key, plaintext, context } = op else { return None };
    Some(pb::EncryptRequest {
        key: key.to_string(),
        plaintext: plaintext.clone(),
        encryption_context: wire_context(context),
        consistency: wire_consistency(ctx.consistency),
    })
}

pub(crate) fn decrypt_request(op: &Op, ctx: &CallContext) -> Option<pb::DecryptRequest> {
    let Op::Decrypt { ciphertext, context, expected_key } = op else { return None };
    Some(pb::DecryptRequest {
        ciphertext: ciphertext.clone(),
        encryption_context: wire_context(context),
        consistency: wire_consistency(ctx.consistency),
        key: expected_key.as_ref().map(|k| k.to_string()).unwrap_or_default(),
    })
}

pub(crate) fn re_encrypt_request(op: &Op, ctx: &CallContext) -> Option<pb::ReEncryptRequest> {
    let Op::ReEncrypt { ciphertext, source_context, destination, destination_context } = op else { return None };
    Some(pb::ReEncryptRequest {
        ciphertext: ciphertext.clone(),
        source_encryption_context: wire_context(source_context),
        destination_key: destination.as_ref().map(|k| k.to_string()).unwrap_or_default(),
        destination_encryption_context: wire_context(destination_context),
        consistency: wire_consistency(ctx.consistency),
    })
}

pub(crate) fn data_key_request(op: &Op, ctx: &CallContext) -> Option<pb::GenerateDataKeyRequest> {
    let Op::GenerateDataKey { key, bytes, context, .. } = op else { return None };
    Some(pb::GenerateDataKeyRequest {
        key: key.to_string(),
        encryption_context: wire_context(context),
        number_of_bytes: *bytes,
        consistency: wire_consistency(ctx.consistency),
    })
}

pub(crate) fn sign_request(op: &Op, ctx: &CallContext) -> Option<pb::SignRequest> {
    let Op::Sign { key, message } = op else { return None };
    Some(pb::SignRequest {
        key: key.to_string(),
        message: message.clone(),
        consistency: wire_consistency(ctx.consistency),
    })
}

pub(crate) fn topology_request(op: &Op, _ctx: &CallContext) -> Option<pb::GetTopologyRequest> {
    matches!(op, Op::GetTopology).then_some(pb::GetTopologyRequest {})
}

// The admin service.

pub(crate) fn member(m: &pb::Member) -> (NodeId, NodeInfo) {
    (m.id, NodeInfo { addr: m.addr.clone(), region: m.region.clone(), zone: m.zone.clone() })
}

pub(crate) fn node_status(s: NodeStatus) -> pb::NodeStatus {
    pb::NodeStatus {
        id: s.id,
        addr: s.addr,
        region: s.region,
        zone: s.zone,
        preferred_leader_region: s.preferred_leader_region,
        role: s.role,
        term: s.term,
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        replication_lag: s.replication_lag,
        version: s.version,
        reachable: s.reachable,
        error: s.error,
        voter: s.voter,
        leader_id: s.leader_id.unwrap_or(0),
        initialized: s.initialized,
        holds_share: s.holds_share,
        snapshot_index: s.snapshot_index,
        purged_index: s.purged_index,
        cache_entries: s.cache_entries,
        cache_hits: s.cache_hits,
        cache_misses: s.cache_misses,
        cache_evictions: s.cache_evictions,
        sealed: s.sealed_on.is_some(),
        sealed_log_key_version: s.sealed_on.unwrap_or(0),
        log_key_versions: s.log_key_versions,
        faulty_shares: s.faulty_shares.into_iter().collect(),
        root_epoch: s.root_epoch,
        next_root_epoch: s.next_root_epoch,
        identity_rounds: s.identity_rounds,
    }
}

/// A peer's status as it reported it.
pub(crate) fn node_status_from_wire(s: pb::NodeStatus) -> NodeStatus {
    NodeStatus {
        id: s.id,
        addr: s.addr,
        region: s.region,
        zone: s.zone,
        preferred_leader_region: s.preferred_leader_region,
        role: s.role,
        term: s.term,
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        replication_lag: s.replication_lag,
        version: s.version,
        reachable: s.reachable,
        error: s.error,
        voter: s.voter,
        leader_id: (s.leader_id != 0).then_some(s.leader_id),
        initialized: s.initialized,
        holds_share: s.holds_share,
        snapshot_index: s.snapshot_index,
        purged_index: s.purged_index,
        cache_entries: s.cache_entries,
        cache_hits: s.cache_hits,
        cache_misses: s.cache_misses,
        cache_evictions: s.cache_evictions,
        sealed_on: s.sealed.then_some(s.sealed_log_key_version),
        log_key_versions: s.log_key_versions,
        faulty_shares: s.faulty_shares.into_iter().collect(),
        root_epoch: s.root_epoch,
        next_root_epoch: s.next_root_epoch,
        identity_rounds: s.identity_rounds,
    }
}

pub(crate) fn cluster_status(s: ClusterStatus) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        nodes: s.nodes.into_iter().map(node_status).collect(),
        leader_id: s.leader_id.unwrap_or(0),
        placement_warnings: s.placement_warnings,
    }
}

fn rate(r: &pb::Rate) -> raft::Rate {
    raft::Rate { per_second: r.per_second, burst: r.burst }
}

fn wire_rate(r: &raft::Rate) -> pb::Rate {
    pb::Rate { per_second: r.per_second, burst: r.burst }
}

pub(crate) fn limits(l: &pb::QuotaLimits) -> raft::Limits {
    raft::Limits {
        crypto: l.crypto.as_ref().map(rate),
        management: l.management.as_ref().map(rate),
        max_keys: l.max_keys,
        max_aliases: l.max_aliases,
    }
}

fn wire_limits(l: &raft::Limits) -> pb::QuotaLimits {
    pb::QuotaLimits {
        crypto: l.crypto.as_ref().map(wire_rate),
        management: l.management.as_ref().map(wire_rate),
        max_keys: l.max_keys,
        max_aliases: l.max_aliases,
    }
}

pub(crate) fn quotas_response(
    quotas: &raft::Quotas,
    effective: Option<(raft::Limits, Option<String>)>,
) -> pb::GetQuotasResponse {
    let (effective, effective_scope) = match effective {
        Some((l, scope)) => (Some(wire_limits(&l)), scope.unwrap_or_default()),
        None => (None, String::new()),
    };
    pb::GetQuotasResponse {
        default: Some(wire_limits(&quotas.default)),
        overrides: quotas
            .overrides
            .iter()
            .map(|(scope, l)| pb::QuotaOverride { scope: scope.clone(), limits: Some(wire_limits(l)) })
            .collect(),
        effective,
        effective_scope,
    }
}
