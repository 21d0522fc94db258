//! `keyquorum.v1.Admin`: each RPC into an operator call with its context, through the admin
//! layer (`crate::admin`), and back; and [`PeerFleet`], how that layer asks the other members
//! for their status (over the node-to-node service).
//!
//! Operator calls are never forwarded: a member would make them with its own certificate. A
//! follower asked for a leader-only call refuses it as unavailable, and the response names the
//! leader (`proto::LEADER_HINT`, added in `grpc::serve`), which the client library tries next.

use std::sync::Arc;
use std::time::Duration;

use proto::internal::internal_client::InternalClient;
use proto::internal::InternalEmpty;
use proto::v1 as pb;
use proto::v1::admin_server::Admin as AdminRpc;
use raft::{NodeId, NodeInfo};
use tonic::{Request, Response, Status};

use super::context;
use super::convert as c;
use crate::admin::{Admin, AdminOp, AdminOut, Fleet, NodeStatus};
use crate::error::{NodeError, Result};
use crate::kms::CallContext;
use crate::node::Node;

type Answer<R> = std::result::Result<Response<R>, Status>;

#[derive(Debug)]
pub(crate) struct AdminService(pub Arc<Admin>);

fn unexpected(out: AdminOut) -> NodeError {
    NodeError::Internal(format!("unexpected admin outcome {out:?}"))
}

impl AdminService {
    /// Runs `op` for the request's caller; its outcome through `answer`.
    async fn run<T, R>(
        &self,
        request: Request<T>,
        op: Result<AdminOp>,
        answer: fn(AdminOut) -> Result<R>,
    ) -> Answer<R> {
        let ctx: CallContext = context(self.0.node(), &request)?;
        let out = self.0.execute(&ctx, op?).await?;
        Ok(Response::new(answer(out)?))
    }
}

#[tonic::async_trait]
impl AdminRpc for AdminService {
    async fn init(&self, request: Request<pb::InitRequest>) -> Answer<pb::InitResponse> {
        let members: Vec<(NodeId, NodeInfo)> = request.get_ref().members.iter().map(c::member).collect();
        let mut unique = std::collections::BTreeMap::new();
        for (id, info) in members {
            if unique.insert(id, info).is_some() {
                return Err(NodeError::Invalid(format!("member {id} is listed twice")).into());
            }
        }
        let answer = |out| match out {
            AdminOut::Init { shares_needed, holders } => Ok(pb::InitResponse { shares_needed, holders }),
            other => Err(unexpected(other)),
        };
        let op = Ok(AdminOp::Init { members: unique });
        self.run(request, op, answer).await
    }

