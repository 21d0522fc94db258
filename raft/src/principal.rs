//! Who a caller is: the principal a certificate names.
//!
//! Every certificate the cluster CA issues names its holder in a URI subject-alternative name,
//! SPIFFE-style: `spiffe://keyquorum/node/<id>`, `spiffe://keyquorum/admin/<name>` or
//! `spiffe://keyquorum/client/<name>`. The CLI and the replicated state spell the same thing
//! `node/3`, `admin/alice`, `client/payments`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NodeId;

const URI_PREFIX: &str = "spiffe://keyquorum/";

/// A caller of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// A cluster member. It serves and forwards calls; it is not a KMS principal of its own.
    Node(NodeId),
    /// An operator.
    Admin(String),
    /// An application.
    Client(String),
}

impl Principal {
    /// The URI a certificate names this principal by.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{self}")
    }

    /// The principal a certificate's URI names; `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::parse(uri.strip_prefix(URI_PREFIX)?).ok()
    }

    /// Parses `node/3`, `admin/alice`, `client/payments`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("bad principal {s:?}: expected node/<id>, admin/<name> or client/<name>");
        let (kind, name) = s.split_once('/').ok_or_else(bad)?;
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        match kind {
            "node" => name.parse().ok().filter(|id| *id > 0).map(Principal::Node).ok_or_else(bad),
            "admin" => Ok(Principal::Admin(name.to_string())),
            "client" => Ok(Principal::Client(name.to_string())),
            _ => Err(bad()),
        }
    }

    /// The node id of a node principal.
    pub fn node_id(&self) -> Option<NodeId> {
        match self {
            Principal::Node(id) => Some(*id),
            Principal::Admin(_) | Principal::Client(_) => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Node(id) => write!(f, "node/{id}"),
            Principal::Admin(name) => write!(f, "admin/{name}"),
            Principal::Client(name) => write!(f, "client/{name}"),
        }
    }
}

impl std::str::FromStr for Principal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_only_in_their_spelling_and_round_trip_through_their_uri() {
        assert_eq!(Principal::parse("node/3").unwrap(), Principal::Node(3));
        assert_eq!(Principal::parse("admin/alice").unwrap(), Principal::Admin("alice".into()));
        for bad in ["node/0", "node/x", "node/", "root/1", "client/a/b", "", "admin"] {
            assert!(Principal::parse(bad).is_err(), "{bad:?} parsed");
        }
        for p in [Principal::Node(7), Principal::Admin("ops".into()), Principal::Client("payments".into())] {
            assert_eq!(Principal::from_uri(&p.uri()), Some(p.clone()));
        }
        assert_eq!(Principal::from_uri("spiffe://other/node/1"), None);
    }
}
