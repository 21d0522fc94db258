//! `keyquorum.v1.Kms`: each RPC's request into a KMS operation with its call context, through
//! the application layer (`crate::kms`), and the outcome (or the forwarded member's answer)
//! back into its response.

use std::future::Future;
use std::sync::Arc;

use proto::v1 as pb;
use proto::v1::kms_client::KmsClient;
use proto::v1::kms_server::Kms as KmsRpc;
use raft::{KeyChange, DELETION_DAYS_DEFAULT};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert::{self as c, key_ref, token};
use super::{context, forward::forward};
use crate::error::Result;
use crate::kms::{CallContext, Kms, Op, Out, Routed};

type Answer<R> = std::result::Result<Response<R>, Status>;

#[derive(Debug)]
pub(crate) struct KmsService(pub Arc<Kms>);

impl KmsService {
    /// The call's context and message.
    fn open<T>(&self, request: Request<T>) -> std::result::Result<(CallContext, T), Status> {
        let ctx = context(self.0.node(), &request)?;
        Ok((ctx, request.into_inner()))
    }

    /// Runs `op` for `ctx`; its outcome through `answer`, or, when another member serves it,
    /// that member's answer to the request `wire` makes of it, sent with `send`.
    async fn run<W, R, Fut>(
        &self,
        ctx: CallContext,
        op: Result<Op>,
        answer: fn(Out) -> Result<R>,
        wire: fn(&Op, &CallContext) -> Option<W>,
        send: impl Fn(KmsClient<Channel>, Request<W>) -> Fut,
    ) -> Answer<R>
    where
        W: Clone,
        Fut: Future<Output = Answer<R>>,
    {
        match self.0.execute(&ctx, op?).await? {
            Routed::Served(out) => Ok(Response::new(answer(out)?)),
            Routed::Forward(to, op) => {
                let message =
                    wire(&op, &ctx).ok_or_else(|| Status::internal(format!("cannot forward {}", op.name())))?;
                let max = self.0.node().config().limits.max_message_bytes;
                let client = |ch| KmsClient::new(ch).max_decoding_message_size(max).max_encoding_message_size(max);
                forward(self.0.node(), &ctx, to.map(answer)?, client, message, send).await
            }
        }
    }

    /// Runs `op`, which this node always serves itself.
    async fn serve<R>(&self, ctx: CallContext, op: Result<Op>, answer: fn(Out) -> Result<R>) -> Answer<R> {
        match self.0.execute(&ctx, op?).await? {
            Routed::Served(out) => Ok(Response::new(answer(out)?)),
            Routed::Forward(_, op) => Err(Status::internal(format!("{} is never forwarded", op.name()))),
        }
    }

    /// A change to the metadata of `key`, with the request's idempotency token.
    async fn update(&self, ctx: CallContext, key: &str, tok: &str, change: KeyChange) -> Answer<pb::KeyResponse> {
        let ctx = ctx.with_token(token(tok)?);
        self.serve(ctx, key_ref(key).map(|key| Op::UpdateKey { key, change }), c::key_response).await
    }
}

#[tonic::async_trait]
impl KmsRpc for KmsService {
    async fn create_key(&self, request: Request<pb::CreateKeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_token(token(&r.idempotency_token)?);
        let op = c::new_key(&r).map(Op::CreateKey);
        self.run(ctx, op, c::key_response, c::create_key_request, |mut k, r| async move { k.create_key(r).await }).await
    }

    async fn describe_key(&self, request: Request<pb::DescribeKeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        self.serve(ctx, key_ref(&r.key).map(|key| Op::DescribeKey { key }), c::key_response).await
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Answer<pb::ListKeysResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let op = c::page(&r).map(|(after, page_size)| Op::ListKeys { after, page_size });
        self.serve(ctx, op, c::list_keys_response).await
    }

