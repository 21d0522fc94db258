//! Unwrapping key material with the threshold root key: this node's own decryption share plus
//! shares from peers, combined optimistically and checked against the key-check value.
//!
//! **Architecture Invariant:** a node contributes a share only for a wrapped key that its own
//! replicated state holds, for an enabled version of an enabled key, to a current member, named
//! by its mTLS certificate (`tls::Caller`; only in plaintext mode by the request itself), in
//! one of the key's allowed regions (`region`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crypto::threshold::{self, Wrapped};
use crypto::{CryptoError, SecretBytes};
use proto::internal::{DecryptionShareReply, DecryptionShareRequest};
use raft::{Key, KeyRef, KeyVersion, NodeId, WrappedMaterial};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::error::{NodeError, Result};
use crate::network::Connector;
use crate::node::Node;

impl<C: Connector> Node<C> {
    /// The plaintext material of `(key_id, version)`, from the cache or from t+1 shares.
    /// Concurrent requests for one uncached version share a single unwrap: the first does
    /// the share round, the others wait for it and read the cache.
    /// Refused (`OutOfRegion`) on a node outside the key's allowed regions.
    pub async fn material(&self, key: &Key, version: &KeyVersion) -> Result<SecretBytes> {
        self.check_region(key)?;
        let (key_id, version, wrapped) = (key.id, version.version, version.material.as_ref());
        let wrapped = wrapped.ok_or_else(|| {
            NodeError::Kms(raft::KmsError::InvalidState(format!("key {key_id} version {version} is destroyed")))
        })?;
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

    /// A request for shares of a key version's material (`rewrap`: to move it to a new root).
    fn material_request(
        &self,
        key_id: Uuid,
        version: u32,
        wrapped: &WrappedMaterial,
        rewrap: bool,
    ) -> DecryptionShareRequest {
        DecryptionShareRequest {
            key_id: key_id.as_bytes().to_vec(),
            version,
            min_applied_index: *self.state.applied_index().borrow(),
            requester: self.id,
            log_key: false,
            root_epoch: wrapped.root_epoch,
            rewrap,
        }
    }

    async fn unwrap_material(&self, key_id: Uuid, version: u32, wrapped: &WrappedMaterial) -> Result<SecretBytes> {
        let request = self.material_request(key_id, version, wrapped, false);
        let material = self.combine_shares(wrapped, request, &format!("key {key_id} version {version}")).await?;
        self.cache_put(key_id, version, wrapped.root_epoch, material.clone());
        Ok(material)
    }

    /// The material of `(key_id, version)` to re-wrap under a new root, whatever the key's
    /// state (disabled keys move too). Holders give these shares only to their leader while
    /// a new root waits (`rewrap`). Not cached.
    pub(crate) async fn material_for_rewrap(
        &self,
        key_id: Uuid,
        version: u32,
        wrapped: &WrappedMaterial,
    ) -> Result<SecretBytes> {
        let request = self.material_request(key_id, version, wrapped, true);
        self.combine_shares(wrapped, request, &format!("key {key_id} version {version} (re-wrap)")).await
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
            root_epoch: wrapped.root_epoch,
            rewrap: false,
        };
        self.combine_shares(&wrapped, request, &format!("log key version {version}")).await
    }

