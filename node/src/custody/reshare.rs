//! Resharing: moving the root key's custody to the current voters, and rotating it on demand.
//!
//! The leader watches for voters that differ from the root key's holders (a node added or
//! removed). It then starts a key generation round among the voters, each named by a fresh
//! identity key for the round (`identity.rs`); the round (`keygen.rs` on every participant)
//! makes a new root key beside the current one (`next_root`), and new material is wrapped
//! under it from then on. The leader unwraps every entry still under the old root with the old
//! holders' shares, wraps it again under the new root and proposes `ReplaceRoot`: one
//! replicated step that moves all of it, with a fresh log key version, or nothing. The old root
//! stays retired (`raft::RetiredRoot`) until every holder of the new one has a durable
//! snapshot past the replacement (`Custody::report_durable_snapshot`); then every node erases
//! its identity key for the old round, and with it its old share.
//!
//! `keyquorum cluster rotate-root` runs the same round among unchanged voters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proto::internal::IdentityRequest;
use raft::{Command, KeyRef, KeySpec, NodeId, RootKey, WrappedMaterial};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::Custody;
use crate::error::{NodeError, Result};

/// Entries unwrapped at once while re-wrapping.
const REWRAP_CONCURRENCY: usize = 8;

/// Runs until raft stops.
pub(super) async fn run(node: Arc<Custody>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !node.consensus.is_leader() || node.consensus.state().sealed().is_some() {
            continue;
        }
        if let Err(e) = duty(&node).await {
            tracing::warn!(error = %e, "resharing the root key: will retry");
        }
    }
}

/// One step of the leader's duty: finish a waiting new root, or start a round when the voters
/// are not the holders.
async fn duty(node: &Arc<Custody>) -> Result<()> {
    let (root, next, running, has_log_key) = {
        let s = node.consensus.state().read();
        (
            s.store.root().cloned(),
            s.store.next_root().map(|r| r.epoch),
            s.store.keygen().map(|r| r.participant_ids()),
            !s.store.log_keys().is_empty(),
        )
    };
    let Some(root) = root else { return Ok(()) };
    if !has_log_key {
        return Ok(()); // the cluster is still being initialised
    }
    if let Some(epoch) = next {
        return replace_root(node, &root, epoch).await;
    }
    let Some(voters) = node.consensus.settled_voters() else { return Ok(()) };
    let holders: Vec<NodeId> = root.holders.keys().copied().collect();
    if voters == holders || running.as_ref() == Some(&voters) {
        return Ok(());
    }
    tracing::info!(?holders, ?voters, "the voters are not the root key's holders: resharing");
    node.start_round(&voters).await
}

impl Custody {
    /// Starts a key generation round among `participants`: a new root key if none exists, else
    /// the next root key. Returns once the start is committed.
    pub async fn start_round(&self, participants: &[NodeId]) -> Result<()> {
        let node = self;
        let (floor, running) = {
            let s = node.consensus.state().read();
            (s.store.root().map_or(0, |r| r.transcript.epoch), s.store.keygen().map_or(0, |r| r.epoch))
        };
        let round = floor.max(running) + 1;
        let addrs: BTreeMap<NodeId, String> =
            node.consensus.members().into_iter().map(|(id, n)| (id, n.addr)).collect();
        let mut named = Vec::with_capacity(participants.len());
        for id in participants {
            let addr = addrs.get(id).ok_or_else(|| NodeError::Invalid(format!("node {id} is not a member")))?;
            named.push((*id, node.identity_of(*id, addr, round).await?));
        }
        let now_ms = node.env.now_ms();
        node.consensus.propose(Command::StartKeyGen { epoch: round, participants: named, now_ms }).await?;
        tracing::info!(round, ?participants, "root key generation round started");
        Ok(())
    }

