//! The public KMS service (`keyquorum.v1.Kms`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use crypto::{ciphertext, ecdsa, MAX_PLAINTEXT_LEN};
use proto::v1 as pb;
use proto::v1::kms_client::KmsClient;
use proto::v1::kms_server::Kms;
use raft::{Applied, Command, Key, KeyChange, KeyRef, KeySpec, KeyUsage, DELETION_DAYS_DEFAULT};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::consensus::Consistency;
use crate::convert::{self, alias_name, consistency, key_ref};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::region::{regions_for_all, FORWARDED_BY};

#[derive(Debug)]
pub(crate) struct KmsService(pub Arc<Node>);

const MAX_RANDOM_BYTES: u32 = 1024;

fn ok<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

fn token(t: &str) -> Result<Option<String>> {
    match t.len() {
        0 => Ok(None),
        1..=128 => Ok(Some(t.to_string())),
        _ => Err(NodeError::Invalid("idempotency_token is at most 128 characters".into())),
    }
}

/// Whether a call came forwarded by another node, and its message.
fn split<T>(request: Request<T>) -> (bool, T) {
    (request.metadata().contains_key(FORWARDED_BY), request.into_inner())
}

/// The `allowed_regions` of a request, checked.
fn allowed_regions(regions: Vec<String>) -> Result<BTreeSet<String>> {
    let set: BTreeSet<String> = regions.into_iter().collect();
    raft::check_regions(&set)?;
    Ok(set)
}

impl KmsService {
    /// What serving `r` here gave or, when it needs the material of a key this node's region
    /// may not hold (`OutOfRegion`), the call forwarded to a node in the key's regions
    /// (`region`). `forwarded`: the call came forwarded (`split`).
    async fn or_forward<T, R, F, FFut>(
        &self,
        served: Result<R>,
        forwarded: bool,
        r: T,
        idempotent: bool,
        forward: F,
    ) -> std::result::Result<Response<R>, Status>
    where
        T: Clone,
        F: Fn(KmsClient<Channel>, Request<T>) -> FFut,
        FFut: Future<Output = std::result::Result<Response<R>, Status>>,
    {
        match served {
            Err(e @ NodeError::OutOfRegion { .. }) => self.0.forward_kms(e, forwarded, r, idempotent, forward).await,
            other => ok(other),
        }
    }

    fn key_response(&self, applied: Applied) -> Result<pb::KeyResponse> {
        match applied {
            Applied::Key(key) => {
                let aliases = self.0.state().read().store.aliases_of(key.id);
                Ok(pb::KeyResponse { key: Some(convert::metadata(&key, aliases)) })
            }
            other => Err(NodeError::Internal(format!("unexpected apply outcome {other:?}"))),
        }
    }

    async fn change(&self, key: &str, change: KeyChange, token: String) -> Result<pb::KeyResponse> {
        self.0.ensure_initialized().await?;
        let key = key_ref(key)?;
        let evict = matches!(
            change,
            KeyChange::Disable
                | KeyChange::ScheduleDeletion { .. }
                | KeyChange::DisableVersion(_)
                | KeyChange::SetAllowedRegions(_)
        );
        let token = (!token.is_empty()).then_some(token);
        let applied = self.0.consensus.propose(Command::Update { key, change, token, now_ms: self.0.now_ms() }).await?;
        if let (true, Applied::Key(k)) = (evict, &applied) {
            // At once here; every node also sweeps its cache as it applies the change
            // (`Custody::sweep_cache`).
            self.0.custody.evict(k.id);
        }
        self.key_response(applied)
    }

    /// The spec of `key`, to generate new material for it. A key's spec never changes, so local
    /// state answers when it knows the key by id; otherwise (this node may lag behind a create,
    /// or an alias may since point elsewhere) the read index decides, so a retried write never
    /// gets a stale NotFound.
    async fn key_spec(&self, key: &KeyRef) -> Result<KeySpec> {
        let local = match key {
            KeyRef::Id(_) => self.0.state().read().store.resolve(key).map(|k| k.spec).ok(),
            KeyRef::Alias(_) => None,
        };
        match local {
            Some(spec) => Ok(spec),
            None => {
                self.0.linearize(Consistency::Linearizable).await?;
                Ok(self.0.state().read().store.resolve(key)?.spec)
            }
        }
    }