    async fn create_alias(&self, request: Request<pb::CreateAliasRequest>) -> Answer<pb::Empty> {
        let (ctx, r) = self.open(request)?;
        let op = (|| Ok(Op::CreateAlias { alias: c::alias_name(&r.alias)?, key: key_ref(&r.key)? }))();
        self.serve(ctx, op, c::empty).await
    }

    async fn delete_alias(&self, request: Request<pb::DeleteAliasRequest>) -> Answer<pb::Empty> {
        let (ctx, r) = self.open(request)?;
        self.serve(ctx, c::alias_name(&r.alias).map(|alias| Op::DeleteAlias { alias }), c::empty).await
    }

    async fn update_key_description(
        &self,
        request: Request<pb::UpdateKeyDescriptionRequest>,
    ) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::SetDescription(r.description)).await
    }

    async fn tag_key(&self, request: Request<pb::TagKeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::Tag(r.tags.into_iter().collect())).await
    }

    async fn untag_key(&self, request: Request<pb::UntagKeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::Untag(r.tag_keys)).await
    }

    async fn enable_key(&self, request: Request<pb::KeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::Enable).await
    }

    async fn disable_key(&self, request: Request<pb::KeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::Disable).await
    }

    async fn schedule_key_deletion(&self, request: Request<pb::ScheduleKeyDeletionRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        let days = if r.pending_window_days == 0 { DELETION_DAYS_DEFAULT } else { r.pending_window_days };
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::ScheduleDeletion { days }).await
    }

    async fn cancel_key_deletion(&self, request: Request<pb::KeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::CancelDeletion).await
    }

    async fn rotate_key(&self, request: Request<pb::RotateKeyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_token(token(&r.idempotency_token)?);
        let op = key_ref(&r.key).map(|key| Op::RotateKey { key });
        self.run(ctx, op, c::key_response, c::rotate_key_request, |mut k, r| async move { k.rotate_key(r).await }).await
    }

    async fn set_rotation_policy(&self, request: Request<pb::SetRotationPolicyRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        let period_days = (r.rotation_period_days > 0).then_some(r.rotation_period_days);
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::SetRotationPolicy { period_days }).await
    }

    async fn set_allowed_regions(&self, request: Request<pb::SetAllowedRegionsRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        let change = KeyChange::SetAllowedRegions(r.allowed_regions.into_iter().collect());
        self.update(ctx, &r.key, &r.idempotency_token, change).await
    }

    async fn list_key_versions(
        &self,
        request: Request<pb::ListKeyVersionsRequest>,
    ) -> Answer<pb::ListKeyVersionsResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        self.serve(ctx, key_ref(&r.key).map(|key| Op::ListKeyVersions { key }), c::versions_response).await
    }

    async fn enable_key_version(&self, request: Request<pb::KeyVersionRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::EnableVersion(r.version)).await
    }

    async fn disable_key_version(&self, request: Request<pb::KeyVersionRequest>) -> Answer<pb::KeyResponse> {
        let (ctx, r) = self.open(request)?;
        self.update(ctx, &r.key, &r.idempotency_token, KeyChange::DisableVersion(r.version)).await
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Answer<pb::EncryptResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let context = c::context(&r.encryption_context);
        let op = key_ref(&r.key).map(|key| Op::Encrypt { key, plaintext: r.plaintext, context });
        self.run(ctx, op, c::encrypt_response, c::encrypt_request, |mut k, r| async move { k.encrypt(r).await }).await
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Answer<pb::DecryptResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let op = c::decrypt(r);
        self.run(ctx, op, c::decrypt_response, c::decrypt_request, |mut k, r| async move { k.decrypt(r).await }).await
    }

    async fn re_encrypt(&self, request: Request<pb::ReEncryptRequest>) -> Answer<pb::ReEncryptResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let op = c::re_encrypt(r);
        let send = |mut k: KmsClient<Channel>, r| async move { k.re_encrypt(r).await };
        self.run(ctx, op, c::re_encrypt_response, c::re_encrypt_request, send).await
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Answer<pb::GenerateDataKeyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let op = c::data_key(&r, true);
        let send = |mut k: KmsClient<Channel>, r| async move { k.generate_data_key(r).await };
        self.run(ctx, op, c::data_key_response, c::data_key_request, send).await
    }

    async fn generate_data_key_without_plaintext(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Answer<pb::GenerateDataKeyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let op = c::data_key(&r, false);
        let send = |mut k: KmsClient<Channel>, r| async move { k.generate_data_key_without_plaintext(r).await };
        self.run(ctx, op, c::data_key_response, c::data_key_request, send).await
    }

    async fn generate_random(&self, request: Request<pb::GenerateRandomRequest>) -> Answer<pb::GenerateRandomResponse> {
        let (ctx, r) = self.open(request)?;
        self.serve(ctx, Ok(Op::GenerateRandom { bytes: r.number_of_bytes }), c::random_response).await
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Answer<pb::SignResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let op = key_ref(&r.key).map(|key| Op::Sign { key, message: r.message });
        self.run(ctx, op, c::sign_response, c::sign_request, |mut k, r| async move { k.sign(r).await }).await
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Answer<pb::VerifyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let version = (r.key_version != 0).then_some(r.key_version);
        let op = key_ref(&r.key).map(|key| Op::Verify { key, version, message: r.message, signature: r.signature });
        self.serve(ctx, op, c::verify_response).await
    }

    async fn get_public_key(&self, request: Request<pb::GetPublicKeyRequest>) -> Answer<pb::GetPublicKeyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        let version = (r.key_version != 0).then_some(r.key_version);
        self.serve(ctx, key_ref(&r.key).map(|key| Op::GetPublicKey { key, version }), c::public_key_response).await
    }

    async fn get_topology(&self, request: Request<pb::GetTopologyRequest>) -> Answer<pb::TopologyResponse> {
        let (ctx, _) = self.open(request)?;
        let send = |mut k: KmsClient<Channel>, r| async move { k.get_topology(r).await };
        let mut topology = self.run(ctx, Ok(Op::GetTopology), c::topology_response, c::topology_request, send).await?;
        // The leader's view, as this node answers it.
        topology.get_mut().answered_by = self.0.node().id();
        Ok(topology)
    }

    async fn get_key_policy(&self, request: Request<pb::GetKeyPolicyRequest>) -> Answer<pb::KeyPolicyResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        self.serve(ctx, key_ref(&r.key).map(|key| Op::GetKeyPolicy { key }), c::policy_response).await
    }

    async fn put_key_policy(&self, request: Request<pb::PutKeyPolicyRequest>) -> Answer<pb::Empty> {
        let (ctx, r) = self.open(request)?;
        let op = (|| Ok(Op::PutKeyPolicy { key: key_ref(&r.key)?, policy: c::policy(&r.policy)? }))();
        self.serve(ctx, op, c::empty).await
    }

    async fn create_grant(&self, request: Request<pb::CreateGrantRequest>) -> Answer<pb::GrantResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_token(token(&r.idempotency_token)?);
        self.serve(ctx, c::new_grant(&r), c::grant_response).await
    }

    async fn list_grants(&self, request: Request<pb::ListGrantsRequest>) -> Answer<pb::ListGrantsResponse> {
        let (ctx, r) = self.open(request)?;
        let ctx = ctx.with_consistency(c::consistency(r.consistency)?);
        self.serve(ctx, key_ref(&r.key).map(|key| Op::ListGrants { key }), c::grants_response).await
    }

    async fn revoke_grant(&self, request: Request<pb::RevokeGrantRequest>) -> Answer<pb::Empty> {
        let (ctx, r) = self.open(request)?;
        self.serve(ctx, c::revoke_grant(&r, false), c::empty).await
    }

    async fn retire_grant(&self, request: Request<pb::RevokeGrantRequest>) -> Answer<pb::Empty> {
        let (ctx, r) = self.open(request)?;
        self.serve(ctx, c::revoke_grant(&r, true), c::empty).await
    }
}
