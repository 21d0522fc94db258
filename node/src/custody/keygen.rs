//! This node's part in generating the root key (`crypto::dkg` through the log, `raft::keygen`).
//!
//! While a round that names this node runs, the node deals its part once and acknowledges
//! every part whose row checks out; a part whose row does not is refused and its dealer named
//! in the log (the round completes without it). Everything goes through `propose`, so it works
//! from any node, and everything is idempotent in the state machine, so retries are harmless.
//! A node that was down during the round does nothing here: it derives its share from the
//! transcript later (`Custody::share_holder`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use raft::keygen::KeyGenRound;
use raft::{Command, NodeId};

use super::Custody;
use crate::error::{NodeError, Result};

/// Runs until raft stops.
pub(super) async fn run(node: Arc<Custody>) {
    let mut applied = node.consensus.state().applied_index();
    // (epoch, dealer) pairs already handled: acknowledged, or refused as faulty.
    let mut handled: BTreeSet<(u64, NodeId)> = BTreeSet::new();
    loop {
        let round = node.consensus.state().read().store.keygen().cloned();
        if let Some(round) = round.filter(|r| r.index_of(node.id).is_some()) {
            if let Err(e) = take_part(&node, &round, &mut handled).await {
                tracing::debug!(epoch = round.epoch, error = %e, "key generation: will retry");
            }
        }
        // Wake on every applied entry, and now and then to retry a failed proposal.
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn take_part(node: &Custody, round: &KeyGenRound, handled: &mut BTreeSet<(u64, NodeId)>) -> Result<()> {
    let (epoch, t) = (round.epoch, round.threshold);
    let identities = round.identities();
    let Some(me) = round.index_of(node.id) else { return Ok(()) };
    if !round.parts.contains_key(&node.id) {
        let part = node.env.with_rng(|rng| crypto::dkg::deal_part(t, &identities, rng))?;
        node.consensus.propose(Command::KeyGenPart { epoch, dealer: node.id, part, now_ms: node.env.now_ms() }).await?;
        tracing::info!(epoch, "key generation: part committed");
    }
    let pending: Vec<(NodeId, &raft::keygen::KeyGenPart)> = round
        .parts
        .iter()
        .filter(|(d, p)| !p.acks.contains_key(&node.id) && !handled.contains(&(epoch, **d)))
        .map(|(d, p)| (*d, p))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let Some(identity) = node.identities.get(epoch) else {
        return Err(NodeError::Internal(format!(
            "this node holds no identity key for round {epoch}, so it cannot read its rows: the round will finish without it"
        )));
    };
    for (dealer, part) in pending {
        let ack =
            node.env.with_rng(|rng| crypto::dkg::acknowledge_part(t, me, &identity, &identities, &part.part, rng));
        match ack {
            Ok(ack) => {
                let command = Command::KeyGenAck { epoch, dealer, acker: node.id, ack, now_ms: node.env.now_ms() };
                node.consensus.propose(command).await?;
                handled.insert((epoch, dealer));
            }
            Err(e) => {
                tracing::warn!(epoch, dealer, error = %e, "key generation: refusing node {dealer}'s part");
                handled.insert((epoch, dealer));
            }
        }
    }
    Ok(())
}
