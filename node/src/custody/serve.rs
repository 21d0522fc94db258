//! Serving this node's decryption share to a peer that unwraps, and the checks before it does.
//!
//! **Architecture Invariant:** a node contributes a share only for a wrapped key that its own
//! replicated state holds, for an enabled version of an enabled key, to a current member, named
//! by its mTLS certificate (`tls::Caller`; only in plaintext mode by the request itself), in
//! one of the key's allowed regions (`region.rs`). Re-wrap shares go only to the leader (or
//! its delegate inside the key's regions) while a new root waits.

use std::collections::BTreeSet;

use crypto::threshold;
use proto::internal::{DecryptionShareReply, DecryptionShareRequest};
use raft::{KeyRef, NodeId, WrappedMaterial};
use uuid::Uuid;

use super::{lock, Custody};
use crate::error::{NodeError, Result};

impl Custody {
    /// Serves a peer's request for this node's decryption share. `requester` is the node the
    /// caller's certificate names (in plaintext mode, the one the request names).
    pub async fn decryption_share_for(
        &self,
        requester: NodeId,
        request: &DecryptionShareRequest,
    ) -> Result<DecryptionShareReply> {
        if request.log_key {
            return self.log_key_share_for(requester, request).await;
        }
        let key_id =
            Uuid::from_slice(&request.key_id).map_err(|_| NodeError::Invalid("key_id must be 16 bytes".into()))?;
        if let Some(v) = self.consensus.state().sealed() {
            return Err(NodeError::Unavailable(format!(
                "node {} is sealed (waiting for log key v{v}); it gives shares of key material only once unsealed",
                self.id
            )));
        }
        // Learn the version first if the requester is ahead of us.
        self.consensus.wait_applied(request.min_applied_index).await?;
        self.check_member(requester)?;
        let (wrapped, allowed) = {
            let state = self.consensus.state().read();
            let key = state.store.resolve(&KeyRef::Id(key_id))?;
            let v = if request.rewrap {
                key.version(request.version)?
            } else {
                key.version_for(key.spec.usage(), request.version)
                    .map_err(|e| NodeError::Kms(raft::KmsError::InvalidState(format!("share refused: {e}"))))?
            };
            let wrapped = v.material.clone().ok_or(NodeError::Kms(raft::KmsError::VersionNotUsable {
                key: key_id,
                version: request.version,
                state: raft::Unusable::Destroyed,
            }))?;
            (wrapped, key.allowed_regions.clone())
        };
        self.check_requester_region(requester, key_id, &allowed)?;
        if request.rewrap {
            self.check_rewrap(requester, &allowed)?;
        }
        let reply = self.share_of(request, (key_id, request.version), &wrapped, || {
            format!("key {key_id} version {}", request.version)
        })?;
        let purpose = if request.rewrap { "re-wrap under the next root key" } else { "use" };
        tracing::info!(requester, %key_id, version = request.version, purpose, "audit: decryption share given");
        Ok(reply)
    }

    /// Our share of our own copy of a wrapped entry, with that copy and its root's public key
    /// set when it is under another root epoch than the requester's copy. The ciphertext's
    /// validity (threshold_crypto's CCA check, two pairings) is checked once per
    /// (entry, epoch): a wrapped form never changes within an epoch.
    fn share_of(
        &self,
        request: &DecryptionShareRequest,
        id: (Uuid, u32),
        wrapped: &WrappedMaterial,
        what: impl FnOnce() -> String,
    ) -> Result<DecryptionShareReply> {
        let epoch = wrapped.root_epoch;
        let holder = self
            .share_holder(epoch)?
            .ok_or_else(|| NodeError::Unavailable(format!("this node holds no share of root epoch {epoch}")))?;
        let checked = (id.0, id.1, epoch);
        if !lock(&self.verified).contains(&checked) {
            if !threshold::verify_wrapped(&wrapped.ciphertext)? {
                return Err(NodeError::Internal(format!(
                    "{} has a malformed wrapped ciphertext; refusing to give a share",
                    what()
                )));
            }
            lock(&self.verified).insert(checked);
        }
        let share = self.maybe_corrupt(holder.decryption_share_of_verified(&wrapped.ciphertext)?);
        let mut reply =
            DecryptionShareReply { share_index: holder.index(), share, root_epoch: epoch, ..Default::default() };
        if epoch != request.root_epoch {
            reply.ciphertext = wrapped.ciphertext.clone();
            reply.public_key_set = self
                .consensus
                .state()
                .read()
                .store
                .root_of_epoch(epoch)
                .map(|r| r.public_key_set.clone())
                .ok_or_else(|| NodeError::Unavailable(format!("root epoch {epoch} was just replaced; retry")))?;
        }
        Ok(reply)
    }

