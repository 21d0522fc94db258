//! One method per RPC of the public API. Each says what kind of call it is ([`CallKind`]), which
//! decides how it is retried and hedged and what a failure means ([`crate::Error`]).

use proto::v1 as pb;

use crate::{CallKind, Client, Error};

/// A write that carries an idempotency token may be sent again; one without may not.
fn tokened(token: &str) -> CallKind {
    if token.is_empty() {
        CallKind::Unsafe
    } else {
        CallKind::Idempotent
    }
}

macro_rules! rpcs {
    ($call:ident: $($(#[$doc:meta])* $name:ident($req:ty) -> $resp:ty, $kind:expr;)*) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(&self, request: $req) -> Result<$resp, Error> {
                    let kind: fn(&$req) -> CallKind = $kind;
                    let kind = kind(&request);
                    self.$call(kind, |mut c| {
                        let request = request.clone();
                        async move { c.$name(request).await }
                    })
                    .await
                }
            )*
        }
    };
}

rpcs! { kms_call:
    /// Creates a key; with an idempotency token, a retried create returns the same key.
    create_key(pb::CreateKeyRequest) -> pb::KeyResponse, |r| tokened(&r.idempotency_token);
    describe_key(pb::DescribeKeyRequest) -> pb::KeyResponse, |_| CallKind::Read;
    list_keys(pb::ListKeysRequest) -> pb::ListKeysResponse, |_| CallKind::Read;
    /// Not retried once sent: a second attempt would find the alias taken.
    create_alias(pb::CreateAliasRequest) -> pb::Empty, |_| CallKind::Unsafe;
    delete_alias(pb::DeleteAliasRequest) -> pb::Empty, |_| CallKind::Unsafe;
    /// Sets a value: as idempotent as a call that sets it again.
    update_key_description(pb::UpdateKeyDescriptionRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    tag_key(pb::TagKeyRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    untag_key(pb::UntagKeyRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    enable_key(pb::KeyRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    disable_key(pb::KeyRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    schedule_key_deletion(pb::ScheduleKeyDeletionRequest) -> pb::KeyResponse, |r| tokened(&r.idempotency_token);
    cancel_key_deletion(pb::KeyRequest) -> pb::KeyResponse, |r| tokened(&r.idempotency_token);
    rotate_key(pb::RotateKeyRequest) -> pb::KeyResponse, |r| tokened(&r.idempotency_token);
    set_rotation_policy(pb::SetRotationPolicyRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    set_allowed_regions(pb::SetAllowedRegionsRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    list_key_versions(pb::ListKeyVersionsRequest) -> pb::ListKeyVersionsResponse, |_| CallKind::Read;
    enable_key_version(pb::KeyVersionRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    disable_key_version(pb::KeyVersionRequest) -> pb::KeyResponse, |_| CallKind::Idempotent;
    /// Changes nothing on the server (a retry makes another ciphertext of the same plaintext).
    encrypt(pb::EncryptRequest) -> pb::EncryptResponse, |_| CallKind::Read;
    decrypt(pb::DecryptRequest) -> pb::DecryptResponse, |_| CallKind::Read;
    re_encrypt(pb::ReEncryptRequest) -> pb::ReEncryptResponse, |_| CallKind::Read;
    generate_data_key(pb::GenerateDataKeyRequest) -> pb::GenerateDataKeyResponse, |_| CallKind::Read;
    generate_data_key_without_plaintext(pb::GenerateDataKeyRequest) -> pb::GenerateDataKeyResponse, |_| CallKind::Read;
    generate_random(pb::GenerateRandomRequest) -> pb::GenerateRandomResponse, |_| CallKind::Read;
    sign(pb::SignRequest) -> pb::SignResponse, |_| CallKind::Read;
    verify(pb::VerifyRequest) -> pb::VerifyResponse, |_| CallKind::Read;
    get_public_key(pb::GetPublicKeyRequest) -> pb::GetPublicKeyResponse, |_| CallKind::Read;
    get_topology(pb::GetTopologyRequest) -> pb::TopologyResponse, |_| CallKind::Read;
    get_key_policy(pb::GetKeyPolicyRequest) -> pb::KeyPolicyResponse, |_| CallKind::Read;
    /// Replaces the whole policy: as idempotent as replacing it again.
    put_key_policy(pb::PutKeyPolicyRequest) -> pb::Empty, |_| CallKind::Idempotent;
    create_grant(pb::CreateGrantRequest) -> pb::GrantResponse, |r| tokened(&r.idempotency_token);
    list_grants(pb::ListGrantsRequest) -> pb::ListGrantsResponse, |_| CallKind::Read;
    /// Not retried once sent: a second attempt would find the grant gone.
    revoke_grant(pb::RevokeGrantRequest) -> pb::Empty, |_| CallKind::Unsafe;
    retire_grant(pb::RevokeGrantRequest) -> pb::Empty, |_| CallKind::Unsafe;
}

rpcs! { admin_call:
    /// Forms the cluster; joins a key generation already running for the same members.
    init(pb::InitRequest) -> pb::InitResponse, |_| CallKind::Idempotent;
    status(pb::StatusRequest) -> pb::ClusterStatusResponse, |_| CallKind::Read;
    local_status(pb::StatusRequest) -> pb::NodeStatus, |_| CallKind::Read;
    add_node(pb::AddNodeRequest) -> pb::AdminEmpty, |_| CallKind::Idempotent;
    remove_node(pb::RemoveNodeRequest) -> pb::AdminEmpty, |_| CallKind::Idempotent;
    transfer_leader(pb::TransferLeaderRequest) -> pb::AdminEmpty, |_| CallKind::Idempotent;
    snapshot(pb::SnapshotRequest) -> pb::SnapshotResponse, |_| CallKind::Idempotent;
    /// Joins a rotation already under way rather than starting a second.
    rotate_root(pb::RotateRootRequest) -> pb::RotateRootResponse, |_| CallKind::Idempotent;
    /// One node's audit records (pin the client to it: `Client::only`).
    read_audit(pb::ReadAuditRequest) -> pb::ReadAuditResponse, |_| CallKind::Read;
    audit_heads(pb::AuditHeadsRequest) -> pb::AuditHeadsResponse, |_| CallKind::Read;
    get_quotas(pb::GetQuotasRequest) -> pb::GetQuotasResponse, |_| CallKind::Read;
    /// Setting the same quota again changes nothing.
    set_quota(pb::SetQuotaRequest) -> pb::AdminEmpty, |_| CallKind::Idempotent;
}

impl Client {
    /// Every line of the audit log kept by the node this client reaches (make it a client of
    /// one node: [`Client::only`]), in file order, read page by page; and that node's id and
    /// last durable sequence number. Fails if the pages come from different nodes.
    pub async fn audit_log(&self) -> Result<AuditLog, Error> {
        let mut log = AuditLog::default();
        let mut node = None;
        loop {
            let req = pb::ReadAuditRequest { from_index: log.lines.len() as u64, max_records: 0 };
            let page = self.read_audit(req).await?;
            if node.is_some_and(|n| n != page.node) {
                let why = format!("the audit log's pages came from node {} and node {}", node.unwrap_or(0), page.node);
                return Err(Error::new(CallKind::Read, tonic::Status::failed_precondition(why), true));
            }
            node = Some(page.node);
            log.node = page.node;
            log.last_seq = log.last_seq.max(page.last_seq);
            let got = page.lines.len();
            log.lines.extend(page.lines);
            if got == 0 || log.lines.len() as u64 >= page.total {
                return Ok(log);
            }
        }
    }
}

/// One node's audit log as [`Client::audit_log`] read it.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    pub node: u64,
    pub last_seq: u64,
    pub lines: Vec<pb::AuditLine>,
}
