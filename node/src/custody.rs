//! Unwrapping key material with the threshold root key: this node's own decryption share plus
//! shares from peers, combined optimistically and checked against the key-check value.
//!
//! **Architecture Invariant:** a node contributes a share only for a wrapped key that its own
//! replicated state holds, for an enabled version of an enabled key, to a current member, named
//! by its mTLS certificate (`tls::Caller`; only in plaintext mode by the request itself).

use std::collections::BTreeMap;
use std::time::Duration;

use crypto::threshold::{self, ShareHolder, Wrapped};
use crypto::{CryptoError, SecretBytes};
use proto::internal::DecryptionShareRequest;
use raft::{KeyRef, NodeId, WrappedMaterial};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::error::{NodeError, Result};
use crate::network::Connector;
use crate::node::Node;

impl<C: Connector> Node<C> {
    /// The plaintext material of `(key_id, version)`, from the cache or from t+1 shares.
    /// Concurrent requests for one uncached version share a single unwrap: the first does
    /// the share round, the others wait for it and read the cache.
    pub async fn material(&self, key_id: Uuid, version: u32, wrapped: &WrappedMaterial) -> Result<SecretBytes> {
        if let Some(m) = self.cache_get(key_id, version) {
            return Ok(m);
        }
        let slot = self.unwrap_slot(key_id, version);
        let result = {
            let _turn = slot.lock().await;
            match self.cache_get(key_id, version) {
                Some(m) => Ok(m),
                None => self.unwrap_material(key_id, version, wrapped).await,
            }
        };
        self.release_unwrap_slot(key_id, version, slot);
        result
    }

    async fn unwrap_material(&self, key_id: Uuid, version: u32, wrapped: &WrappedMaterial) -> Result<SecretBytes> {
        let request = DecryptionShareRequest {
            key_id: key_id.as_bytes().to_vec(),
            version,
            min_applied_index: *self.state.applied_index().borrow(),
            requester: self.id,
            log_key: false,
        };
        let material = self.combine_shares(wrapped, request, &format!("key {key_id} version {version}")).await?;
        self.cache_put(key_id, version, material.clone());
        Ok(material)
    }

    /// The log key's `version`, unwrapped with t+1 shares (this node's own and its peers').
    pub async fn unwrap_log_key(&self, version: u32) -> Result<SecretBytes> {
        let wrapped =
            self.state.read().store.log_keys().get(&version).cloned().ok_or_else(|| {
                NodeError::Internal(format!("log key version {version} is not in this node's keyring"))
            })?;
        let request = DecryptionShareRequest {
            key_id: Vec::new(),
            version,
            min_applied_index: *self.state.applied_index().borrow(),
            requester: self.id,
            log_key: true,
        };
        self.combine_shares(&wrapped, request, &format!("log key version {version}")).await
    }

