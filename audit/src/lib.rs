//! The audit log's format and its proof of integrity, shared by the node that writes it and
//! the `keyquorum audit` commands that check it.
//!
//! Each node appends one [`Record`] per call it handles, as a JSON line, to its own audit
//! files. Records form a **hash chain**: each names its sequence number and the hash of the
//! record before it (`prev`), and its own `hash` is SHA-256 over its canonical JSON with the
//! hash left out ([`Record::compute_hash`]). Each node also writes its chain head (the latest
//! sequence number and hash) into the replicated Raft log from time to time, so any other
//! node holds a commitment to it. [`verify`] walks a node's records and names the first one
//! that breaks the chain: an edited record (its hash), a deleted or reordered one (the
//! sequence or `prev` link), a truncated tail (the replicated head names a record that is
//! not there, or a different one).
//!
//! **Architecture Invariant:** a record never holds a plaintext, key material, a ciphertext
//! or a signature: only who, what, which key, the encryption context (not secret, as in AWS
//! KMS's CloudTrail records) and the outcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of a node's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The operation of the record a node writes when it deletes old audit files under its
/// retention setting: `retained_from` names the first sequence number it keeps.
pub const RETENTION: &str = "AuditRetention";

/// One call, as a node recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1, 2, 3… per node, without gaps.
    pub seq: u64,
    /// The hash of the record before (`GENESIS` for the first).
    pub prev: String,
    /// When the node recorded it (milliseconds since the Unix epoch, the node's clock).
    pub time_ms: u64,
    /// The node that recorded it.
    pub node: u64,
    /// `kms` or `admin` (or `audit` for the log's own records).
    pub service: String,
    pub operation: String,
    /// Who the call was for (`client/…`, `admin/…`); absent on a node serving plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The member that forwarded the call here on the principal's behalf, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_by: Option<u64>,
    /// The key as the call named it (an id or `alias/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's id and version the call used, when it used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The encryption context (not secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// The gRPC status code name of the answer (`OK`, `PERMISSION_DENIED`, …).
    pub code: String,
    /// What happened, in a few words (`ok`, `forwarded to node 2`, the error's kind).
    pub outcome: String,
    /// The caller's request id (`x-request-id`), or one the node made.
    pub request_id: String,
    /// The address the call came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// For a retention record: the first sequence number kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_from: Option<u64>,
    /// SHA-256 over the record's canonical JSON without this field, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// The record's hash: SHA-256 over its JSON (fields in declaration order, the context
    /// sorted) with `hash` empty, hence left out.
    pub fn compute_hash(&self) -> String {
        let mut body = self.clone();
        body.hash = String::new();
        // Serializing a struct of strings, numbers and a string map cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Links the record after `prev` (sequence number and hash) and seals it.
    pub fn seal(&mut self, prev_seq: u64, prev_hash: &str) {
        self.seq = prev_seq + 1;
        self.prev = prev_hash.to_string();
        self.hash = self.compute_hash();
    }

    /// [`Record::seal`] and [`Record::to_line`] with one serialization: the JSON without the
    /// hash is what is hashed, and since `hash` is the last field, the line is that JSON with
    /// the hash appended.
    pub fn seal_to_line(&mut self, prev_seq: u64, prev_hash: &str) -> String {
        self.seq = prev_seq + 1;
        self.prev = prev_hash.to_string();
        self.hash = String::new();
        let mut line = self.to_line();
        self.hash = hex::encode(Sha256::digest(line.as_bytes()));
        if line.ends_with('}') {
            line.pop();
            line.push_str(",\"hash\":\"");
            line.push_str(&self.hash);
            line.push_str("\"}");
            line
        } else {
            self.to_line()
        }
    }

    /// The JSON line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A chain head as the replicated log holds it: the node's record `seq` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Where a record sits, for the report: a label for its file (or node) and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: usize,
}

/// A record read back: where it was, and its text.
#[derive(Debug, Clone)]
pub struct Line {
    pub place: Place,
    pub text: String,
}

/// What a check of one node's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The first and last sequence numbers present (`None` if there are none).
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub records: u64,
    /// Whether the replicated head was found in the chain (false when there was none).
    pub head_matched: bool,
}

