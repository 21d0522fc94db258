//! Region-restricted keys: which nodes may hold a key's material, and what the others do
//! instead (forward the call, delegate the re-wrap).
//!
//! **Architecture Invariant:** a node outside a key's `allowed_regions` never holds the key's
//! material: it does not unwrap it (`Node::material` refuses and share holders refuse it
//! shares), does not make it (creates and rotations of the key are forwarded to, or done by, a
//! node inside) and does not re-wrap it (the leader delegates that to a node inside). A node's
//! region is the one its membership entry names, never one a request claims.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use proto::internal::{RewrapReply, RewrapRequest};
use proto::v1::kms_client::KmsClient;
use raft::{Key, KeyRef, NodeId, NodeInfo, WrappedMaterial};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::error::{NodeError, Result};
use crate::network::Connector;
use crate::node::Node;

/// Request metadata a node sets on a call it forwards: the node it reaches serves the call
/// itself or fails it, never forwards it again.
pub(crate) const FORWARDED_BY: &str = "x-keyquorum-forwarded-by";

/// How long a forwarded call may take (a cold unwrap included), within clients' usual 15 s.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Which regions may use all of `keys` (empty sets: every region); `None` when none may.
pub(crate) fn regions_for_all<'a>(keys: impl IntoIterator<Item = &'a Key>) -> Option<BTreeSet<String>> {
    let mut allowed: Option<BTreeSet<String>> = None;
    for k in keys {
        if k.allowed_regions.is_empty() {
            continue;
        }
        allowed = Some(match allowed {
            None => k.allowed_regions.clone(),
            Some(a) => a.intersection(&k.allowed_regions).cloned().collect(),
        });
    }
    match allowed {
        Some(a) if a.is_empty() => None,
        Some(a) => Some(a),
        None => Some(BTreeSet::new()),
    }
}

impl<C: Connector> Node<C> {
    /// `Ok` when this node may hold `key`'s material.
    pub(crate) fn check_region(&self, key: &Key) -> Result<()> {
        self.check_allowed(&format!("key {}", key.id), &key.allowed_regions)
    }