    /// Asks every holder for its share of `wrapped` with `request`, combines the first t+1
    /// with ours and checks the key-check value; on a mismatch drops the faulty shares named
    /// and waits for more.
    async fn combine_shares(
        &self,
        wrapped: &WrappedMaterial,
        request: DecryptionShareRequest,
        what: &str,
    ) -> Result<SecretBytes> {
        let root = self.state.read().store.root().cloned().ok_or(NodeError::NotInitialized)?;
        if wrapped.root_epoch != root.epoch {
            return Err(NodeError::Internal(format!(
                "{what} is wrapped under root epoch {} but the root is at {}",
                wrapped.root_epoch, root.epoch
            )));
        }
        let need = threshold::shares_needed(&root.public_key_set)?;
        let target = Wrapped { ciphertext: wrapped.ciphertext.clone(), kcv: wrapped.kcv };
        let mut shares = BTreeMap::new();
        if let Some(holder) = self.share_holder()? {
            shares.insert(holder.index(), holder.decryption_share(&wrapped.ciphertext)?);
        }
        let addrs: BTreeMap<NodeId, String> = self.members().into_iter().map(|(id, n)| (id, n.addr)).collect();
        let mut asks = JoinSet::new();
        for (peer, holder) in &root.holders {
            if *peer == self.id {
                continue;
            }
            let Some(addr) = addrs.get(peer) else { continue };
            let Ok(mut client) = self.peers.client(addr) else { continue };
            let request = request.clone();
            let (peer, index) = (*peer, holder.share_index);
            let timeout = Duration::from_millis(self.config.raft.rpc_timeout_ms);
            asks.spawn(async move {
                let reply = tokio::time::timeout(timeout, client.decryption_share(request)).await;
                match reply {
                    Ok(Ok(r)) if r.get_ref().share_index == index => Ok((index, r.into_inner().share)),
                    Ok(Ok(_)) => Err(format!("node {peer} answered with the wrong share index")),
                    Ok(Err(s)) => Err(format!("node {peer}: {}", s.message())),
                    Err(_) => Err(format!("node {peer}: timed out")),
                }
            });
        }
        let mut refusals = Vec::new();
        let mut last_error = None;
        loop {
            if shares.len() >= need {
                match threshold::unwrap(&root.public_key_set, &target, &shares) {
                    Ok(material) => {
                        asks.abort_all();
                        return Ok(material);
                    }
                    Err(CryptoError::KeyCheckMismatch { faulty }) => {
                        let nodes: Vec<NodeId> = root
                            .holders
                            .iter()
                            .filter(|(_, h)| faulty.contains(&h.share_index))
                            .map(|(id, _)| *id)
                            .collect();
                        tracing::warn!(
                            ?nodes,
                            what,
                            "faulty decryption shares from nodes {nodes:?}: dropped; asking the other holders"
                        );
                        self.count_faulty_shares(&nodes);
                        for f in &faulty {
                            shares.remove(f);
                        }
                        last_error = Some(CryptoError::KeyCheckMismatch { faulty });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match asks.join_next().await {
                Some(Ok(Ok((index, share)))) => {
                    shares.insert(index, share);
                }
                Some(Ok(Err(why))) => refusals.push(why),
                Some(Err(e)) => refusals.push(e.to_string()),
                None => break,
            }
        }
        if let Some(e) = last_error {
            return Err(e.into());
        }
        Err(NodeError::Unavailable(format!(
            "cannot unwrap {what}: have {} of {need} decryption shares ({})",
            shares.len(),
            refusals.join("; ")
        )))
    }

    /// Serves a peer's request for this node's decryption share. `requester` is the node the
    /// caller's certificate names (in plaintext mode, the one the request names).
    pub async fn decryption_share_for(
        &self,
        requester: NodeId,
        request: &DecryptionShareRequest,
    ) -> Result<(u64, Vec<u8>)> {
        if request.log_key {
            return self.log_key_share_for(requester, request).await;
        }
        let key_id =
            Uuid::from_slice(&request.key_id).map_err(|_| NodeError::Invalid("key_id must be 16 bytes".into()))?;
        if let Some(v) = self.state.sealed() {
            return Err(NodeError::Unavailable(format!(
                "node {} is sealed (waiting for log key v{v}); it gives shares of key material only once unsealed",
                self.id
            )));
        }
        // Learn the version first if the requester is ahead of us.
        self.wait_applied(request.min_applied_index).await?;
        self.check_member(requester)?;
        let holder = self.share_holder()?.ok_or_else(|| NodeError::Unavailable("this node holds no share".into()))?;
        let ciphertext = {
            let state = self.state.read();
            let key = state.store.resolve(&KeyRef::Id(key_id))?;
            let usage = key.spec.usage();
            let v = key
                .version_for(usage, request.version)
                .map_err(|e| NodeError::Kms(raft::KmsError::InvalidState(format!("share refused: {e}"))))?;
            v.material
                .as_ref()
                .ok_or_else(|| NodeError::Kms(raft::KmsError::InvalidState("version is destroyed".into())))?
                .ciphertext
                .clone()
        };
        let share = self.checked_share(&holder, (key_id, request.version), &ciphertext, || {
            format!("key {key_id} version {}", request.version)
        })?;
        tracing::info!(requester, %key_id, version = request.version, "audit: decryption share given");
        Ok((holder.index(), share))
    }

    /// Our share of `ciphertext`, after checking the ciphertext's validity once per `id`
    /// (its wrapped form never changes): threshold_crypto's CCA check, two pairings.
    fn checked_share(
        &self,
        holder: &ShareHolder,
        id: (Uuid, u32),
        ciphertext: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Vec<u8>> {
        if !self.wrapped_verified(id.0, id.1) {
            if !threshold::verify_wrapped(ciphertext)? {
                return Err(NodeError::Internal(format!(
                    "{} has a malformed wrapped ciphertext; refusing to give a share",
                    what()
                )));
            }
            self.mark_wrapped_verified(id.0, id.1);
        }
        Ok(self.maybe_corrupt(holder.decryption_share_of_verified(ciphertext)?))
    }

    fn check_member(&self, requester: NodeId) -> Result<()> {
        if !self.members().iter().any(|(id, _)| *id == requester) {
            return Err(NodeError::PermissionDenied(format!("node {requester} is not a member of this cluster")));
        }
        Ok(())
    }

    /// A share of a log key version, for a member unsealing. Answered from the keyring, which
    /// a sealed node has too: a cluster whose every node restarted unseals once t+1 are up.
    async fn log_key_share_for(&self, requester: NodeId, request: &DecryptionShareRequest) -> Result<(u64, Vec<u8>)> {
        let lookup = || self.state.read().store.log_keys().get(&request.version).cloned();
        let wrapped = match lookup() {
            Some(w) => w,
            None => {
                // The requester may be ahead of us.
                self.wait_applied(request.min_applied_index).await?;
                lookup().ok_or_else(|| {
                    NodeError::Kms(raft::KmsError::NotFound(format!(
                        "log key version {} does not exist",
                        request.version
                    )))
                })?
            }
        };
        self.check_member(requester)?;
        let holder = self.share_holder()?.ok_or_else(|| NodeError::Unavailable("this node holds no share".into()))?;
        // The log key's versions are remembered as checked under the nil key id.
        let share = self.checked_share(&holder, (Uuid::nil(), request.version), &wrapped.ciphertext, || {
            format!("log key version {}", request.version)
        })?;
        tracing::info!(requester, version = request.version, "audit: log key decryption share given");
        Ok((holder.index(), share))
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
