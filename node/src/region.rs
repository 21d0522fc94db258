//! Region-restricted keys at the KMS edge: a call this node may not serve (`OutOfRegion`, see
//! `custody/region.rs`) is forwarded to a member in the key's regions.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use proto::v1::kms_client::KmsClient;
use raft::Key;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::error::NodeError;
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

impl Node {
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
        let inside = self.custody.members_in(allowed);
        if inside.is_empty() {
            return Err(Status::unavailable(format!("{refused}, and no member of the cluster is in those regions")));
        }
        let mut failures = Vec::new();
        for (id, info) in inside {
            let channel = match self.consensus.peers().channel(&info.addr) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("node {id}: {e}"));
                    continue;
                }
            };
            let max = self.config().limits.max_message_bytes;
            let client = KmsClient::new(channel).max_decoding_message_size(max).max_encoding_message_size(max);
            let mut forwarded = Request::new(request.clone());
            forwarded.set_timeout(FORWARD_TIMEOUT);
            if let Ok(v) = self.id().to_string().parse() {
                forwarded.metadata_mut().insert(FORWARDED_BY, v);
            }
            tracing::debug!(%key, to = id, "forwarding a call for a region-restricted key");
            match call(client, forwarded).await {
                Ok(r) => return Ok(r),
                Err(s) => {
                    let no_answer = matches!(s.code(), Code::Unknown | Code::Cancelled) && s.metadata().is_empty();
                    if !proto::retry_elsewhere(&s) || !(idempotent || no_answer) {
                        return Err(s);
                    }
                    failures.push(format!("node {id} ({}): {}", info.region, s.message()));
                }
            }
        }
        Err(Status::unavailable(format!("{refused}; no node there answered: {}", failures.join("; "))))
    }
}
