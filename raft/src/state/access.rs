//! Who may do what to a key, as replicated commands: replacing its policy and creating,
//! revoking and retiring grants. Each is authorized here, at apply, against the state the
//! command applies to, like every other write.

use uuid::Uuid;

use super::keys::authorize;
use super::KeyStore;
use crate::command::{Applied, CommandResult};
use crate::error::Action;
use crate::key::KeyRef;
use crate::policy::{Actor, Grant, KeyPolicy, Permission, MAX_GRANTS_PER_KEY};
use crate::KmsError;

impl KeyStore {
    /// Replaces a key's policy.
    pub(super) fn put_policy(
        &mut self,
        key: &KeyRef,
        policy: &KeyPolicy,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        let id = self.resolve_id(key)?;
        let k = self.key_mut(id)?;
        authorize(k, Permission::PutPolicy, by, *now_ms)?;
        policy.validate()?;
        k.policy = policy.clone();
        k.updated_ms = *now_ms;
        Ok(Applied::Done)
    }

    /// Adds a grant, dropping the key's expired ones first.
    pub(super) fn create_grant(
        &mut self,
        key: &KeyRef,
        grant: &Grant,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        let id = self.resolve_id(key)?;
        let k = self.key_mut(id)?;
        authorize(k, Permission::CreateGrant, by, *now_ms)?;
        grant.validate()?;
        k.ensure_mutable(Action::CreateGrant)?;
        if grant.expires_ms.is_some_and(|t| t <= *now_ms) {
            return Err(KmsError::Invalid("the grant's expiry has already passed".into()));
        }
        if by.as_ref().map(|a| &a.principal) != grant.created_by.as_ref() {
            return Err(KmsError::Invalid("a grant's creator is the principal that creates it".into()));
        }
        if k.grants.contains_key(&grant.id) {
            return Err(KmsError::AlreadyExists(format!("grant {} of key {id}", grant.id)));
        }
        k.grants.retain(|_, g| g.expires_ms.is_none_or(|t| t > *now_ms));
        if k.grants.len() >= MAX_GRANTS_PER_KEY {
            return Err(KmsError::Invalid(format!(
                "key {id} has {MAX_GRANTS_PER_KEY} live grants, the limit: revoke or retire one first"
            )));
        }
        let grant = Grant { created_ms: *now_ms, ..grant.clone() };
        k.grants.insert(grant.id, grant.clone());
        Ok(Applied::Grant { key: id, grant: Box::new(grant) })
    }

    /// Removes a grant: revoked by a principal with RevokeGrant, or retired by its grantee.
    pub(super) fn revoke_grant(
        &mut self,
        key: &KeyRef,
        grant: &Uuid,
        retire: bool,
        by: &Option<Actor>,
        now_ms: &u64,
    ) -> CommandResult {
        let id = self.resolve_id(key)?;
        let k = self.key_mut(id)?;
        let found = k.grants.get(grant);
        let grantee_retires = retire && by.as_ref().zip(found).is_some_and(|(a, g)| a.principal == g.grantee);
        if !grantee_retires {
            authorize(k, Permission::RevokeGrant, by, *now_ms)?;
        }
        k.grants.remove(grant).map(|_| Applied::Done).ok_or(KmsError::GrantNotFound { key: id, grant: *grant })
    }
}