    /// Waits for `consistency`, then reads the key.
    async fn read_key(&self, key: &str, consistency: Consistency) -> Result<Key> {
        self.0.ensure_initialized().await?;
        let key = key_ref(key)?;
        self.0.linearize(consistency).await?;
        Ok(self.0.state().read().store.resolve(&key)?.clone())
    }

    async fn encrypt_with(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
        consistency: Consistency,
    ) -> Result<(Vec<u8>, Uuid, u32)> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(NodeError::Invalid(format!(
                "plaintext is {} bytes; the limit is {MAX_PLAINTEXT_LEN} (64 KiB): encrypt a data key instead (envelope encryption)",
                plaintext.len()
            )));
        }
        let key = self.read_key(key, consistency).await?;
        let mut version = key.primary_for(KeyUsage::EncryptDecrypt)?;
        // Failpoint (simulator self-test): keep encrypting under the version before the
        // latest rotation.
        if crate::failpoint("node::encrypt-with-previous-version") && version.version > 1 {
            version = key.version_for(KeyUsage::EncryptDecrypt, version.version - 1)?;
        }
        let material = self.0.custody.material(&key, version).await?;
        let ct =
            self.0.with_rng(|rng| ciphertext::encrypt(&material, key.id, version.version, context, plaintext, rng))?;
        Ok((ct, key.id, version.version))
    }

    async fn decrypt_with(
        &self,
        ct: &[u8],
        context: &BTreeMap<String, String>,
        expected_key: &str,
        consistency: Consistency,
    ) -> Result<(crypto::SecretBytes, Uuid, u32)> {
        let header = ciphertext::parse_header(ct)?;
        let key = self.read_key(&header.key_id.to_string(), consistency).await.map_err(|e| match e {
            NodeError::Kms(raft::KmsError::NotFound(_)) => NodeError::Invalid(format!(
                "the ciphertext names key {}, which does not exist in this cluster",
                header.key_id
            )),
            other => other,
        })?;
        if !expected_key.is_empty() {
            let expected = self.0.state().read().store.resolve(&key_ref(expected_key)?)?.id;
            if expected != key.id {
                return Err(NodeError::Invalid(format!(
                    "the ciphertext belongs to key {}, not to {expected_key}",
                    key.id
                )));
            }
        }
        let version = key.version_for(KeyUsage::EncryptDecrypt, header.key_version)?;
        let material = self.0.custody.material(&key, version).await?;
        let plaintext = ciphertext::decrypt(&material, ct, context)?;
        Ok((plaintext, key.id, version.version))
    }

    async fn data_key(
        &self,
        r: &pb::GenerateDataKeyRequest,
        with_plaintext: bool,
    ) -> Result<pb::GenerateDataKeyResponse> {
        let n = if r.number_of_bytes == 0 { 32 } else { r.number_of_bytes };
        if n > MAX_RANDOM_BYTES {
            return Err(NodeError::Invalid(format!("number_of_bytes must be 1-{MAX_RANDOM_BYTES}")));
        }
        let plaintext = self.0.with_rng(|rng| {
            let mut b = vec![0u8; n as usize];
            rand_core::RngCore::fill_bytes(rng, &mut b);
            crypto::SecretBytes::new(b)
        });
        let context = convert::context(&r.encryption_context);
        let (ct, key_id, key_version) =
            self.encrypt_with(&r.key, plaintext.expose(), &context, consistency(r.consistency)?).await?;
        Ok(pb::GenerateDataKeyResponse {
            plaintext: if with_plaintext { plaintext.expose().to_vec() } else { Vec::new() },
            ciphertext: ct,
            key_id: key_id.to_string(),
            key_version,
        })
    }

    /// Re-encrypting needs both keys' material on one node: refuses (`OutOfRegion`, so the
    /// call is forwarded) unless this node's region may use both, as far as this node's
    /// state knows them (a key it does not know yet is checked when it is used).
    fn check_regions_for_both(&self, ciphertext: &[u8], destination: &str) -> Result<()> {
        let Ok(header) = ciphertext::parse_header(ciphertext) else { return Ok(()) };
        let state = self.0.state().read();
        let source = state.store.resolve(&KeyRef::Id(header.key_id)).ok();
        let destination = if destination.is_empty() { None } else { state.store.resolve(&key_ref(destination)?).ok() };
        let what = || match destination {
            Some(d) if d.id != header.key_id => format!("re-encrypting from key {} to key {}", header.key_id, d.id),
            _ => format!("key {}", header.key_id),
        };
        match regions_for_all(source.into_iter().chain(destination)) {
            Some(allowed) => self.0.custody.check_allowed(&what(), &allowed),
            None => Err(NodeError::Invalid(format!(
                "{}: the two keys' allowed regions do not overlap, so no node may hold both",
                what()
            ))),
        }
    }

    fn version_or_primary(key: &Key, usage: KeyUsage, version: u32) -> Result<&raft::KeyVersion> {
        Ok(if version == 0 { key.primary_for(usage)? } else { key.version_for(usage, version)? })
    }
}