    /// Asks every other member for its share of `wrapped` with `request` and combines t+1
    /// shares of one wrapping, ours included, checking the result against our key-check
    /// value. Holders answer for their own copy, which during a root rotation may be under
    /// another root than ours: shares are grouped by (epoch, ciphertext, public key set) and
    /// whichever group reaches its threshold first and passes the check wins. On a mismatch
    /// the group's faulty shares are dropped, their holders named, and more awaited.
    async fn combine_shares(
        &self,
        wrapped: &WrappedMaterial,
        request: DecryptionShareRequest,
        what: &str,
    ) -> Result<SecretBytes> {
        let root = self.state.read().store.root_of_epoch(wrapped.root_epoch).cloned().ok_or_else(|| {
            NodeError::Unavailable(format!(
                "{what} is wrapped under root epoch {}, which this node no longer holds; retry",
                wrapped.root_epoch
            ))
        })?;
        let mut groups: BTreeMap<(u64, Vec<u8>, Vec<u8>), ShareGroup> = BTreeMap::new();
        let ours = (wrapped.root_epoch, wrapped.ciphertext.clone(), root.public_key_set.clone());
        let mut own = ShareGroup::default();
        if let Some(holder) = self.share_holder(wrapped.root_epoch)? {
            own.shares.insert(holder.index(), holder.decryption_share(&wrapped.ciphertext)?);
            own.holders.insert(holder.index(), self.id);
        }
        groups.insert(ours.clone(), own);
        let mut asks = JoinSet::new();
        for (peer, info) in self.members() {
            if peer == self.id {
                continue;
            }
            let Ok(mut client) = self.peers.client(&info.addr) else { continue };
            let request = request.clone();
            let timeout = Duration::from_millis(self.config.raft.rpc_timeout_ms);
            asks.spawn(async move {
                match tokio::time::timeout(timeout, client.decryption_share(request)).await {
                    Ok(Ok(r)) => Ok((peer, r.into_inner())),
                    Ok(Err(s)) => Err(format!("node {peer}: {}", s.message())),
                    Err(_) => Err(format!("node {peer}: timed out")),
                }
            });
        }
        let target = |ciphertext: &[u8]| Wrapped { ciphertext: ciphertext.to_vec(), kcv: wrapped.kcv };
        let mut refusals = Vec::new();
        let mut last_error = None;
        let mut changed = Some(ours);
        loop {
            if let Some(id) = changed.take() {
                let (_, ciphertext, pks) = &id;
                let Some(group) = groups.get_mut(&id) else { continue };
                // A key set that does not parse came from a faulty holder: its group never
                // completes.
                let need = threshold::shares_needed(pks).unwrap_or(usize::MAX);
                if group.shares.len() >= need {
                    match threshold::unwrap(pks, &target(ciphertext), &group.shares) {
                        Ok(material) => {
                            asks.abort_all();
                            return Ok(material);
                        }
                        Err(CryptoError::KeyCheckMismatch { faulty }) => {
                            let nodes: Vec<NodeId> =
                                faulty.iter().filter_map(|index| group.holders.get(index).copied()).collect();
                            tracing::warn!(
                                ?nodes,
                                what,
                                "faulty decryption shares from nodes {nodes:?}: dropped; asking the other holders"
                            );
                            self.count_faulty_shares(&nodes);
                            for f in &faulty {
                                group.shares.remove(f);
                            }
                            last_error = Some(CryptoError::KeyCheckMismatch { faulty });
                        }
                        // A group whose public key set or ciphertext does not even parse came
                        // from a faulty holder: set it aside.
                        Err(e) => refusals.push(format!("{e}")),
                    }
                }
            }
            match asks.join_next().await {
                Some(Ok(Ok((peer, reply)))) => {
                    let id = if reply.root_epoch == wrapped.root_epoch {
                        // Under our root we know each holder's index.
                        if root.holders.get(&peer).map(|h| h.share_index) != Some(reply.share_index) {
                            refusals.push(format!("node {peer} answered with the wrong share index"));
                            continue;
                        }
                        (wrapped.root_epoch, wrapped.ciphertext.clone(), root.public_key_set.clone())
                    } else {
                        (reply.root_epoch, reply.ciphertext, reply.public_key_set)
                    };
                    let group = groups.entry(id.clone()).or_default();
                    // The first claim to an index stands: a faulty holder cannot push out
                    // another's share by claiming its index.
                    if group.holders.contains_key(&reply.share_index) {
                        refusals.push(format!("node {peer} claimed share index {}, already given", reply.share_index));
                        continue;
                    }
                    group.shares.insert(reply.share_index, reply.share);
                    group.holders.insert(reply.share_index, peer);
                    changed = Some(id);
                }
                Some(Ok(Err(why))) => refusals.push(why),
                Some(Err(e)) => refusals.push(e.to_string()),
                None => break,
            }
        }
        if let Some(e) = last_error {
            return Err(e.into());
        }
        let have = groups.values().map(|g| g.shares.len()).max().unwrap_or(0);
        let need = threshold::shares_needed(&root.public_key_set)?;
        Err(NodeError::Unavailable(format!(
            "cannot unwrap {what}: have {have} of {need} decryption shares ({})",
            refusals.join("; ")
        )))
    }

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
        if let Some(v) = self.state.sealed() {
            return Err(NodeError::Unavailable(format!(
                "node {} is sealed (waiting for log key v{v}); it gives shares of key material only once unsealed",
                self.id
            )));
        }
        // Learn the version first if the requester is ahead of us.
        self.wait_applied(request.min_applied_index).await?;
        self.check_member(requester)?;
        let (wrapped, allowed) = {
            let state = self.state.read();
            let key = state.store.resolve(&KeyRef::Id(key_id))?;
            let v = if request.rewrap {
                key.version(request.version)?
            } else {
                key.version_for(key.spec.usage(), request.version)
                    .map_err(|e| NodeError::Kms(raft::KmsError::InvalidState(format!("share refused: {e}"))))?
            };
            let wrapped = v
                .material
                .clone()
                .ok_or_else(|| NodeError::Kms(raft::KmsError::InvalidState("version is destroyed".into())))?;
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
        if !self.wrapped_verified(checked) {
            if !threshold::verify_wrapped(&wrapped.ciphertext)? {
                return Err(NodeError::Internal(format!(
                    "{} has a malformed wrapped ciphertext; refusing to give a share",
                    what()
                )));
            }
            self.mark_wrapped_verified(checked);
        }
        let share = self.maybe_corrupt(holder.decryption_share_of_verified(&wrapped.ciphertext)?);
        let mut reply =
            DecryptionShareReply { share_index: holder.index(), share, root_epoch: epoch, ..Default::default() };
        if epoch != request.root_epoch {
            reply.ciphertext = wrapped.ciphertext.clone();
            reply.public_key_set = self
                .state
                .read()
                .store
                .root_of_epoch(epoch)
                .map(|r| r.public_key_set.clone())
                .ok_or_else(|| NodeError::Unavailable(format!("root epoch {epoch} was just replaced; retry")))?;
        }
        Ok(reply)
    }

    fn check_member(&self, requester: NodeId) -> Result<()> {
        if !self.members().iter().any(|(id, _)| *id == requester) {
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
        let region = self.region_of(requester).unwrap_or_default();
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
        if self.state.read().store.next_root().is_none() {
            return Err(NodeError::PermissionDenied("no root rotation is under way: no re-wrap shares".into()));
        }
        let leader = self.leader().map(|(id, _)| id);
        let leader_outside = !allowed.is_empty()
            && leader.and_then(|l| self.region_of(l)).is_none_or(|region| !allowed.contains(&region));
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

/// Shares of one wrapping, by share index, and who gave each.
#[derive(Default)]
struct ShareGroup {
    shares: BTreeMap<u64, Vec<u8>>,
    holders: BTreeMap<u64, NodeId>,
}
