//! What time makes due: automatic key rotations, and destruction of keys whose deletion window
//! has passed. Deduplicated by the commands themselves (`if_primary_is`, `DestroyDue`), so a
//! stale leader proposing too is harmless.

use std::sync::Arc;
use std::time::Duration;

use raft::{Applied, Command, KeyRef};

use crate::node::Node;

/// Runs until the task is aborted. On the leader, destroys what is due; on every node,
/// rotates the due keys that are this node's to rotate ([`rotate_due`]).
pub async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.state().sealed().is_some() {
            continue;
        }
        let now_ms = node.now_ms();
        rotate_due(&node, now_ms).await;
        if node.consensus.is_leader() && node.state().read().store.destruction_due(now_ms) {
            match node.consensus.propose(Command::DestroyDue { now_ms }).await {
                Ok(Applied::Destroyed(ids)) => {
                    for id in ids {
                        tracing::info!(target: "audit", %id, "key destroyed: its deletion window has passed");
                        node.custody.evict(id);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "destroying due keys failed; will retry"),
            }
        }
    }
}

/// Proposes the automatic rotations due that are this node's to make: on the leader, those of
/// keys its region may hold; elsewhere, those of keys the leader's region may not hold but
/// this node's may (they make its new material).
async fn rotate_due(node: &Node, now_ms: u64) {
    let leader = node.consensus.is_leader();
    let leader_region = node.consensus.leader().and_then(|(id, _)| node.consensus.region_of(id));
    let due: Vec<_> = {
        let s = node.state().read();
        s.store
            .rotations_due(now_ms)
            .into_iter()
            .filter(|(id, _, _)| {
                let Ok(key) = s.store.resolve(&KeyRef::Id(*id)) else { return false };
                let leader_may_not = leader_region.as_deref().is_some_and(|r| !key.allows_region(r));
                node.custody.in_regions(&key.allowed_regions) && (leader || leader_may_not)
            })
            .collect()
    };
    for (id, primary, spec) in due {
        let Ok((_, material)) = node.custody.new_material(spec) else { continue };
        let command = Command::RotateKey {
            key: KeyRef::Id(id),
            token: None,
            material,
            if_primary_is: Some(primary),
            by: None,
            now_ms,
        };
        if let Err(e) = node.consensus.propose(command).await {
            tracing::warn!(%id, error = %e, "automatic rotation failed; will retry");
        }
    }
}