    async fn rotate_root(&self, request: Request<pb::RotateRootRequest>) -> Answer<pb::RotateRootResponse> {
        let answer = |out| match out {
            AdminOut::RotateRoot { root_epoch, holders, shares_needed } => {
                Ok(pb::RotateRootResponse { root_epoch, holders, shares_needed })
            }
            other => Err(unexpected(other)),
        };
        self.run(request, Ok(AdminOp::RotateRoot), answer).await
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Answer<pb::ClusterStatusResponse> {
        let answer = |out| match out {
            AdminOut::ClusterStatus(s) => Ok(c::cluster_status(s)),
            other => Err(unexpected(other)),
        };
        self.run(request, Ok(AdminOp::Status), answer).await
    }

    async fn local_status(&self, request: Request<pb::StatusRequest>) -> Answer<pb::NodeStatus> {
        let answer = |out| match out {
            AdminOut::NodeStatus(s) => Ok(c::node_status(*s)),
            other => Err(unexpected(other)),
        };
        self.run(request, Ok(AdminOp::LocalStatus), answer).await
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Answer<pb::AdminEmpty> {
        let op = request
            .get_ref()
            .member
            .as_ref()
            .map(|m| {
                let (id, info) = c::member(m);
                AdminOp::AddNode { id, info }
            })
            .ok_or_else(|| NodeError::Invalid("member is required".into()));
        self.run(request, op, done).await
    }

    async fn remove_node(&self, request: Request<pb::RemoveNodeRequest>) -> Answer<pb::AdminEmpty> {
        let op = Ok(AdminOp::RemoveNode { id: request.get_ref().id });
        self.run(request, op, done).await
    }

    async fn transfer_leader(&self, request: Request<pb::TransferLeaderRequest>) -> Answer<pb::AdminEmpty> {
        let op = Ok(AdminOp::TransferLeader { id: request.get_ref().id });
        self.run(request, op, done).await
    }

    async fn snapshot(&self, request: Request<pb::SnapshotRequest>) -> Answer<pb::SnapshotResponse> {
        let answer = |out| match out {
            AdminOut::Snapshot { last_log_index } => Ok(pb::SnapshotResponse { last_log_index }),
            other => Err(unexpected(other)),
        };
        self.run(request, Ok(AdminOp::Snapshot), answer).await
    }

    async fn read_audit(&self, request: Request<pb::ReadAuditRequest>) -> Answer<pb::ReadAuditResponse> {
        let node = self.0.node().id();
        let r = *request.get_ref();
        let from = usize::try_from(r.from_index).unwrap_or(usize::MAX);
        let op = Ok(AdminOp::ReadAudit { from, max: r.max_records as usize });
        let answer = |out| match out {
            AdminOut::Audit { lines, last_seq, total } => Ok(pb::ReadAuditResponse {
                node: 0,
                lines: lines
                    .into_iter()
                    .map(|l| pb::AuditLine { file: l.place.file, line: l.place.line as u64, text: l.text })
                    .collect(),
                last_seq,
                total: total as u64,
            }),
            other => Err(unexpected(other)),
        };
        let mut response = self.run(request, op, answer).await?;
        response.get_mut().node = node;
        Ok(response)
    }

    async fn audit_heads(&self, request: Request<pb::AuditHeadsRequest>) -> Answer<pb::AuditHeadsResponse> {
        let answer = |out| match out {
            AdminOut::AuditHeads(heads) => Ok(pb::AuditHeadsResponse {
                heads: heads
                    .into_iter()
                    .map(|(node, h)| pb::AuditHead { node, seq: h.seq, hash: h.hash, at_ms: h.at_ms })
                    .collect(),
            }),
            other => Err(unexpected(other)),
        };
        self.run(request, Ok(AdminOp::AuditHeads), answer).await
    }

    async fn get_quotas(&self, request: Request<pb::GetQuotasRequest>) -> Answer<pb::GetQuotasResponse> {
        let principal = &request.get_ref().principal;
        let op = if principal.is_empty() {
            Ok(AdminOp::GetQuotas { principal: None })
        } else {
            raft::Principal::parse(principal)
                .map(|p| AdminOp::GetQuotas { principal: Some(p) })
                .map_err(NodeError::Invalid)
        };
        let answer = |out| match out {
            AdminOut::Quotas { quotas, effective } => Ok(c::quotas_response(&quotas, effective)),
            other => Err(unexpected(other)),
        };
        self.run(request, op, answer).await
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> Answer<pb::AdminEmpty> {
        let r = request.get_ref();
        let scope = Some(r.scope.clone()).filter(|s| !s.is_empty());
        let op = Ok(AdminOp::SetQuota { scope, limits: r.limits.as_ref().map(c::limits) });
        self.run(request, op, done).await
    }
}

fn done(out: AdminOut) -> Result<pb::AdminEmpty> {
    match out {
        AdminOut::Done => Ok(pb::AdminEmpty {}),
        other => Err(unexpected(other)),
    }
}

/// The other members' status, asked over the node-to-node service.
#[derive(Debug)]
pub(super) struct PeerFleet(pub Arc<Node>);

#[async_trait::async_trait]
impl Fleet for PeerFleet {
    async fn local_status(&self, _id: NodeId, member: &NodeInfo, timeout: Duration) -> Result<NodeStatus> {
        let ask = async {
            let channel = self.0.consensus.peers().channel(&member.addr)?;
            let mut request = Request::new(InternalEmpty {});
            request.set_timeout(timeout);
            InternalClient::new(channel)
                .local_status(request)
                .await
                .map(|r| c::node_status_from_wire(r.into_inner()))
                .map_err(|s| NodeError::Unavailable(s.message().into()))
        };
        tokio::time::timeout(timeout, ask).await.map_err(|_| NodeError::Unavailable("timed out".into()))?
    }
}