/// The first thing wrong in a node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The sequence number the bad record has, or should have had.
    pub seq: u64,
    /// Where, if the problem is a record that is there.
    pub place: Option<Place>,
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.place {
            Some(p) => write!(f, "record {} ({} line {}): {}", self.seq, p.file, p.line, self.why),
            None => write!(f, "record {}: {}", self.seq, self.why),
        }
    }
}

/// Checks one node's records, in file order, against the head the replicated log holds for
/// it (if any). The chain must start at 1, or where the last retention record in it says the
/// kept records start; every record must hash to its `hash`, follow the one before by
/// sequence number and `prev`, and name `node`; and the head's record must be there with the
/// head's hash.
pub fn verify(node: u64, lines: &[Line], head: Option<&Head>) -> Result<Verified, Broken> {
    let mut records = Vec::with_capacity(lines.len());
    for line in lines {
        let record: Record = serde_json::from_str(&line.text).map_err(|e| Broken {
            seq: records.last().map_or(1, |r: &Record| r.seq + 1),
            place: Some(line.place.clone()),
            why: format!("not a record: {e}"),
        })?;
        records.push(record);
    }
    // Where the kept records must start: 1, unless a retention record (itself in the chain)
    // says older ones were deleted.
    let start = records.iter().rev().find_map(|r| r.retained_from.filter(|_| r.operation == RETENTION)).unwrap_or(1);
    let mut prev: Option<&Record> = None;
    for (record, line) in records.iter().zip(lines) {
        let bad = |seq: u64, why: String| Broken { seq, place: Some(line.place.clone()), why };
        let expected_seq = prev.map_or(start, |p| p.seq + 1);
        if record.seq != expected_seq {
            let why = match prev {
                None => format!("the chain starts at {} where it should start at {expected_seq}", record.seq),
                Some(p) if record.seq <= p.seq => {
                    format!("sequence number {} after {}: records reordered or repeated", record.seq, p.seq)
                }
                // The record that belongs here comes later: the records were reordered.
                Some(_) if records.iter().any(|r| r.seq == expected_seq) => {
                    format!("record {} is here where record {expected_seq} should be: records reordered", record.seq)
                }
                Some(p) if record.seq == p.seq + 2 => format!("record {} is missing", p.seq + 1),
                Some(p) => format!("records {}..{} are missing", p.seq + 1, record.seq - 1),
            };
            return Err(bad(expected_seq, why));
        }
        let expected_prev = match prev {
            Some(p) => p.hash.as_str(),
            None if record.seq == 1 => GENESIS,
            // The first kept record after a retention cut links to a deleted one.
            None => record.prev.as_str(),
        };
        if record.prev != expected_prev {
            return Err(bad(record.seq, "its link to the record before does not match that record's hash".into()));
        }
        if record.compute_hash() != record.hash {
            return Err(bad(record.seq, "its contents do not match its hash: the record was edited".into()));
        }
        if record.node != node {
            return Err(bad(record.seq, format!("it names node {} in node {node}'s chain", record.node)));
        }
        prev = Some(record);
    }
    let mut head_matched = false;
    if let Some(head) = head {
        match records.iter().find(|r| r.seq == head.seq) {
            Some(r) if r.hash == head.hash => head_matched = true,
            Some(r) => {
                let place = lines.iter().zip(&records).find(|(_, x)| x.seq == r.seq).map(|(l, _)| l.place.clone());
                return Err(Broken {
                    seq: r.seq,
                    place,
                    why: "its hash differs from the chain head the cluster replicated: the chain was rewritten".into(),
                });
            }
            None => {
                let why = match records.last() {
                    Some(last) if last.seq < head.seq => format!(
                        "missing: the cluster replicated a chain head at record {}, the chain ends at {}: truncated",
                        head.seq, last.seq
                    ),
                    None => format!("missing: the cluster replicated a chain head at record {}, no records", head.seq),
                    // A head older than every kept record: rotated out under retention.
                    Some(_) => String::new(),
                };
                if !why.is_empty() {
                    return Err(Broken { seq: head.seq, place: None, why });
                }
            }
        }
    }
    Ok(Verified {
        first: records.first().map(|r| r.seq),
        last: records.last().map(|r| r.seq),
        records: records.len() as u64,
        head_matched,
    })
}

#[cfg(test)]
mod tests;
