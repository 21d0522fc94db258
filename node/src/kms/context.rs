//! The context of one call: who it is for, how it reached this node, how fresh its reads must
//! be, and its idempotency token. Built at the gRPC edge, it flows through the whole pipeline
//! to the audit record.

use raft::{Actor, NodeId, Principal};

use crate::consensus::Consistency;
pub use crate::tls::Caller;

/// One call's context.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Who the call is for (never the member that forwarded it).
    pub caller: Caller,
    /// The member that forwarded the call here, if one did. A forwarded call is served here
    /// or refused, never forwarded again.
    pub forwarded_by: Option<NodeId>,
    /// How fresh what the call reads must be.
    pub consistency: Consistency,
    /// The write's idempotency token, if it carries one.
    pub token: Option<String>,
    /// The region of the node the call entered the cluster at (this node's, or the
    /// forwarding member's): what a policy's region condition is about.
    pub region: String,
    /// The caller's request id (`x-request-id`; a forwarded call keeps it), or one this node
    /// made: what the audit records of one call share across nodes.
    pub request_id: String,
    /// The address the call came from, if known.
    pub peer: Option<String>,
}

impl CallContext {
    /// A context for `caller`, who called a node in `region` directly, linearizable, without a
    /// token.
    pub fn new(caller: Caller, region: String) -> Self {
        Self {
            caller,
            forwarded_by: None,
            consistency: Consistency::Linearizable,
            token: None,
            region,
            request_id: String::new(),
            peer: None,
        }
    }

    /// The principal the call is authorized as, and where it entered; `None` when the node
    /// serves without authentication (plaintext), where nothing is authorized.
    pub fn actor(&self) -> Option<Actor> {
        match &self.caller {
            Caller::Verified(principal) => Some(Actor { principal: principal.clone(), region: self.region.clone() }),
            Caller::Plaintext => None,
        }
    }

    /// The principal, if authenticated.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.caller {
            Caller::Verified(principal) => Some(principal),
            Caller::Plaintext => None,
        }
    }

    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }
}
