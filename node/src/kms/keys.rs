//! The key lifecycle: the replicated commands behind creating, changing, rotating and
//! listing keys and aliases.

use raft::{Applied, Command, Grant, Key, KeyChange, KeyPolicy, KeyRef, KeySpec, Permission};
use uuid::Uuid;

use super::{CallContext, KeyInfo, Kms, NewGrant, NewKey, Out};
use crate::error::{NodeError, Result};

impl Kms {
    fn key_out(&self, applied: Applied) -> Result<Out> {
        match applied {
            Applied::Key(key) => Ok(Out::Key(self.info(*key)?)),
            other => Err(NodeError::Internal(format!("unexpected apply outcome {other:?}"))),
        }
    }

    pub(super) async fn create_key(&self, ctx: &CallContext, new: NewKey) -> Result<Out> {
        let node = &self.node;
        let key_id = uuid::Builder::from_random_bytes(node.with_rng(|rng| rng.bytes::<16>())).into_uuid();
        let NewKey { spec, description, tags, alias, rotation_period_days, allowed_regions, policy } = new;
        let (applied, material, wrapped) = node
            .custody
            .propose_with_material(spec, |material| Command::CreateKey {
                token: ctx.token.clone(),
                key_id,
                spec,
                description: description.clone(),
                tags: tags.clone(),
                alias: alias.clone(),
                rotation_period_days,
                allowed_regions: allowed_regions.clone(),
                policy: policy.clone(),
                material,
                by: ctx.actor(),
                now_ms: node.now_ms(),
            })
            .await?;
        if let Applied::Key(k) = &applied {
            if k.id == key_id {
                // We made this material: no need to unwrap it again.
                node.custody.remember(key_id, 1, wrapped.root_epoch, material);
            }
        }
        self.key_out(applied)
    }

    /// A page of the keys the caller may describe.
    pub(super) fn list_keys(&self, ctx: &CallContext, after: Option<Uuid>, page_size: usize) -> Result<Out> {
        let now_ms = self.node.now_ms();
        let state = self.node.open_state()?;
        let visible = |k: &Key| match ctx.principal() {
            None => true,
            Some(principal) => {
                let request = raft::Request { principal, region: &ctx.region, context: None, now_ms };
                k.authorize(Permission::Describe, &request).is_ok()
            }
        };
        let keys: Vec<&Key> = state.store.keys_after(after).filter(|k| visible(k)).take(page_size + 1).collect();
        let more = keys.len() > page_size;
        let page: Vec<KeyInfo> = keys
            .into_iter()
            .take(page_size)
            .map(|k| KeyInfo { key: k.clone(), aliases: state.store.aliases_of(k.id) })
            .collect();
        let next_after = if more { page.last().map(|k| k.key.id) } else { None };
        Ok(Out::Keys { keys: page, next_after })
    }

    pub(super) async fn create_alias(&self, ctx: &CallContext, alias: String, key: KeyRef) -> Result<Out> {
        let command = Command::CreateAlias { alias, key, by: ctx.actor(), now_ms: self.node.now_ms() };
        self.node.consensus.propose(command).await?;
        Ok(Out::Done)
    }

    pub(super) async fn delete_alias(&self, ctx: &CallContext, alias: String) -> Result<Out> {
        self.node
            .consensus
            .propose(Command::DeleteAlias { alias, by: ctx.actor(), now_ms: self.node.now_ms() })
            .await?;
        Ok(Out::Done)
    }

    /// Makes a grant (authorized as it applies); its id is chosen here.
    pub(super) async fn create_grant(&self, ctx: &CallContext, key: KeyRef, new: NewGrant) -> Result<Out> {
        let node = &self.node;
        let id = uuid::Builder::from_random_bytes(node.with_rng(|rng| rng.bytes::<16>())).into_uuid();
        let NewGrant { grantee, operations, context, expires_ms } = new;
        let grant = Grant {
            id,
            grantee,
            operations,
            context,
            expires_ms,
            created_by: ctx.principal().cloned(),
            created_ms: node.now_ms(),
        };
        let by = ctx.actor();
        let command = Command::CreateGrant { key, grant, token: ctx.token.clone(), by, now_ms: node.now_ms() };
        match node.consensus.propose(command).await? {
            Applied::Grant { key, grant } => Ok(Out::Grant { key_id: key, grant: *grant }),
            other => Err(NodeError::Internal(format!("unexpected apply outcome {other:?}"))),
        }
    }

    /// Revokes or retires a grant (authorized as it applies).
    pub(super) async fn revoke_grant(&self, ctx: &CallContext, key: KeyRef, grant: Uuid, retire: bool) -> Result<Out> {
        let command = Command::RevokeGrant { key, grant, retire, by: ctx.actor(), now_ms: self.node.now_ms() };
        self.node.consensus.propose(command).await?;
        Ok(Out::Done)
    }

    /// Replaces a key's policy (authorized as it applies).
    pub(super) async fn put_policy(&self, ctx: &CallContext, key: KeyRef, policy: KeyPolicy) -> Result<Out> {
        let command = Command::PutKeyPolicy { key, policy, by: ctx.actor(), now_ms: self.node.now_ms() };
        self.node.consensus.propose(command).await?;
        Ok(Out::Done)
    }

    pub(super) async fn update_key(&self, ctx: &CallContext, key: KeyRef, change: KeyChange) -> Result<Out> {
        let evict = matches!(
            change,
            KeyChange::Disable
                | KeyChange::ScheduleDeletion { .. }
                | KeyChange::DisableVersion(_)
                | KeyChange::SetAllowedRegions(_)
        );
        let command =
            Command::Update { key, change, token: ctx.token.clone(), by: ctx.actor(), now_ms: self.node.now_ms() };
        let applied = self.node.consensus.propose(command).await?;
        if let (true, Applied::Key(k)) = (evict, &applied) {
            // At once here; every node also sweeps its cache as it applies the change.
            self.node.custody.evict(k.id);
        }
        self.key_out(applied)
    }

    /// Rotates `key` (as the caller named it), a key of `spec`.
    pub(super) async fn rotate_key(&self, ctx: &CallContext, key: KeyRef, spec: KeySpec) -> Result<Out> {
        let node = &self.node;
        let (applied, material, wrapped) = node
            .custody
            .propose_with_material(spec, |material| Command::RotateKey {
                key: key.clone(),
                token: ctx.token.clone(),
                material,
                if_primary_is: None,
                by: ctx.actor(),
                now_ms: node.now_ms(),
            })
            .await?;
        if let Applied::Key(k) = &applied {
            let primary = k.version(k.primary_version).ok().and_then(|v| v.material.as_ref());
            if primary == Some(&wrapped) {
                node.custody.remember(k.id, k.primary_version, wrapped.root_epoch, material);
            }
        }
        self.key_out(applied)
    }
}
