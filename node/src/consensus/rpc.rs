//! The serving side of the node-to-node Raft RPCs: what a peer's append, vote, snapshot,
//! read-index and leadership-transfer requests do here.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use raft::TypeConfig;
use tonic::Status;

use super::network::{decode, encode};
use super::Consensus;
use crate::error::{NodeError, Result};

fn reply<T: serde::Serialize>(value: &T) -> std::result::Result<Vec<u8>, Status> {
    encode(value).map_err(Status::from)
}

impl Consensus {
    /// A leader's AppendEntries (postcard-encoded); the encoded answer.
    pub async fn serve_append(&self, payload: &[u8]) -> std::result::Result<Vec<u8>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(payload)?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if r.is_success()) {
            self.heard_from_leader();
        }
        // Any answer but "higher vote" means we accept this leader: no election for now.
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.election.restart();
        }
        reply(&result)
    }

    /// A candidate's vote request; the encoded answer.
    pub async fn serve_vote(&self, payload: &[u8]) -> std::result::Result<Vec<u8>, Status> {
        let rpc: VoteRequest<u64> = decode(payload)?;
        let result = self.raft.vote(rpc).await;
        if matches!(&result, Ok(r) if r.vote_granted) {
            self.election.restart();
        }
        reply(&result)
    }

    /// A chunk of a leader's snapshot; the encoded answer. Refused past
    /// `limits.max_snapshot_bytes`.
    pub async fn serve_install_snapshot(&self, payload: &[u8]) -> std::result::Result<Vec<u8>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(payload)?;
        let end = rpc.offset.saturating_add(rpc.data.len() as u64);
        let limit = self.config.limits.max_snapshot_bytes;
        if end > limit {
            return Err(Status::resource_exhausted(format!(
                "snapshot exceeds this node's limit of {limit} bytes (limits.max_snapshot_bytes)"
            )));
        }
        let leader_vote = rpc.vote;
        let result = self.raft.install_snapshot(rpc).await;
        // We answer with our own vote: the sender's when we accept it as leader.
        if matches!(&result, Ok(r) if r.vote == leader_vote) {
            self.election.restart();
        }
        reply(&result)
    }

    /// A follower's read-index request: this leader's read index.
    pub async fn serve_read_index(&self) -> Result<u64> {
        if !self.is_leader() {
            return Err(NodeError::Unavailable("not the leader".into()));
        }
        self.leader_read_index().await
    }

    /// The leader asks this node to campaign (leadership transfer), bounded to a minute.
    pub fn serve_timeout_now(self: &Arc<Self>, from_leader: u64, lease_ms: u64, hold_ms: u64) {
        tracing::info!(from = from_leader, "leadership transfer: campaigning");
        self.campaign(lease_ms.min(60_000), hold_ms.min(60_000));
    }

    /// The leader asks this node not to campaign for a while (leadership transfer). Bounded:
    /// a hostile or buggy peer can pause our elections for at most a minute.
    pub fn serve_hold_elections(self: &Arc<Self>, hold_ms: u64) {
        self.hold_elections(hold_ms.min(60_000), false);
    }
}
