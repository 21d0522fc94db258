//! The node-to-node gRPC service: raft RPCs, forwarded writes, read index, decryption shares.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use proto::internal::internal_server::Internal;
use proto::internal::{
    DecryptionShareReply, DecryptionShareRequest, HoldElectionsRequest, IdentityReply, IdentityRequest, InternalEmpty,
    RaftPayload, ReadIndexReply, ReadIndexRequest, RewrapReply, RewrapRequest, TimeoutNowRequest,
};
use raft::{Command, NodeId, TypeConfig};
use tonic::{Request, Response, Status};

use crate::network::{decode, encode, Connector};
use crate::node::Node;
use crate::tls::Caller;

#[derive(Debug)]
pub(crate) struct InternalService<C>(pub Arc<Node<C>>);

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload { payload: encode(value).map_err(Status::from)? }))
}

#[tonic::async_trait]
impl<C: Connector> Internal for InternalService<C> {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.get_ref().payload)?;
        let result = self.0.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if r.is_success()) {
            self.0.heard_from_leader();
        }
        // Any answer but "higher vote" means we accept this leader: no election for now.
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.0.election.restart();
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode(&request.get_ref().payload)?;
        let result = self.0.raft.vote(rpc).await;
        if matches!(&result, Ok(r) if r.vote_granted) {
            self.0.election.restart();
        }
        reply(&result)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&request.get_ref().payload)?;
        let end = rpc.offset.saturating_add(rpc.data.len() as u64);
        let limit = self.0.config.limits.max_snapshot_bytes;
        if end > limit {
            return Err(Status::resource_exhausted(format!(
                "snapshot exceeds this node's limit of {limit} bytes (limits.max_snapshot_bytes)"
            )));
        }
        let leader_vote = rpc.vote;
        let result = self.0.raft.install_snapshot(rpc).await;
        // We answer with our own vote: the sender's when we accept it as leader.
        if matches!(&result, Ok(r) if r.vote == leader_vote) {
            self.0.election.restart();
        }
        reply(&result)
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let command: Command = decode(&request.get_ref().payload)?;
        // A key-generation message speaks for one node: only that node may send it.
        let speaker = match &command {
            Command::KeyGenPart { dealer, .. } => Some(*dealer),
            Command::KeyGenAck { acker, .. } => Some(*acker),
            _ => None,
        };
        if let (Some(speaker), Some(caller)) = (speaker, Caller::of(&request)?.node_id()?) {
            if speaker != caller {
                return Err(Status::permission_denied(format!(
                    "node {caller} may not send a key-generation message for node {speaker}"
                )));
            }
        }
        // Forwarded writes are proposed here only; a non-leader answers UNAVAILABLE and the
        // forwarding node retries with its newer leader hint (no forwarding chains).
        let outcome = self.0.propose_local(command).await.map_err(Status::from)?;
        reply(&outcome)
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexReply>, Status> {
        if !self.0.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let index = self.0.leader_read_index().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn decryption_share(
        &self,
        request: Request<DecryptionShareRequest>,
    ) -> Result<Response<DecryptionShareReply>, Status> {
        let requester = requester(&request, request.get_ref().requester)?;
        let reply = self.0.decryption_share_for(requester, request.get_ref()).await.map_err(Status::from)?;
        Ok(Response::new(reply))
    }

    async fn rewrap(&self, request: Request<RewrapRequest>) -> Result<Response<RewrapReply>, Status> {
        let requester = requester(&request, request.get_ref().requester)?;
        let reply = self.0.rewrap_for(requester, request.get_ref()).await.map_err(Status::from)?;
        Ok(Response::new(reply))
    }

    async fn identity(&self, request: Request<IdentityRequest>) -> Result<Response<IdentityReply>, Status> {
        let round = request.get_ref().round;
        let identity_public = self.0.identity_public(round).map_err(Status::from)?;
        Ok(Response::new(IdentityReply { node_id: self.0.id, identity_public }))
    }

    async fn timeout_now(&self, request: Request<TimeoutNowRequest>) -> Result<Response<InternalEmpty>, Status> {
        let r = request.into_inner();
        let hold_ms = r.hold_ms.min(60_000);
        tracing::info!(from = r.from_leader, "leadership transfer: campaigning");
        self.0.campaign(r.lease_ms.min(60_000), hold_ms);
        Ok(Response::new(InternalEmpty {}))
    }

    async fn hold_elections(&self, request: Request<HoldElectionsRequest>) -> Result<Response<InternalEmpty>, Status> {
        // Bounded: a hostile or buggy peer can pause our elections for at most a minute.
        self.0.hold_elections(request.into_inner().hold_ms.min(60_000), false);
        Ok(Response::new(InternalEmpty {}))
    }
}

/// The node a request comes from: the one its certificate names, which must be the one it
/// `claims`; in plaintext mode the claim, unauthenticated.
fn requester<T>(request: &Request<T>, claims: NodeId) -> Result<NodeId, Status> {
    match Caller::of(request)?.node_id()? {
        Some(id) if id != claims => {
            Err(Status::permission_denied(format!("node {id}'s certificate made a request on behalf of node {claims}")))
        }
        Some(id) => Ok(id),
        None => Ok(claims),
    }
}
