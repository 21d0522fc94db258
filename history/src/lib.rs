//! What clients saw: the history of a run as Jepsen records it. Every call is an invocation
//! and a completion, each with a global sequence number (so all events of a run are ordered
//! exactly), and an outcome: `ok` with the value returned, `fail` when the cluster definitely
//! refused it, or `unknown` (Jepsen's `:info`) when it timed out or the connection broke and
//! it may or may not have taken effect.
//!
//! The simulator (`chaos`) and the Jepsen harness (`jepsen`) record the same history through
//! [`ops::execute`] and judge it with the same checkers ([`check`]).

pub mod access;
pub mod check;
pub mod ops;

use serde::{Deserialize, Serialize};

/// A key's metadata as a read returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStatus {
    Enabled,
    Disabled,
    PendingDeletion,
    Destroyed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub key_id: String,
    pub status: KeyStatus,
    pub primary: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "f")]
pub enum OpKind {
    /// CreateKey with the op's key as alias and `create-<key>` as idempotency token: every
    /// client creates each key, and they must get one key.
    Create,
    /// CreateKey without an alias: the op's key is the idempotency token, also written as the
    /// new key's description, and the caller retries it with the same token after an unknown
    /// outcome (`check::idempotent_create`).
    CreateByToken,
    Rotate,
    Disable,
    Enable,
    ScheduleDeletion,
    CancelDeletion,
    Describe {
        node: Option<u64>,
    },
    Encrypt {
        #[serde(with = "hex_bytes")]
        plaintext: Vec<u8>,
    },
    Decrypt {
        #[serde(with = "hex_bytes")]
        ciphertext: Vec<u8>,
        #[serde(with = "hex_bytes")]
        plaintext: Vec<u8>,
        node: Option<u64>,
    },
    DataKey,
    /// CreateGrant of Encrypt on the key to `grantee`, with the op's token (the caller asks
    /// again with the same token while the outcome is unknown: [`ops::execute_settled`]).
    Grant {
        grantee: String,
    },
    /// RevokeGrant of a grant a `Grant` returned (asked again while unknown; a grant found
    /// gone after an unknown attempt was revoked by it).
    Revoke {
        grant_id: String,
    },
    /// PutKeyPolicy: `owner` may do everything, and each of `encrypters` may Encrypt.
    PutPolicy {
        owner: String,
        encrypters: Vec<String>,
    },
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::CreateByToken => "create-by-token",
            OpKind::Rotate => "rotate",
            OpKind::Disable => "disable",
            OpKind::Enable => "enable",
            OpKind::ScheduleDeletion => "schedule-deletion",
            OpKind::CancelDeletion => "cancel-deletion",
            OpKind::Describe { .. } => "describe",
            OpKind::Encrypt { .. } => "encrypt",
            OpKind::Decrypt { .. } => "decrypt",
            OpKind::DataKey => "datakey",
            OpKind::Grant { .. } => "grant",
            OpKind::Revoke { .. } => "revoke",
            OpKind::PutPolicy { .. } => "put-policy",
        }
    }

    /// Whether it changes who may use the key (and nothing the key-metadata model holds).
    pub fn is_access(&self) -> bool {
        matches!(self, OpKind::Grant { .. } | OpKind::Revoke { .. } | OpKind::PutPolicy { .. })
    }

    pub fn is_write(&self) -> bool {
        matches!(
            self,
            OpKind::Create
                | OpKind::CreateByToken
                | OpKind::Rotate
                | OpKind::Disable
                | OpKind::Enable
                | OpKind::ScheduleDeletion
                | OpKind::CancelDeletion
                | OpKind::Grant { .. }
                | OpKind::Revoke { .. }
                | OpKind::PutPolicy { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Value {
    Key(KeyView),
    Ciphertext {
        #[serde(with = "hex_bytes")]
        ciphertext: Vec<u8>,
        #[serde(with = "hex_bytes")]
        plaintext: Vec<u8>,
        key_id: String,
        version: u32,
    },
    Plaintext {
        #[serde(with = "hex_bytes")]
        plaintext: Vec<u8>,
        version: u32,
    },
    Grant {
        grant_id: String,
    },
    /// Done, with nothing to return (a revoke, a policy put).
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok(Value),
    /// A definite failure: the request was refused (gRPC code name, message).
    Fail(String, String),
    /// Timed out or the connection broke: it may or may not have taken effect.
    Unknown(String),
}

impl Outcome {
    /// Whether the node answered: anything but an unknown outcome or `Unavailable` (a node
    /// that cannot serve for now, during an election say).
    pub fn answered(&self) -> bool {
        match self {
            Outcome::Unknown(_) => false,
            Outcome::Fail(code, _) => code != "Unavailable",
            Outcome::Ok(_) => true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub client: String,
    /// The key's alias (`k0`, `k1`, ...).
    pub key: String,
    pub kind: OpKind,
    /// Global sequence numbers: every invoke and completion gets the next one, so they
    /// order all events of the run exactly.
    pub invoke: u64,
    pub complete: Option<u64>,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Option<Outcome>,
}

impl Op {
    /// An operation just invoked at sequence number `seq`, `ms` into the run.
    pub fn invoked(client: &str, key: &str, kind: OpKind, seq: u64, ms: u64) -> Self {
        Op {
            client: client.to_string(),
            key: key.to_string(),
            kind,
            invoke: seq,
            complete: None,
            invoke_ms: ms,
            complete_ms: 0,
            outcome: None,
        }
    }

    /// Completion for ordering: an op with an unknown outcome may take effect until the end.
    pub fn effective_complete(&self) -> u64 {
        match self.outcome {
            Some(Outcome::Unknown(_)) | None => u64::MAX,
            _ => self.complete.unwrap_or(u64::MAX),
        }
    }

    pub fn ok(&self) -> Option<&Value> {
        match &self.outcome {
            Some(Outcome::Ok(v)) => Some(v),
            _ => None,
        }
    }
}

/// A violated invariant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// Every ciphertext a client was given, as `(key, ciphertext, plaintext)`: what the final
/// reads decrypt at every node (`check::crypto_set`).
pub fn acknowledged_ciphertexts(ops: &[Op]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    ops.iter()
        .filter_map(|o| match o.ok() {
            Some(Value::Ciphertext { ciphertext, plaintext, .. }) if !plaintext.is_empty() => {
                Some((o.key.clone(), ciphertext.clone(), plaintext.clone()))
            }
            _ => None,
        })
        .collect()
}

/// One short line for an outcome (no ciphertext bytes).
pub fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(Value::Key(k)) => format!("ok {:?} v{}", k.status, k.primary),
        Outcome::Ok(Value::Ciphertext { version, .. }) => format!("ok v{version}"),
        Outcome::Ok(Value::Plaintext { version, .. }) => format!("ok v{version}"),
        Outcome::Ok(Value::Grant { grant_id }) => format!("ok grant {grant_id}"),
        Outcome::Ok(Value::Done) => "ok".into(),
        Outcome::Fail(code, msg) => format!("fail {code} {msg}"),
        Outcome::Unknown(why) => format!("unknown {why}"),
    }
}

/// Bytes as hex strings in JSON (histories are read by people too).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_survives_a_json_round_trip() {
        let op = Op {
            client: "c1".into(),
            key: "k0".into(),
            kind: OpKind::Decrypt { ciphertext: vec![1, 2], plaintext: b"p".to_vec(), node: Some(3) },
            invoke: 4,
            complete: Some(9),
            invoke_ms: 10,
            complete_ms: 12,
            outcome: Some(Outcome::Ok(Value::Plaintext { plaintext: b"p".to_vec(), version: 2 })),
        };
        let text = serde_json::to_string(&op).unwrap_or_default();
        assert!(text.contains(r#""f":"decrypt""#) && text.contains(r#""ciphertext":"0102""#), "{text}");
        let back: Op = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!((back.kind, back.outcome), (op.kind, op.outcome));
    }
}
