//! Sending a call this node does not serve to the member that does, with the call's context in
//! node-only metadata: the forwarding member (`x-keyquorum-forwarded-by`) and the principal
//! the call is for (`x-keyquorum-forwarded-for`). The receiving member trusts these only from
//! a current member's certificate (`grpc::context`).

use std::future::Future;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::status::status;
use crate::kms::{CallContext, Caller, Forward};
use crate::node::Node;

/// Metadata naming the member that forwarded a call.
pub(crate) const FORWARDED_BY: &str = "x-keyquorum-forwarded-by";
/// Metadata naming the principal a forwarded call is for.
pub(crate) const FORWARDED_FOR: &str = "x-keyquorum-forwarded-for";

/// How long a forwarded call may take (a cold unwrap included), within clients' usual 15 s.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// `message` as this node forwards it for `ctx`.
fn request<W>(node: &Node, ctx: &CallContext, message: W) -> Request<W> {
    let mut request = Request::new(message);
    request.set_timeout(FORWARD_TIMEOUT);
    let md = request.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(node.id().to_string()) {
        md.insert(FORWARDED_BY, v);
    }
    if let Ok(v) = MetadataValue::try_from(ctx.request_id.as_str()) {
        md.insert(super::REQUEST_ID, v);
    }
    if let Caller::Verified(principal) = &ctx.caller {
        if let Ok(v) = MetadataValue::try_from(principal.to_string()) {
            md.insert(FORWARDED_FOR, v);
        }
    }
    request
}

/// Sends the call to each member of `forward.to` in turn with `call` on a client `client`
/// makes, the request built by `message`. Tries the next member when one is unreachable or
/// unavailable, unless the call is not idempotent and a member answered having maybe done it.
/// When none answers: the fallback if there is one, else the refusal with every member's
/// failure.
pub(super) async fn forward<C, W, R, Fut>(
    node: &Node,
    ctx: &CallContext,
    forward: Forward<R>,
    client: impl Fn(Channel) -> C,
    message: W,
    call: impl Fn(C, Request<W>) -> Fut,
) -> Result<Response<R>, Status>
where
    W: Clone,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let Forward { to, refusal, idempotent, fallback } = forward;
    let mut failures = Vec::new();
    for (id, info) in to {
        let channel = match node.consensus.peers().channel(&info.addr) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("node {id}: {e}"));
                continue;
            }
        };
        tracing::debug!(to = id, caller = %ctx.caller, "forwarding a call");
        match call(client(channel), request(node, ctx, message.clone())).await {
            Ok(r) => return Ok(r),
            Err(s) => {
                // Nothing was done: no answer came, or the member refused the call before any
                // work (at its limit of calls in flight), so even an untokened write moves on.
                let nothing_done = (matches!(s.code(), Code::Unknown | Code::Cancelled) && s.metadata().is_empty())
                    || proto::retry_after(&s).is_some();
                if !proto::retry_elsewhere(&s) || !(idempotent || nothing_done) {
                    return Err(s);
                }
                failures.push(format!("node {id} ({}): {}", info.region, s.message()));
            }
        }
    }
    if let Some(answer) = fallback {
        return Ok(Response::new(answer));
    }
    let refused = status(refusal);
    Err(Status::new(refused.code(), format!("{}; no node there answered: {}", refused.message(), failures.join("; "))))
}
