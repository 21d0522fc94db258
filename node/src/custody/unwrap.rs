//! Unwrapping key material with the threshold root key: this node's own decryption share plus
//! shares from peers, combined optimistically and checked against the key-check value; only on
//! a mismatch is each share verified and the faulty holder named.

use std::collections::BTreeMap;
use std::time::Duration;

use crypto::threshold::{self, Wrapped};
use crypto::{CryptoError, SecretBytes};
use proto::internal::DecryptionShareRequest;
use raft::{Key, KeyVersion, NodeId, WrappedMaterial};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::Custody;
use crate::error::{NodeError, Result};

impl Custody {
    /// The plaintext material of `(key_id, version)`, from the cache or from t+1 shares.
    /// Concurrent requests for one uncached version share a single unwrap: the first does
    /// the share round, the others wait for it and read the cache.
    /// Refused (`OutOfRegion`) on a node outside the key's allowed regions.
    pub async fn material(&self, key: &Key, version: &KeyVersion) -> Result<SecretBytes> {
        self.check_region(key)?;
        let (key_id, version, wrapped) = (key.id, version.version, version.material.as_ref());
        let destroyed = raft::KmsError::VersionNotUsable { key: key_id, version, state: raft::Unusable::Destroyed };
        let wrapped = wrapped.ok_or(destroyed)?;
        if let Some(m) = self.cache.get(key_id, version) {
            return Ok(m);
        }
        let slot = self.cache.slot(key_id, version);
        let result = {
            let _turn = slot.lock().await;
            match self.cache.get(key_id, version) {
                Some(m) => Ok(m),
                None => self.unwrap_material(key_id, version, wrapped).await,
            }
        };
        self.cache.release(key_id, version, slot);
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
            min_applied_index: self.consensus.applied_index(),
            requester: self.id,
            log_key: false,
            root_epoch: wrapped.root_epoch,
            rewrap,
        }
    }

    async fn unwrap_material(&self, key_id: Uuid, version: u32, wrapped: &WrappedMaterial) -> Result<SecretBytes> {
        let request = self.material_request(key_id, version, wrapped, false);
        let material = self.combine_shares(wrapped, request, &format!("key {key_id} version {version}")).await?;
        self.cache.put(key_id, version, wrapped.root_epoch, material.clone());
        Ok(material)
    }

    /// The material of `(key_id, version)` to re-wrap under a new root, whatever the key's
    /// state (disabled keys move too). Holders give these shares only to their leader while
    /// a new root waits (`rewrap`). Not cached.
    pub(super) async fn material_for_rewrap(
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
            self.consensus.state().read().store.log_keys().get(&version).cloned().ok_or_else(|| {
                NodeError::Internal(format!("log key version {version} is not in this node's keyring"))
            })?;
        let request = DecryptionShareRequest {
            key_id: Vec::new(),
            version,
            min_applied_index: self.consensus.applied_index(),
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
        let root = self.consensus.state().read().store.root_of_epoch(wrapped.root_epoch).cloned().ok_or_else(|| {
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
        for (peer, info) in self.consensus.members() {
            if peer == self.id {
                continue;
            }
            let Ok(mut client) = self.consensus.peers().client(&info.addr) else { continue };
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
                    // Under a root we know (ours, or one retired but still kept) we know each
                    // holder's index and the public key set; a copy under a root we do not
                    // know is taken at its word and must pass the key-check value.
                    // (Our own root is not cloned per reply: only another epoch is looked up.)
                    let ours = reply.root_epoch == wrapped.root_epoch;
                    let other = if ours { None } else { self.known_root(reply.root_epoch) };
                    let known = if ours { Some(&root) } else { other.as_ref() };
                    let id = match known {
                        Some(known) => {
                            if known.holders.get(&peer).map(|h| h.share_index) != Some(reply.share_index) {
                                refusals.push(format!("node {peer} answered with the wrong share index"));
                                continue;
                            }
                            let ciphertext = if ours { wrapped.ciphertext.clone() } else { reply.ciphertext };
                            (reply.root_epoch, ciphertext, known.public_key_set.clone())
                        }
                        None => (reply.root_epoch, reply.ciphertext, reply.public_key_set),
                    };
                    let group = groups.entry(id.clone()).or_insert_with(|| {
                        // A peer still on a root this node has retired (it restarted from an
                        // older snapshot) answers with its copy under that root: our share of
                        // the retired root counts toward that copy, as the peer's does.
                        let mut group = ShareGroup::default();
                        if known.is_some() {
                            if let Ok(Some(holder)) = self.share_holder(id.0) {
                                if let Ok(share) = holder.decryption_share(&id.1) {
                                    group.shares.insert(holder.index(), share);
                                    group.holders.insert(holder.index(), self.id);
                                }
                            }
                        }
                        group
                    });
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
}

/// Shares of one wrapping, by share index, and who gave each.
#[derive(Default)]
struct ShareGroup {
    shares: BTreeMap<u64, Vec<u8>>,
    holders: BTreeMap<u64, NodeId>,
}
