//! Dealerless generation of the root key through the log (`crypto::dkg`): the replicated
//! record of one round, and the rules `apply` follows for its three commands.
//!
//! `StartKeyGen` names the participants; each participant commits a part (`KeyGenPart`) and
//! acknowledges the others' parts (`KeyGenAck`). The first acknowledgement after which `t + 1`
//! parts each hold `t + 1` acknowledgements ends the round: the public key set is computed from
//! those parts, here, deterministically, and the root key is installed with the round's
//! transcript, from which every holder derives its own share.

use std::collections::BTreeMap;

use crypto::dkg::{self, CompletePart};
use serde::{Deserialize, Serialize};

use crate::{KmsError, NodeId};

/// Most participants a round accepts.
pub const MAX_PARTICIPANTS: usize = 64;
/// Length of a node identity public key (compressed BLS12-381 G1).
pub const IDENTITY_LEN: usize = 48;

/// A complete part as `crypto::dkg` takes it: the part and its `(participant index, ack)`s.
pub type CompletePartBytes = (Vec<u8>, Vec<(usize, Vec<u8>)>);

/// One round of key generation as the log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenRound {
    pub epoch: u64,
    pub threshold: usize,
    /// Participants in share-index order, with their identity public keys.
    pub participants: Vec<(NodeId, Vec<u8>)>,
    /// Parts by dealer.
    pub parts: BTreeMap<NodeId, KeyGenPart>,
}

/// A dealer's part and the acknowledgements it has received, by acknowledging node.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenPart {
    pub part: Vec<u8>,
    pub acks: BTreeMap<NodeId, Vec<u8>>,
}

impl std::fmt::Debug for KeyGenPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyGenPart {{ part: [{} bytes], acks from: {:?} }}", self.part.len(), self.acks.keys())
    }
}

impl KeyGenRound {
    pub(crate) fn new(epoch: u64, participants: &[(NodeId, Vec<u8>)]) -> Result<Self, KmsError> {
        if participants.is_empty() || participants.len() > MAX_PARTICIPANTS {
            return Err(KmsError::Invalid(format!("key generation needs 1 to {MAX_PARTICIPANTS} participants")));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (id, identity) in participants {
            if !seen.insert(*id) {
                return Err(KmsError::Invalid(format!("participant {id} is listed twice")));
            }
            if identity.len() != IDENTITY_LEN {
                return Err(KmsError::Invalid(format!("participant {id}'s identity key is not {IDENTITY_LEN} bytes")));
            }
        }
        Ok(Self {
            epoch,
            threshold: crypto::threshold::threshold_for(participants.len()),
            participants: participants.to_vec(),
            parts: BTreeMap::new(),
        })
    }

    /// A participant's share index.
    pub fn index_of(&self, node: NodeId) -> Option<usize> {
        self.participants.iter().position(|(id, _)| *id == node)
    }

    /// The participants' node ids, in share-index order.
    pub fn participant_ids(&self) -> Vec<NodeId> {
        self.participants.iter().map(|(id, _)| *id).collect()
    }

    pub fn identities(&self) -> Vec<Vec<u8>> {
        self.participants.iter().map(|(_, identity)| identity.clone()).collect()
    }

    /// Parts with `t + 1` acknowledgements, in dealer order, as `crypto::dkg` takes them.
    pub fn complete_parts(&self) -> Vec<CompletePartBytes> {
        self.parts
            .values()
            .filter(|p| p.acks.len() > self.threshold)
            .map(|p| {
                let acks = p.acks.iter().filter_map(|(id, ack)| Some((self.index_of(*id)?, ack.clone()))).collect();
                (p.part.clone(), acks)
            })
            .collect()
    }

    pub(crate) fn add_part(&mut self, dealer: NodeId, part: &[u8]) -> Result<(), KmsError> {
        self.index_of(dealer).ok_or_else(|| KmsError::Invalid(format!("node {dealer} is not a participant")))?;
        if self.parts.contains_key(&dealer) {
            return Ok(()); // a retried proposal: the first part stands
        }
        dkg::check_part(self.threshold, self.participants.len(), part)
            .map_err(|e| KmsError::Invalid(format!("part from node {dealer}: {e}")))?;
        self.parts.insert(dealer, KeyGenPart { part: part.to_vec(), acks: BTreeMap::new() });
        Ok(())
    }

    /// Records an acknowledgement; returns the public key set when it completes the round.
    pub(crate) fn add_ack(&mut self, dealer: NodeId, acker: NodeId, ack: &[u8]) -> Result<Option<Vec<u8>>, KmsError> {
        self.index_of(acker).ok_or_else(|| KmsError::Invalid(format!("node {acker} is not a participant")))?;
        let n = self.participants.len();
        let part =
            self.parts.get_mut(&dealer).ok_or_else(|| KmsError::NotFound(format!("no part from node {dealer}")))?;
        if part.acks.contains_key(&acker) {
            return Ok(None);
        }
        dkg::check_ack(n, ack).map_err(|e| KmsError::Invalid(format!("ack from node {acker}: {e}")))?;
        part.acks.insert(acker, ack.to_vec());
        let complete = self.complete_parts();
        if complete.len() <= self.threshold {
            return Ok(None);
        }
        let parts: Vec<CompletePart<'_>> = complete.iter().map(|(part, acks)| CompletePart { part, acks }).collect();
        let public_key_set = dkg::public_key_set(self.threshold, n, &parts)
            .map_err(|e| KmsError::Invalid(format!("key generation cannot finish: {e}")))?;
        Ok(Some(public_key_set))
    }

    /// The round as the root key keeps it: only the complete parts, which define the key.
    pub(crate) fn transcript(mut self) -> Self {
        let threshold = self.threshold;
        self.parts.retain(|_, p| p.acks.len() > threshold);
        self
    }
}