/// The SEC1 public point of a signing key version (stored in the clear, no unwrap needed).
fn public_key(version: &raft::KeyVersion) -> Result<Vec<u8>> {
    version
        .material
        .as_ref()
        .and_then(|m| m.public_key.clone())
        .ok_or_else(|| NodeError::Internal("signing key version without a public key".into()))
}

#[tonic::async_trait]
impl Kms for KmsService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let idempotent = !request.get_ref().idempotency_token.is_empty();
        let (forwarded, r) = split(request);
        let served = async {
            self.0.ensure_initialized().await?;
            let spec = convert::spec(r.spec, r.usage)?;
            let allowed_regions = allowed_regions(r.allowed_regions.clone())?;
            // The material is made where the key is created: only inside its regions.
            self.0.custody.check_allowed("the new key", &allowed_regions)?;
            let alias = if r.alias.is_empty() { None } else { Some(alias_name(&r.alias)?) };
            let key_id = uuid::Builder::from_random_bytes(self.0.with_rng(|rng| rng.bytes::<16>())).into_uuid();
            let token = token(&r.idempotency_token)?;
            let tags: std::collections::BTreeMap<_, _> = r.tags.clone().into_iter().collect();
            let rotation_period_days = (r.rotation_period_days > 0).then_some(r.rotation_period_days);
            let (applied, material, wrapped) = self
                .0
                .custody
                .propose_with_material(spec, |material| Command::CreateKey {
                    token: token.clone(),
                    key_id,
                    spec,
                    description: r.description.clone(),
                    tags: tags.clone(),
                    alias: alias.clone(),
                    rotation_period_days,
                    allowed_regions: allowed_regions.clone(),
                    material,
                    now_ms: self.0.now_ms(),
                })
                .await?;
            if let Applied::Key(k) = &applied {
                if k.id == key_id {
                    // We made this material: no need to unwrap it again.
                    self.0.custody.remember(key_id, 1, wrapped.root_epoch, material);
                }
            }
            self.key_response(applied)
        }
        .await;
        self.or_forward(served, forwarded, r, idempotent, |mut c, r| async move { c.create_key(r).await }).await
    }

    async fn describe_key(
        &self,
        request: Request<pb::DescribeKeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(async {
            let key = self.read_key(&r.key, consistency(r.consistency)?).await?;
            self.key_response(Applied::Key(Box::new(key)))
        }
        .await)
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> std::result::Result<Response<pb::ListKeysResponse>, Status> {
        let r = request.into_inner();
        ok(async {
            self.0.ensure_initialized().await?;
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
            self.0.linearize(consistency(r.consistency)?).await?;
            let state = self.0.state().read();
            let keys = state.store.list(after, page_size + 1);
            let more = keys.len() > page_size;
            let page: Vec<_> = keys.into_iter().take(page_size).collect();
            let next_page_token =
                if more { page.last().map(|k| k.id.to_string()).unwrap_or_default() } else { String::new() };
            Ok(pb::ListKeysResponse {
                keys: page.iter().map(|k| convert::metadata(k, state.store.aliases_of(k.id))).collect(),
                next_page_token,
            })
        }
        .await)
    }

    async fn create_alias(
        &self,
        request: Request<pb::CreateAliasRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        let r = request.into_inner();
        ok(async {
            self.0.ensure_initialized().await?;
            let command =
                Command::CreateAlias { alias: alias_name(&r.alias)?, key: key_ref(&r.key)?, now_ms: self.0.now_ms() };
            self.0.consensus.propose(command).await?;
            Ok(pb::Empty {})
        }
        .await)
    }

    async fn delete_alias(
        &self,
        request: Request<pb::DeleteAliasRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        let r = request.into_inner();
        ok(async {
            self.0.ensure_initialized().await?;
            self.0
                .consensus
                .propose(Command::DeleteAlias { alias: alias_name(&r.alias)?, now_ms: self.0.now_ms() })
                .await?;
            Ok(pb::Empty {})
        }
        .await)
    }

    async fn update_key_description(
        &self,
        request: Request<pb::UpdateKeyDescriptionRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(self.change(&r.key, KeyChange::SetDescription(r.description), r.idempotency_token).await)
    }

    async fn tag_key(
        &self,
        request: Request<pb::TagKeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(self.change(&r.key, KeyChange::Tag(r.tags.into_iter().collect()), r.idempotency_token).await)
    }

    async fn untag_key(
        &self,
        request: Request<pb::UntagKeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(self.change(&r.key, KeyChange::Untag(r.tag_keys), r.idempotency_token).await)
    }

    async fn enable_key(
        &self,
        request: Request<pb::KeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        {
            let r = request.into_inner();
            ok(self.change(&r.key, KeyChange::Enable, r.idempotency_token).await)
        }
    }

    async fn disable_key(
        &self,
        request: Request<pb::KeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        {
            let r = request.into_inner();
            ok(self.change(&r.key, KeyChange::Disable, r.idempotency_token).await)
        }
    }

    async fn schedule_key_deletion(
        &self,
        request: Request<pb::ScheduleKeyDeletionRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        let days = if r.pending_window_days == 0 { DELETION_DAYS_DEFAULT } else { r.pending_window_days };
        ok(self.change(&r.key, KeyChange::ScheduleDeletion { days }, r.idempotency_token).await)
    }

    async fn cancel_key_deletion(
        &self,
        request: Request<pb::KeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        {
            let r = request.into_inner();
            ok(self.change(&r.key, KeyChange::CancelDeletion, r.idempotency_token).await)
        }
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let idempotent = !request.get_ref().idempotency_token.is_empty();
        let (forwarded, r) = split(request);
        let served = async {
            self.0.ensure_initialized().await?;
            let key = key_ref(&r.key)?;
            let spec = self.key_spec(&key).await?;
            // The new material is made here: only inside the key's regions.
            let local = self.0.state().read().store.resolve(&key).ok().cloned();
            if let Some(k) = local {
                self.0.custody.check_region(&k)?;
            }
            let token = token(&r.idempotency_token)?;
            let (applied, material, wrapped) = self
                .0
                .custody
                .propose_with_material(spec, |material| Command::RotateKey {
                    key: key.clone(),
                    token: token.clone(),
                    material,
                    if_primary_is: None,
                    now_ms: self.0.now_ms(),
                })
                .await?;
            if let Applied::Key(k) = &applied {
                let primary = k.version(k.primary_version).ok().and_then(|v| v.material.as_ref());
                if primary == Some(&wrapped) {
                    self.0.custody.remember(k.id, k.primary_version, wrapped.root_epoch, material);
                }
            }
            self.key_response(applied)
        }
        .await;
        self.or_forward(served, forwarded, r, idempotent, |mut c, r| async move { c.rotate_key(r).await }).await
    }

    async fn set_rotation_policy(
        &self,
        request: Request<pb::SetRotationPolicyRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        let period_days = (r.rotation_period_days > 0).then_some(r.rotation_period_days);
        ok(self.change(&r.key, KeyChange::SetRotationPolicy { period_days }, r.idempotency_token).await)
    }

    async fn set_allowed_regions(
        &self,
        request: Request<pb::SetAllowedRegionsRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(async {
            let regions = allowed_regions(r.allowed_regions)?;
            self.change(&r.key, KeyChange::SetAllowedRegions(regions), r.idempotency_token).await
        }
        .await)
    }

    async fn list_key_versions(
        &self,
        request: Request<pb::ListKeyVersionsRequest>,
    ) -> std::result::Result<Response<pb::ListKeyVersionsResponse>, Status> {
        let r = request.into_inner();
        ok(async {
            let key = self.read_key(&r.key, consistency(r.consistency)?).await?;
            Ok(pb::ListKeyVersionsResponse { versions: convert::versions(&key) })
        }
        .await)
    }

    async fn enable_key_version(
        &self,
        request: Request<pb::KeyVersionRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(self.change(&r.key, KeyChange::EnableVersion(r.version), r.idempotency_token).await)
    }

    async fn disable_key_version(
        &self,
        request: Request<pb::KeyVersionRequest>,
    ) -> std::result::Result<Response<pb::KeyResponse>, Status> {
        let r = request.into_inner();
        ok(self.change(&r.key, KeyChange::DisableVersion(r.version), r.idempotency_token).await)
    }

    async fn encrypt(
        &self,
        request: Request<pb::EncryptRequest>,
    ) -> std::result::Result<Response<pb::EncryptResponse>, Status> {
        let (forwarded, r) = split(request);
        let served = async {
            let context = convert::context(&r.encryption_context);
            let (ciphertext, key_id, key_version) =
                self.encrypt_with(&r.key, &r.plaintext, &context, consistency(r.consistency)?).await?;
            Ok(pb::EncryptResponse { ciphertext, key_id: key_id.to_string(), key_version })
        }
        .await;
        self.or_forward(served, forwarded, r, true, |mut c, r| async move { c.encrypt(r).await }).await
    }

    async fn decrypt(
        &self,
        request: Request<pb::DecryptRequest>,
    ) -> std::result::Result<Response<pb::DecryptResponse>, Status> {
        let (forwarded, r) = split(request);
        let served = async {
            let context = convert::context(&r.encryption_context);
            let (plaintext, key_id, key_version) =
                self.decrypt_with(&r.ciphertext, &context, &r.key, consistency(r.consistency)?).await?;
            Ok(pb::DecryptResponse { plaintext: plaintext.expose().to_vec(), key_id: key_id.to_string(), key_version })
        }
        .await;
        self.or_forward(served, forwarded, r, true, |mut c, r| async move { c.decrypt(r).await }).await
    }

    async fn re_encrypt(
        &self,
        request: Request<pb::ReEncryptRequest>,
    ) -> std::result::Result<Response<pb::ReEncryptResponse>, Status> {
        let (forwarded, r) = split(request);
        let served = async {
            let level = consistency(r.consistency)?;
            self.check_regions_for_both(&r.ciphertext, &r.destination_key)?;
            let source_context = convert::context(&r.source_encryption_context);
            let (plaintext, source_id, source_version) =
                self.decrypt_with(&r.ciphertext, &source_context, "", level).await?;
            let destination =
                if r.destination_key.is_empty() { source_id.to_string() } else { r.destination_key.clone() };
            let destination_context = convert::context(&r.destination_encryption_context);
            let (ciphertext, key_id, key_version) =
                self.encrypt_with(&destination, plaintext.expose(), &destination_context, level).await?;
            Ok(pb::ReEncryptResponse {
                ciphertext,
                source_key_id: source_id.to_string(),
                source_key_version: source_version,
                key_id: key_id.to_string(),
                key_version,
            })
        }
        .await;
        self.or_forward(served, forwarded, r, true, |mut c, r| async move { c.re_encrypt(r).await }).await
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> std::result::Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let (forwarded, r) = split(request);
        let served = self.data_key(&r, true).await;
        self.or_forward(served, forwarded, r, true, |mut c, r| async move { c.generate_data_key(r).await }).await
    }

    async fn generate_data_key_without_plaintext(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> std::result::Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let (forwarded, r) = split(request);
        let served = self.data_key(&r, false).await;
        let forward = |mut c: KmsClient<Channel>, r| async move { c.generate_data_key_without_plaintext(r).await };
        self.or_forward(served, forwarded, r, true, forward).await
    }

    async fn generate_random(
        &self,
        request: Request<pb::GenerateRandomRequest>,
    ) -> std::result::Result<Response<pb::GenerateRandomResponse>, Status> {
        let n = request.into_inner().number_of_bytes;
        ok(async {
            // Needs no state, but a sealed node serves no client request.
            self.0.ensure_unsealed()?;
            if !(1..=MAX_RANDOM_BYTES).contains(&n) {
                return Err(NodeError::Invalid(format!("number_of_bytes must be 1-{MAX_RANDOM_BYTES}, got {n}")));
            }
            let random = self.0.with_rng(|rng| {
                let mut b = vec![0u8; n as usize];
                rand_core::RngCore::fill_bytes(rng, &mut b);
                b
            });
            Ok(pb::GenerateRandomResponse { random })
        }
        .await)
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> std::result::Result<Response<pb::SignResponse>, Status> {
        let (forwarded, r) = split(request);
        let served = async {
            if r.message.len() > MAX_PLAINTEXT_LEN {
                return Err(NodeError::Invalid(format!("message is over {MAX_PLAINTEXT_LEN} bytes")));
            }
            let key = self.read_key(&r.key, consistency(r.consistency)?).await?;
            let version = key.primary_for(KeyUsage::SignVerify)?;
            let scalar = self.0.custody.material(&key, version).await?;
            let signature = ecdsa::sign(&scalar, &r.message)?;
            Ok(pb::SignResponse { signature, key_id: key.id.to_string(), key_version: version.version })
        }
        .await;
        self.or_forward(served, forwarded, r, true, |mut c, r| async move { c.sign(r).await }).await
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> std::result::Result<Response<pb::VerifyResponse>, Status> {
        let r = request.into_inner();
        ok(async {
            let key = self.read_key(&r.key, consistency(r.consistency)?).await?;
            let version = Self::version_or_primary(&key, KeyUsage::SignVerify, r.key_version)?;
            let public = public_key(version)?;
            match ecdsa::verify_der(&public, &r.message, &r.signature) {
                Ok(()) => Ok(pb::VerifyResponse { valid: true }),
                Err(crypto::CryptoError::BadSignature) => Ok(pb::VerifyResponse { valid: false }),
                Err(e) => Err(e.into()),
            }
        }
        .await)
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> std::result::Result<Response<pb::GetPublicKeyResponse>, Status> {
        let r = request.into_inner();
        ok(async {
            let key = self.read_key(&r.key, consistency(r.consistency)?).await?;
            let version = Self::version_or_primary(&key, KeyUsage::SignVerify, r.key_version)?;
            let public = public_key(version)?;
            let (der, pem) = ecdsa::public_key_spki(&public)?;
            Ok(pb::GetPublicKeyResponse {
                key_id: key.id.to_string(),
                key_version: version.version,
                public_key_der: der,
                public_key_pem: pem,
            })
        }
        .await)
    }

    async fn get_topology(
        &self,
        request: Request<pb::GetTopologyRequest>,
    ) -> std::result::Result<Response<pb::TopologyResponse>, Status> {
        let (forwarded, _) = split(request);
        ok(self.0.topology(forwarded).await)
    }
}