    /// `Ok` when this node's region is in `allowed` (empty: every region); `what` names the
    /// key (or keys) for the error.
    pub(crate) fn check_allowed(&self, what: &str, allowed: &BTreeSet<String>) -> Result<()> {
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
    pub(crate) fn in_regions(&self, allowed: &BTreeSet<String>) -> bool {
        // Failpoint (simulator self-test): ignore region restrictions, here and as a holder.
        allowed.is_empty() || allowed.contains(&self.config.region) || crate::failpoint("node::ignore-key-regions")
    }

    /// The region a member's membership entry names.
    pub(crate) fn region_of(&self, id: NodeId) -> Option<String> {
        self.members().into_iter().find(|(m, _)| *m == id).map(|(_, info)| info.region)
    }

    /// The other members in `allowed`, starting at a random one (spreading the load).
    fn members_in(&self, allowed: &BTreeSet<String>) -> Vec<(NodeId, NodeInfo)> {
        let mut inside: Vec<_> =
            self.members().into_iter().filter(|(id, info)| *id != self.id && allowed.contains(&info.region)).collect();
        if !inside.is_empty() {
            let start = self.with_rng(|rng| u64::from_le_bytes(rng.bytes::<8>())) as usize % inside.len();
            inside.rotate_left(start);
        }
        inside
    }

    /// Sends a KMS call this node may not serve (`OutOfRegion`) to a member in `allowed`.
    /// Tries the next member when one is unreachable or unavailable, unless the call is not
    /// `idempotent` and a member answered. A call that was itself forwarded is not forwarded
    /// again: its error says why.
    pub(crate) async fn forward_kms<T, R, F, Fut>(
        &self,
        refused: NodeError,
        forwarded: bool,
        request: T,
        idempotent: bool,
        call: F,
    ) -> std::result::Result<Response<R>, Status>
    where
        T: Clone,
        F: Fn(KmsClient<Channel>, Request<T>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<R>, Status>>,
    {
        let NodeError::OutOfRegion { key, allowed, .. } = &refused else { return Err(refused.into()) };
        if forwarded {
            return Err(Status::unavailable(format!(
                "{refused} (the call was forwarded here; not forwarding it again)"
            )));
        }
        let inside = self.members_in(allowed);
        if inside.is_empty() {
            return Err(Status::unavailable(format!("{refused}, and no member of the cluster is in those regions")));
        }
        let mut failures = Vec::new();
        for (id, info) in inside {
            let channel = match self.peers.channel(&info.addr) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("node {id}: {e}"));
                    continue;
                }
            };
            let max = self.config.limits.max_message_bytes;
            let client = KmsClient::new(channel).max_decoding_message_size(max).max_encoding_message_size(max);
            let mut forwarded = Request::new(request.clone());
            forwarded.set_timeout(FORWARD_TIMEOUT);
            if let Ok(v) = self.id.to_string().parse() {
                forwarded.metadata_mut().insert(FORWARDED_BY, v);
            }
            tracing::debug!(%key, to = id, "forwarding a call for a region-restricted key");
            match call(client, forwarded).await {
                Ok(r) => return Ok(r),
                Err(s) => {
                    let no_answer = matches!(s.code(), Code::Unknown | Code::Cancelled) && s.metadata().is_empty();
                    let retry = s.code() == Code::Unavailable || s.code() == Code::DeadlineExceeded || no_answer;
                    if !retry || !(idempotent || no_answer) {
                        return Err(s);
                    }
                    failures.push(format!("node {id} ({}): {}", info.region, s.message()));
                }
            }
        }
        Err(Status::unavailable(format!("{refused}; no node there answered: {}", failures.join("; "))))
    }

    /// Leader side: has a node in `allowed` re-wrap a version of a region-restricted key under
    /// the next root (`next_epoch`). The leader checks the result is a well-formed threshold
    /// ciphertext; that it holds the same material only a node inside could check (see the
    /// threat model: a faulty delegate can make a version undecryptable, never leak it).
    pub(crate) async fn rewrap_delegated(
        &self,
        key_id: Uuid,
        version: u32,
        allowed: &BTreeSet<String>,
        next_epoch: u64,
    ) -> Result<Vec<u8>> {
        let request = RewrapRequest {
            key_id: key_id.as_bytes().to_vec(),
            version,
            min_applied_index: *self.state.applied_index().borrow(),
            next_epoch,
            requester: self.id,
        };
        let mut failures = Vec::new();
        for (id, info) in self.members_in(allowed) {
            let mut client = match self.peers.client(&info.addr) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("node {id}: {e}"));
                    continue;
                }
            };
            match tokio::time::timeout(FORWARD_TIMEOUT, client.rewrap(request.clone())).await {
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
    /// is outside the key's regions. Uses re-wrap shares (`custody::check_rewrap`).
    pub(crate) async fn rewrap_for(&self, requester: NodeId, request: &RewrapRequest) -> Result<RewrapReply> {
        self.ensure_unsealed()?;
        let key_id =
            Uuid::from_slice(&request.key_id).map_err(|_| NodeError::Invalid("key_id must be 16 bytes".into()))?;
        self.wait_applied(request.min_applied_index).await?;
        if self.leader().map(|(id, _)| id) != Some(requester) {
            return Err(NodeError::PermissionDenied(format!(
                "node {requester} asked for a re-wrap but is not this node's leader"
            )));
        }
        let (key, wrapped, next) = {
            let state = self.state.read();
            let next =
                state.store.next_root().filter(|n| n.epoch == request.next_epoch).cloned().ok_or_else(|| {
                    NodeError::Unavailable(format!("root epoch {} is not waiting", request.next_epoch))
                })?;
            let key = state.store.resolve(&KeyRef::Id(key_id))?.clone();
            let wrapped: WrappedMaterial = key.version(request.version)?.material.clone().ok_or_else(|| {
                NodeError::Kms(raft::KmsError::InvalidState(format!("version {} is destroyed", request.version)))
            })?;
            (key, wrapped, next)
        };
        self.check_region(&key)?;
        let material = self.material_for_rewrap(key_id, request.version, &wrapped).await?;
        let again = self.with_rng(|rng| crypto::threshold::wrap(&next.public_key_set, &material, rng))?;
        if again.kcv != wrapped.kcv {
            return Err(NodeError::Internal("re-wrapped material changed its key-check value".into()));
        }
        tracing::info!(requester, %key_id, version = request.version, "audit: re-wrapped a region-restricted key for the leader");
        Ok(RewrapReply { ciphertext: again.ciphertext })
    }
}
