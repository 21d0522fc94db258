//! Leadership transfer on openraft 0.9, which has no transfer API and whose followers refuse
//! votes while their leader lease (`election_timeout_ms_max` after the last heartbeat) holds.
//!
//! The leader (1) waits until the target has replicated its whole log, (2) asks every other
//! voter to hold its elections for a bounded time, (3) stops its own heartbeats so the leases
//! run out, and (4) tells the target to keep electing itself. The target is then the only
//! candidate and its log is up to date, so it wins. Every hold ends on a timer, so a target
//! that dies mid-transfer cannot wedge the cluster: the old leader resumes heartbeats and the
//! others resume elections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::internal::{HoldElectionsRequest, TimeoutNowRequest};
use raft::NodeId;
use tokio::time::Instant;

use super::Consensus;
use crate::error::{NodeError, Result};

/// Generation of the latest election hold: a hold's timer releases it only if no newer hold
/// or release has happened since.
#[derive(Debug, Default)]
pub(super) struct ElectionHold(AtomicU64);

/// Marks this leader as handing leadership over (`Consensus::transferring_to`) until dropped.
struct Transferring<'a>(&'a AtomicU64);

impl<'a> Transferring<'a> {
    fn start(node: &'a Consensus, target: NodeId) -> Self {
        node.transferring_to.store(target, Ordering::SeqCst);
        Self(&node.transferring_to)
    }
}

impl Drop for Transferring<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

impl Consensus {
    fn lease_ms(&self) -> u64 {
        self.config.raft.election_timeout_ms_max
    }

    /// Stops (hold_ms > 0) or resumes (0) starting elections on this node.
    pub(super) fn hold_elections(self: &Arc<Self>, hold_ms: u64, heartbeats_too: bool) {
        let generation = self.election_hold.0.fetch_add(1, Ordering::SeqCst) + 1;
        let enabled = hold_ms == 0;
        self.election.set_enabled(enabled);
        if heartbeats_too || enabled {
            self.raft.runtime_config().heartbeat(enabled);
        }
        if hold_ms > 0 {
            let node = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                if node.election_hold.0.load(Ordering::SeqCst) == generation {
                    node.election.set_enabled(true);
                    node.raft.runtime_config().heartbeat(true);
                }
            });
        }
    }

    /// On the target: elect ourselves once the leases expire, retrying until leader or `hold_ms`.
    pub(super) fn campaign(self: &Arc<Self>, lease_ms: u64, hold_ms: u64) {
        let node = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(hold_ms);
            tokio::time::sleep(Duration::from_millis(lease_ms + node.config.raft.heartbeat_ms)).await;
            while Instant::now() < deadline && !node.is_leader() {
                if node.raft.trigger().elect().await.is_err() {
                    return;
                }
                // Our own election timer must not start a second campaign meanwhile: a new
                // term would void the votes this one is collecting.
                node.election.restart();
                tokio::time::sleep(Duration::from_millis(node.config.raft.election_timeout_ms_min)).await;
            }
        });
    }

    /// Asks every voter but `target` and this node to hold (or, with 0, resume) elections.
    /// Best effort with a deadline each: an unreachable voter cannot campaign anyway.
    async fn hold_other_voters(&self, voters: &[NodeId], target: NodeId, hold_ms: u64) {
        let addrs: std::collections::BTreeMap<NodeId, String> =
            self.members().into_iter().map(|(id, n)| (id, n.addr)).collect();
        let timeout = Duration::from_millis(self.config.raft.rpc_timeout_ms);
        for v in voters.iter().filter(|v| **v != target && **v != self.id) {
            let Some(Ok(mut client)) = addrs.get(v).map(|a| self.peers.client(a)) else { continue };
            let call = client.hold_elections(HoldElectionsRequest { hold_ms });
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(voter = v, hold_ms, "hold elections: {}", e.message()),
                Err(_) => tracing::warn!(voter = v, hold_ms, "hold elections: timed out"),
            }
        }
    }

    /// On a leader outside the preferred leader region (if one is configured): the voter
    /// there to hand leadership to, if one is healthy and holds every entry.
    pub fn preferred_successor(&self) -> Option<NodeId> {
        let preferred = &self.config.raft.preferred_leader_region;
        if preferred.is_empty() || *preferred == self.config.region {
            return None;
        }
        self.ready_successor(|node| node.region == *preferred)
    }

    /// On the leader: a voter that `wanted` accepts, is healthy (answered within the election
    /// timeout) and holds every entry, the lowest id first.
    fn ready_successor(&self, wanted: impl Fn(&raft::NodeInfo) -> bool) -> Option<NodeId> {
        if !self.is_leader() {
            return None;
        }
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        membership.voter_ids().find(|v| {
            let wanted = *v != self.id && membership.get_node(v).is_some_and(&wanted);
            let healthy = self.peer_silence(*v).is_some_and(|ago| ago <= self.health_window());
            let caught_up =
                m.replication.as_ref().and_then(|r| r.get(v).copied().flatten()).is_some_and(|l| l.index >= last);
            wanted && healthy && caught_up
        })
    }

    /// On the leader: hands leadership to `target`.
    pub async fn transfer_leadership(self: &Arc<Self>, target: NodeId) -> Result<()> {
        if target == self.id {
            return Ok(());
        }
        let metrics = self.raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        if !voters.contains(&target) {
            return Err(NodeError::Kms(raft::KmsError::NotFound(format!("node {target} is not a voter"))));
        }
        let addr = |id: NodeId| self.members().into_iter().find(|(m, _)| *m == id).map(|(_, n)| n.addr);
        // (1) The target must hold every entry, or it cannot win the vote.
        let last = metrics.last_log_index.unwrap_or(0);
        let mut watch = self.raft.metrics();
        let caught_up = watch.wait_for(|m| {
            m.replication.as_ref().and_then(|r| r.get(&target).copied().flatten()).is_some_and(|l| l.index >= last)
        });
        tokio::time::timeout(Duration::from_secs(10), caught_up)
            .await
            .map_err(|_| NodeError::Unavailable(format!("node {target} did not catch up within 10 s")))?
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let lease_ms = self.lease_ms();
        let hold_ms = 4 * lease_ms + 2000;
        // (2) Other voters hold their elections.
        self.hold_other_voters(&voters, target, hold_ms).await;
        // (3) Let the leases lapse: no heartbeats, and no writes or confirmed reads (each
        // would renew them); (4) the target campaigns.
        let target_addr = addr(target).ok_or_else(|| NodeError::Internal(format!("no address for {target}")))?;
        let mut target_client = self.peers.client(&target_addr)?;
        // Cleared however this ends, a dropped request included.
        let _transferring = Transferring::start(self, target);
        // The target may campaign until `hold_ms` after it hears of this (plus an election
        // still in flight then), whatever happens here: until then the read lease counts only
        // heartbeats sent before now (`crate::lease`).
        let campaign_over = Duration::from_millis(self.config.raft.rpc_timeout_ms + hold_ms + lease_ms);
        let now = Instant::now();
        self.peers.lease_acks.freeze(now, now + campaign_over);
        self.hold_elections(hold_ms, true);
        let told = target_client
            .timeout_now({
                let mut r = tonic::Request::new(TimeoutNowRequest { from_leader: self.id, lease_ms, hold_ms });
                r.set_timeout(Duration::from_millis(self.config.raft.rpc_timeout_ms));
                r
            })
            .await;
        let done = async {
            told.map_err(|s| NodeError::Unavailable(format!("node {target} refused to campaign: {}", s.message())))?;
            let mut watch = self.raft.metrics();
            watch
                .wait_for(|m| m.current_leader == Some(target))
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            Ok(())
        };
        let result = match tokio::time::timeout(Duration::from_millis(hold_ms), done).await {
            Ok(r) => r,
            Err(_) => Err(NodeError::Unavailable(format!("node {target} did not become leader in {hold_ms} ms"))),
        };
        // Release every hold now rather than on the timers.
        drop(_transferring);
        self.hold_elections(0, true);
        self.hold_other_voters(&voters, target, 0).await;
        result
    }
}

