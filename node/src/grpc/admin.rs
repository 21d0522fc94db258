//! `keyquorum.v1.Admin`: each RPC into an operator call with its context, through the admin
//! layer (`crate::admin`), and back; and [`PeerFleet`], how that layer asks the other members
//! for their status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::admin_client::AdminClient;
use proto::v1::admin_server::Admin as AdminRpc;
use raft::{NodeId, NodeInfo};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert as c;
use super::{context, forward::forward};
use crate::admin::{Admin, AdminOp, AdminOut, Fleet, NodeStatus};
use crate::error::{NodeError, Result};
use crate::kms::{CallContext, Routed};
use crate::node::Node;

type Answer<R> = std::result::Result<Response<R>, Status>;

#[derive(Debug)]
pub(crate) struct AdminService(pub Arc<Admin>);

fn unexpected(out: AdminOut) -> NodeError {
    NodeError::Internal(format!("unexpected admin outcome {out:?}"))
}

impl AdminService {
    /// Runs `op` for the request's caller; its outcome through `answer`, or, when the leader
    /// serves it, the leader's answer to `message` sent with `send`.
    async fn run<T, W, R, Fut>(
        &self,
        request: Request<T>,
        op: Result<AdminOp>,
        answer: fn(AdminOut) -> Result<R>,
        message: W,
        send: impl Fn(AdminClient<Channel>, Request<W>) -> Fut,
    ) -> Answer<R>
    where
        W: Clone,
        Fut: Future<Output = Answer<R>>,
    {
        let ctx: CallContext = context(self.0.node(), &request)?;
        match self.0.execute(&ctx, op?).await? {
            Routed::Served(out) => Ok(Response::new(answer(out)?)),
            Routed::Forward(to, _) => {
                forward(self.0.node(), &ctx, to.map(answer)?, AdminClient::new, message, send).await
            }
        }
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
        let message = request.get_ref().clone();
        let op = Ok(AdminOp::Init { members: unique });
        self.run(request, op, answer, message, |mut a, r| async move { a.init(r).await }).await
    }

    async fn rotate_root(&self, request: Request<pb::RotateRootRequest>) -> Answer<pb::RotateRootResponse> {
        let answer = |out| match out {
            AdminOut::RotateRoot { root_epoch, holders, shares_needed } => {
                Ok(pb::RotateRootResponse { root_epoch, holders, shares_needed })
            }
            other => Err(unexpected(other)),
        };
        let send = |mut a: AdminClient<Channel>, r| async move { a.rotate_root(r).await };
        self.run(request, Ok(AdminOp::RotateRoot), answer, pb::RotateRootRequest {}, send).await
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Answer<pb::ClusterStatusResponse> {
        let answer = |out| match out {
            AdminOut::ClusterStatus(s) => Ok(c::cluster_status(s)),
            other => Err(unexpected(other)),
        };
        let send = |mut a: AdminClient<Channel>, r| async move { a.status(r).await };
        self.run(request, Ok(AdminOp::Status), answer, pb::StatusRequest {}, send).await
    }

    async fn local_status(&self, request: Request<pb::StatusRequest>) -> Answer<pb::NodeStatus> {
        let answer = |out| match out {
            AdminOut::NodeStatus(s) => Ok(c::node_status(*s)),
            other => Err(unexpected(other)),
        };
        let send = |mut a: AdminClient<Channel>, r| async move { a.local_status(r).await };
        self.run(request, Ok(AdminOp::LocalStatus), answer, pb::StatusRequest {}, send).await
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Answer<pb::AdminEmpty> {
        let message = request.get_ref().clone();
        let op = message
            .member
            .as_ref()
            .map(|m| {
                let (id, info) = c::member(m);
                AdminOp::AddNode { id, info }
            })
            .ok_or_else(|| NodeError::Invalid("member is required".into()));
        self.run(request, op, done, message.clone(), |mut a, r| async move { a.add_node(r).await }).await
    }

    async fn remove_node(&self, request: Request<pb::RemoveNodeRequest>) -> Answer<pb::AdminEmpty> {
        let message = *request.get_ref();
        let op = Ok(AdminOp::RemoveNode { id: message.id });
        self.run(request, op, done, message, |mut a, r| async move { a.remove_node(r).await }).await
    }

    async fn transfer_leader(&self, request: Request<pb::TransferLeaderRequest>) -> Answer<pb::AdminEmpty> {
        let message = *request.get_ref();
        let op = Ok(AdminOp::TransferLeader { id: message.id });
        self.run(request, op, done, message, |mut a, r| async move { a.transfer_leader(r).await }).await
    }

    async fn snapshot(&self, request: Request<pb::SnapshotRequest>) -> Answer<pb::SnapshotResponse> {
        let answer = |out| match out {
            AdminOut::Snapshot { last_log_index } => Ok(pb::SnapshotResponse { last_log_index }),
            other => Err(unexpected(other)),
        };
        let send = |mut a: AdminClient<Channel>, r| async move { a.snapshot(r).await };
        self.run(request, Ok(AdminOp::Snapshot), answer, pb::SnapshotRequest {}, send).await
    }
}

fn done(out: AdminOut) -> Result<pb::AdminEmpty> {
    match out {
        AdminOut::Done => Ok(pb::AdminEmpty {}),
        other => Err(unexpected(other)),
    }
}

/// The other members' status, asked over their Admin service.
#[derive(Debug)]
pub(super) struct PeerFleet(pub Arc<Node>);

#[async_trait::async_trait]
impl Fleet for PeerFleet {
    async fn local_status(&self, _id: NodeId, member: &NodeInfo, timeout: Duration) -> Result<NodeStatus> {
        let ask = async {
            let channel = self.0.consensus.peers().channel(&member.addr)?;
            let mut request = Request::new(pb::StatusRequest {});
            request.set_timeout(timeout);
            AdminClient::new(channel)
                .local_status(request)
                .await
                .map(|r| c::node_status_from_wire(r.into_inner()))
                .map_err(|s| NodeError::Unavailable(s.message().into()))
        };
        tokio::time::timeout(timeout, ask).await.map_err(|_| NodeError::Unavailable("timed out".into()))?
    }
}
