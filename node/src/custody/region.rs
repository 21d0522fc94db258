//! Region-restricted keys in custody: which nodes may hold a key's material, and re-wraps the
//! leader delegates to a node inside a key's regions.
//!
//! **Architecture Invariant:** a node outside a key's `allowed_regions` never holds the key's
//! material: it does not unwrap it (`Custody::material` refuses and share holders refuse it
//! shares), does not make it (creates and rotations of the key are forwarded to, or done by, a
//! node inside) and does not re-wrap it (the leader delegates that to a node inside). A node's
//! region is the one its membership entry names, never one a request claims.

use std::collections::BTreeSet;
use std::time::Duration;

use proto::internal::{RewrapReply, RewrapRequest};
use raft::{Key, KeyRef, NodeId, NodeInfo, WrappedMaterial};
use uuid::Uuid;

use super::Custody;
use crate::error::{NodeError, Result};

/// How long a delegated re-wrap may take (a cold unwrap included).
const REWRAP_TIMEOUT: Duration = Duration::from_secs(10);

impl Custody {
    /// `Ok` when this node may hold `key`'s material.
    pub fn check_region(&self, key: &Key) -> Result<()> {
        self.check_allowed(&format!("key {}", key.id), &key.allowed_regions)
    }

    /// `Ok` when this node's region is in `allowed` (empty: every region); `what` names the
    /// key (or keys) for the error.
    pub fn check_allowed(&self, what: &str, allowed: &BTreeSet<String>) -> Result<()> {
        if self.in_regions(allowed) {
            return Ok(());
        }
        Err(NodeError::OutOfRegion {
            key: what.to_string(),
            allowed: allowed.clone(),
            region: self.config.region.clone(),
        })
    }

    /// Whether this node is in `allowed` (empty: every region).
    pub fn in_regions(&self, allowed: &BTreeSet<String>) -> bool {
        // Failpoint (simulator self-test): ignore region restrictions, here and as a holder.
        allowed.is_empty() || allowed.contains(&self.config.region) || crate::failpoint("node::ignore-key-regions")
    }

    /// The other members in `allowed`, starting at a random one (spreading the load).
    pub fn members_in(&self, allowed: &BTreeSet<String>) -> Vec<(NodeId, NodeInfo)> {
        let mut inside: Vec<_> = self
            .consensus
            .members()
            .into_iter()
            .filter(|(id, info)| *id != self.id && allowed.contains(&info.region))
            .collect();
        if !inside.is_empty() {
            let start = self.env.with_rng(|rng| u64::from_le_bytes(rng.bytes::<8>())) as usize % inside.len();
            inside.rotate_left(start);
        }
        inside
    }

    /// Leader side: has a node in `allowed` re-wrap a version of a region-restricted key under
    /// the next root (`next_epoch`). The leader checks the result is a well-formed threshold
    /// ciphertext; that it holds the same material only a node inside could check (see the
    /// threat model: a faulty delegate can make a version undecryptable, never leak it).
    pub(super) async fn rewrap_delegated(
        &self,
        key_id: Uuid,
        version: u32,
        allowed: &BTreeSet<String>,
        next_epoch: u64,
    ) -> Result<Vec<u8>> {
        let request = RewrapRequest {
            key_id: key_id.as_bytes().to_vec(),
            version,
            min_applied_index: self.consensus.applied_index(),
            next_epoch,
            requester: self.id,
        };
        let mut failures = Vec::new();
        for (id, info) in self.members_in(allowed) {
            let mut client = match self.consensus.peers().client(&info.addr) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("node {id}: {e}"));
                    continue;
                }
            };
            match tokio::time::timeout(REWRAP_TIMEOUT, client.rewrap(request.clone())).await {
                Ok(Ok(reply)) => {
                    let ciphertext = reply.into_inner().ciphertext;
                    if crypto::threshold::verify_wrapped(&ciphertext).unwrap_or(false) {
                        return Ok(ciphertext);
                    }
                    failures.push(format!("node {id} returned a malformed ciphertext"));
                }
                Ok(Err(s)) => failures.push(format!("node {id}: {}", s.message())),
                Err(_) => failures.push(format!("node {id}: timed out")),
            }
        }
        Err(NodeError::Unavailable(format!(
            "cannot re-wrap key {key_id} version {version}: it may be unwrapped only in regions {allowed:?} and no \
             node there did it ({})",
            failures.join("; ")
        )))
    }

    /// Delegate side: re-wraps a version of a key under the next root for our leader, which
    /// is outside the key's regions. Uses re-wrap shares (`serve.rs`).
    pub async fn rewrap_for(&self, requester: NodeId, request: &RewrapRequest) -> Result<RewrapReply> {
        if let Some(v) = self.consensus.state().sealed() {
            return Err(NodeError::Unavailable(format!("node {} is sealed (waiting for log key v{v})", self.id)));
        }
        let key_id =
            Uuid::from_slice(&request.key_id).map_err(|_| NodeError::Invalid("key_id must be 16 bytes".into()))?;
        self.consensus.wait_applied(request.min_applied_index).await?;
        if self.consensus.leader().map(|(id, _)| id) != Some(requester) {
            return Err(NodeError::PermissionDenied(format!(
                "node {requester} asked for a re-wrap but is not this node's leader"
            )));
        }
        let (key, wrapped, next) = {
            let state = self.consensus.state().read();
            let next =
                state.store.next_root().filter(|n| n.epoch == request.next_epoch).cloned().ok_or_else(|| {
                    NodeError::Unavailable(format!("root epoch {} is not waiting", request.next_epoch))
                })?;
            let key = state.store.resolve(&KeyRef::Id(key_id))?.clone();
            let destroyed = raft::KmsError::VersionNotUsable {
                key: key_id,
                version: request.version,
                state: raft::Unusable::Destroyed,
            };
            let wrapped: WrappedMaterial = key.version(request.version)?.material.clone().ok_or(destroyed)?;
            (key, wrapped, next)
        };
        self.check_region(&key)?;
        let material = self.material_for_rewrap(key_id, request.version, &wrapped).await?;
        let again = self.env.with_rng(|rng| crypto::threshold::wrap(&next.public_key_set, &material, rng))?;
        if again.kcv != wrapped.kcv {
            return Err(NodeError::Internal("re-wrapped material changed its key-check value".into()));
        }
        tracing::info!(requester, %key_id, version = request.version, "audit: re-wrapped a region-restricted key for the leader");
        Ok(RewrapReply { ciphertext: again.ciphertext })
    }
}