    /// Node `id`'s identity public key for key generation round `round`, retrying for a while
    /// (peers may still be starting).
    pub async fn identity_of(&self, id: NodeId, addr: &str, round: u64) -> Result<Vec<u8>> {
        let node = self;
        if id == node.id {
            return node.identity_public(round);
        }
        let mut last = String::new();
        for _ in 0..60 {
            let reply = match node.consensus.peers().client(addr) {
                Ok(mut c) => c.identity(IdentityRequest { round }).await.map_err(|s| s.message().to_string()),
                Err(e) => Err(e.to_string()),
            };
            match reply {
                Ok(r) if r.get_ref().node_id == id => return Ok(r.into_inner().identity_public),
                Ok(r) => {
                    return Err(NodeError::Invalid(format!(
                        "the node at {addr} says it is node {}, not node {id}",
                        r.get_ref().node_id
                    )))
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(NodeError::Unavailable(format!("node {id} at {addr} is unreachable: {last}")))
    }
}

/// Re-wraps every entry under `root` with the new root of `epoch` and proposes `ReplaceRoot`.
async fn replace_root(node: &Arc<Custody>, root: &RootKey, epoch: u64) -> Result<()> {
    let (next, entries) = {
        let s = node.consensus.state().read();
        let next = s.store.next_root().filter(|n| n.epoch == epoch).cloned();
        let entries: Vec<(Option<Uuid>, u32, WrappedMaterial)> =
            s.store.wrapped_under(root.epoch).into_iter().map(|(k, v, w)| (k, v, w.clone())).collect();
        (next, entries)
    };
    let Some(next) = next else { return Ok(()) };
    tracing::info!(from = root.epoch, to = epoch, entries = entries.len(), "re-wrapping under the new root key");
    let mut log_keys = BTreeMap::new();
    let mut materials: BTreeMap<Uuid, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    let mut pending = entries.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < REWRAP_CONCURRENCY {
            let Some((key, version, wrapped)) = pending.next() else { break };
            let node = node.clone();
            let pks = next.public_key_set.clone();
            running.spawn(async move {
                // A key this node's region may not hold is re-wrapped by a node in its regions.
                let allowed = key.and_then(|id| {
                    let s = node.consensus.state().read();
                    s.store.resolve(&KeyRef::Id(id)).ok().map(|k| k.allowed_regions.clone())
                });
                if let (Some(id), Some(allowed)) = (key, allowed) {
                    if !node.in_regions(&allowed) {
                        let ciphertext = node.rewrap_delegated(id, version, &allowed, epoch).await?;
                        return Ok::<_, NodeError>((key, version, ciphertext));
                    }
                }
                let material = match key {
                    None => node.unwrap_log_key(version).await?,
                    Some(id) => node.material_for_rewrap(id, version, &wrapped).await?,
                };
                let again = node.env.with_rng(|rng| crypto::threshold::wrap(&pks, &material, rng))?;
                if again.kcv != wrapped.kcv {
                    return Err(NodeError::Internal("re-wrapped material changed its key-check value".into()));
                }
                Ok::<_, NodeError>((key, version, again.ciphertext))
            });
        }
        let Some(done) = running.join_next().await else { break };
        let (key, version, ciphertext) = done.map_err(|e| NodeError::Internal(e.to_string()))??;
        match key {
            None => {
                log_keys.insert(version, ciphertext);
            }
            Some(id) => {
                materials.entry(id).or_default().insert(version, ciphertext);
            }
        }
    }
    let (log_key, wrapped_log_key) = node.new_material(KeySpec::Aes256GcmSiv)?;
    if wrapped_log_key.root_epoch != epoch {
        return Ok(()); // the state moved on meanwhile
    }
    let command = Command::ReplaceRoot {
        epoch,
        log_keys,
        materials,
        log_key: wrapped_log_key.clone(),
        now_ms: node.env.now_ms(),
    };
    let size = postcard::to_stdvec(&command).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > node.config.limits.max_message_bytes / 2 {
        return Err(NodeError::Internal(format!(
            "re-wrapping everything under the new root takes {size} bytes, more than half of limits.max_message_bytes \
             ({}): raise it to rotate the root key",
            node.config.limits.max_message_bytes
        )));
    }
    node.consensus.propose(command).await?;
    // We made the new log key version: hold it at once, so what we propose next is sealed
    // under it (the others unwrap it with shares, `log_keys.rs`).
    let version =
        node.consensus.state().read().store.log_keys().iter().find(|(_, w)| **w == wrapped_log_key).map(|(v, _)| *v);
    if let Some(version) = version {
        node.consensus.state().cipher().install(version, log_key).map_err(NodeError::Internal)?;
    }
    tracing::info!(epoch, log_key_version = ?version, "audit: root key replaced; the old one stays retired until every holder has a durable snapshot past this");
    Ok(())
}
