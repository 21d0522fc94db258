//! The node-to-node gRPC service (nodes only): raft RPCs, forwarded writes, read index,
//! leadership transfer (consensus); identity keys, decryption shares, delegated re-wraps
//! (custody).

use std::sync::Arc;

use proto::internal::internal_server::Internal;
use proto::internal::{
    DecryptionShareReply, DecryptionShareRequest, HoldElectionsRequest, IdentityReply, IdentityRequest, InternalEmpty,
    RaftPayload, ReadIndexReply, ReadIndexRequest, RewrapReply, RewrapRequest, TimeoutNowRequest,
};
use raft::{Command, NodeId};
use tonic::{Request, Response, Status};

use crate::consensus::network::{decode, encode};
use crate::node::Node;
use crate::tls::calling_node;

#[derive(Debug)]
pub(crate) struct InternalService(pub Arc<Node>);

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload { payload: encode(value).map_err(Status::from)? }))
}

fn payload(payload: Vec<u8>) -> Response<RaftPayload> {
    Response::new(RaftPayload { payload })
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn local_status(&self, _request: Request<InternalEmpty>) -> Result<Response<proto::v1::NodeStatus>, Status> {
        Ok(Response::new(super::convert::node_status(self.0.local_status())))
    }

    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.0.consensus.serve_append(&request.get_ref().payload).await.map(payload)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.0.consensus.serve_vote(&request.get_ref().payload).await.map(payload)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.0.consensus.serve_install_snapshot(&request.get_ref().payload).await.map(payload)
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let command: Command = decode(&request.get_ref().payload)?;
        // A key-generation message, a durable-snapshot report or an audit chain head speaks for one
        // node: only that node may send it (a forged report would let an old root go before its
        // holder is past it; a forged head would make an honest node's audit log look cut).
        let speaker = match &command {
            Command::KeyGenPart { dealer, .. } => Some(*dealer),
            Command::KeyGenAck { acker, .. } => Some(*acker),
            Command::SnapshotDurable { node, .. } => Some(*node),
            Command::AuditHead { node, .. } => Some(*node),
            _ => None,
        };
        if let (Some(speaker), Some(caller)) = (speaker, calling_node(&request)?) {
            if speaker != caller {
                return Err(Status::permission_denied(format!(
                    "node {caller} may not send a message that speaks for node {speaker}"
                )));
            }
        }
        // Forwarded writes are proposed here only; a non-leader answers UNAVAILABLE and the
        // forwarding node retries with its newer leader hint (no forwarding chains).
        let outcome = self.0.consensus.propose_local(command).await.map_err(Status::from)?;
        reply(&outcome)
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexReply>, Status> {
        let index = self.0.consensus.serve_read_index().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn decryption_share(
        &self,
        request: Request<DecryptionShareRequest>,
    ) -> Result<Response<DecryptionShareReply>, Status> {
        let requester = requester(&request, request.get_ref().requester)?;
        let reply = self.0.custody.decryption_share_for(requester, request.get_ref()).await.map_err(Status::from)?;
        Ok(Response::new(reply))
    }

    async fn rewrap(&self, request: Request<RewrapRequest>) -> Result<Response<RewrapReply>, Status> {
        let requester = requester(&request, request.get_ref().requester)?;
        let reply = self.0.custody.rewrap_for(requester, request.get_ref()).await.map_err(Status::from)?;
        Ok(Response::new(reply))
    }

    async fn identity(&self, request: Request<IdentityRequest>) -> Result<Response<IdentityReply>, Status> {
        let round = request.get_ref().round;
        let identity_public = self.0.custody.identity_public(round).map_err(Status::from)?;
        Ok(Response::new(IdentityReply { node_id: self.0.id(), identity_public }))
    }

    async fn timeout_now(&self, request: Request<TimeoutNowRequest>) -> Result<Response<InternalEmpty>, Status> {
        let r = request.into_inner();
        self.0.consensus.serve_timeout_now(r.from_leader, r.lease_ms, r.hold_ms);
        Ok(Response::new(InternalEmpty {}))
    }

    async fn hold_elections(&self, request: Request<HoldElectionsRequest>) -> Result<Response<InternalEmpty>, Status> {
        self.0.consensus.serve_hold_elections(request.into_inner().hold_ms);
        Ok(Response::new(InternalEmpty {}))
    }
}

/// The node a request comes from: the one its certificate names, which must be the one it
/// `claims`; in plaintext mode the claim, unauthenticated.
fn requester<T>(request: &Request<T>, claims: NodeId) -> Result<NodeId, Status> {
    match calling_node(request)? {
        Some(id) if id != claims => {
            Err(Status::permission_denied(format!("node {id}'s certificate made a request on behalf of node {claims}")))
        }
        Some(id) => Ok(id),
        None => Ok(claims),
    }
}