/// Moves leadership where it serves best, checked every second on the leader:
/// - A **sealed** leader (it restarted and waits for a log key version) hands over to any
///   healthy, caught-up voter. It cannot apply, serve reads or send a snapshot (its state
///   machine waits for the key), so a follower that needs a snapshot would wait for ever, and
///   that follower may be the very holder whose share would unseal it (seed 8830: the leader
///   restarted sealed, re-took leadership from its committed vote, and a lagging holder never
///   caught up).
/// - Else, a leader outside the preferred leader region (when one is configured) hands over
///   to a healthy, caught-up voter there.
///
/// A new leader settles for two election timeouts first, and a failed move waits before the
/// next.
pub(super) async fn run_placement(consensus: Arc<Consensus>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let settle = Duration::from_millis(2 * consensus.config.raft.election_timeout_ms_max);
    // When this node may next try to move leadership (set when it became leader).
    let mut next_move: Option<Instant> = None;
    loop {
        tick.tick().await;
        if !consensus.is_leader() {
            next_move = None;
            continue;
        }
        let now = Instant::now();
        if now < *next_move.get_or_insert(now + settle) {
            continue;
        }
        let sealed = consensus.state.sealed();
        let target = match sealed {
            Some(_) => consensus.ready_successor(|_| true),
            None => consensus.preferred_successor(),
        };
        let Some(target) = target else { continue };
        match sealed {
            Some(version) => tracing::info!(target, version, "leading while sealed: handing leadership over"),
            None => tracing::info!(
                target,
                region = %consensus.config.raft.preferred_leader_region,
                "moving leadership to the preferred region"
            ),
        }
        if let Err(e) = consensus.transfer_leadership(target).await {
            tracing::warn!(target, error = %e, "moving leadership failed; will retry");
        }
        next_move = Some(Instant::now() + 5 * settle);
    }
}