    fn check_member(&self, requester: NodeId) -> Result<()> {
        if !self.consensus.members().iter().any(|(id, _)| *id == requester) {
            return Err(NodeError::PermissionDenied(format!("node {requester} is not a member of this cluster")));
        }
        Ok(())
    }

    /// Shares of a region-restricted key go only to members whose membership entry names one
    /// of its regions.
    fn check_requester_region(&self, requester: NodeId, key_id: Uuid, allowed: &BTreeSet<String>) -> Result<()> {
        if allowed.is_empty() || crate::failpoint("node::ignore-key-regions") {
            return Ok(());
        }
        let region = self.consensus.region_of(requester).unwrap_or_default();
        if !allowed.contains(&region) {
            return Err(NodeError::PermissionDenied(format!(
                "key {key_id} may be unwrapped only in regions {allowed:?}; node {requester} is in region {region:?}: \
                 no share"
            )));
        }
        Ok(())
    }

    /// Shares for re-wrapping (of any non-destroyed version, whatever its key's state) go only
    /// while a new root key waits to replace the root, and only to this node's current leader
    /// or, for a key restricted to regions the leader is not in, to a node in them (the
    /// leader's delegate, `region::rewrap_for`).
    fn check_rewrap(&self, requester: NodeId, allowed: &BTreeSet<String>) -> Result<()> {
        if self.consensus.state().read().store.next_root().is_none() {
            return Err(NodeError::PermissionDenied("no root rotation is under way: no re-wrap shares".into()));
        }
        let leader = self.consensus.leader().map(|(id, _)| id);
        let leader_outside = !allowed.is_empty()
            && leader.and_then(|l| self.consensus.region_of(l)).is_none_or(|region| !allowed.contains(&region));
        if leader != Some(requester) && !leader_outside {
            return Err(NodeError::PermissionDenied(format!(
                "node {requester} asked for re-wrap shares but is not this node's leader"
            )));
        }
        Ok(())
    }

    /// A share of a log key version, for a member unsealing. Answered from the keyring, which
    /// a sealed node has too: a cluster whose every node restarted unseals once t+1 are up.
    async fn log_key_share_for(
        &self,
        requester: NodeId,
        request: &DecryptionShareRequest,
    ) -> Result<DecryptionShareReply> {
        // A replaced root's wrapping, for a node restarted from a snapshot before the
        // replacement, while the root is retired; else our own.
        let lookup = || {
            let state = self.consensus.state().read();
            let retired = state.store.retired().get(&request.root_epoch).and_then(|r| r.log_keys.get(&request.version));
            retired.or_else(|| state.store.log_keys().get(&request.version)).cloned()
        };
        let wrapped = match lookup() {
            Some(w) => w,
            None => {
                // The requester may be ahead of us.
                self.consensus.wait_applied(request.min_applied_index).await?;
                lookup().ok_or_else(|| {
                    NodeError::Kms(raft::KmsError::NotFound(format!(
                        "log key version {} does not exist",
                        request.version
                    )))
                })?
            }
        };
        self.check_member(requester)?;
        // The log key's versions are remembered as checked under the nil key id.
        let reply = self.share_of(request, (Uuid::nil(), request.version), &wrapped, || {
            format!("log key version {}", request.version)
        })?;
        tracing::info!(requester, version = request.version, "audit: log key decryption share given");
        Ok(reply)
    }

    /// Failpoint (simulator self-test): `node::corrupt-decryption-shares` with `return(ID)`
    /// makes node ID give corrupted shares, as a faulty or malicious holder would.
    fn maybe_corrupt(&self, mut share: Vec<u8>) -> Vec<u8> {
        if crate::failpoint_arg("node::corrupt-decryption-shares").is_some_and(|id| id == self.id.to_string()) {
            if let Some(last) = share.last_mut() {
                *last ^= 0x5a;
            }
        }
        share
    }
}
