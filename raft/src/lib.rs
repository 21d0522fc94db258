//! The replicated key store: openraft's type configuration, the command set, and the **pure**
//! state machine that applies commands.
//!
//! **Architecture Invariant:** `apply` is a deterministic function of the state and the
//! command. Every timestamp and every random byte (key ids, wrapped material) is chosen by the
//! proposer and carried inside the command, so every replica reaches the same state. This crate
//! opens no sockets or files and reads no clock; its only randomness is openraft's election
//! jitter, drawn from the seedable stream in [`runtime`].

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

mod command;
mod error;
mod key;
pub mod keygen;
mod policy;
mod principal;
pub mod quota;
pub mod runtime;
mod state;

pub use command::{Applied, Command, CommandResult, KeyChange, Payload, SealedRecord};
pub use error::{Action, KmsError, Unusable};
pub use key::{
    check_regions, validate_alias, Key, KeyRef, KeySpec, KeyState, KeyUsage, KeyVersion, VersionState, WrappedMaterial,
    DELETION_DAYS_DEFAULT, DELETION_DAYS_MAX, DELETION_DAYS_MIN, MAX_ALLOWED_REGIONS, MAX_REGION_LEN,
};
pub use policy::{
    check_context, Actor, Conditions, Grant, KeyPolicy, Permission, Request, Statement, MAX_CONTEXT_PAIRS,
    MAX_GRANTS_PER_KEY, MAX_PRINCIPALS, MAX_STATEMENTS,
};
pub use principal::Principal;
pub use quota::{Limits, Quotas, Rate};
pub use state::{AuditHead, KeyStore, Keyring, RetiredRoot, RootHolder, RootKey};

/// Raft node ids.
pub type NodeId = u64;

/// What the cluster knows of a member: where to reach it and where it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` serving both the public and the node-to-node gRPC services.
    pub addr: String,
    pub region: String,
    pub zone: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.region)
    }
}

openraft::declare_raft_types!(
    /// keyquorum's openraft type configuration.
    pub TypeConfig:
        D = Payload,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::KqRuntime,
);

/// Milliseconds in a day, for deletion windows and rotation periods.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;
