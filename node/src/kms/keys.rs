//! The key lifecycle: the replicated commands behind creating, changing, rotating and
//! listing keys and aliases.

use raft::{Applied, Command, KeyChange, KeyRef, KeySpec};
use uuid::Uuid;

use super::{CallContext, KeyInfo, Kms, NewKey, Out};
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
        let NewKey { spec, description, tags, alias, rotation_period_days, allowed_regions } = new;
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
                material,
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

    pub(super) fn list_keys(&self, after: Option<Uuid>, page_size: usize) -> Result<Out> {
        let state = self.node.open_state()?;
        let keys = state.store.list(after, page_size + 1);
        let more = keys.len() > page_size;
        let page: Vec<KeyInfo> = keys
            .into_iter()
            .take(page_size)
            .map(|k| KeyInfo { key: k.clone(), aliases: state.store.aliases_of(k.id) })
            .collect();
        let next_after = if more { page.last().map(|k| k.key.id) } else { None };
        Ok(Out::Keys { keys: page, next_after })
    }

    pub(super) async fn create_alias(&self, alias: String, key: KeyRef) -> Result<Out> {
        self.node.consensus.propose(Command::CreateAlias { alias, key, now_ms: self.node.now_ms() }).await?;
        Ok(Out::Done)
    }

    pub(super) async fn delete_alias(&self, alias: String) -> Result<Out> {
        self.node.consensus.propose(Command::DeleteAlias { alias, now_ms: self.node.now_ms() }).await?;
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
        let command = Command::Update { key, change, token: ctx.token.clone(), now_ms: self.node.now_ms() };
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
