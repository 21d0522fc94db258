//! The election timer: when a voter that has not heard from a leader starts an election.
//!
//! openraft 0.9 has its own, but it draws one election timeout per process and checks it only
//! on its tick (every 1.5 heartbeats). Two voters whose timeouts round to the same number of
//! ticks, with ticks in phase (every node boots at the same moment after a power loss), then
//! campaign in the same millisecond in every term: each collects the same minority of votes,
//! term after term, and no leader is ever elected. The simulator found this (seeds 2403 and
//! 2631: no leader for 90 s after a whole-cluster power loss).
//!
//! Raft's answer is a fresh random timeout for every round, which is what this timer does; it
//! draws from the node's injected RNG, so the simulator replays it. openraft's own timer is off
//! (`enable_elect = false` in [`crate::config::NodeConfig::openraft_config`]); this one starts
//! elections through `Raft::trigger().elect()`, which openraft ignores on a leader and on a
//! non-voter.
//!
//! Like openraft's, the timer restarts whenever the node hears from a leader it accepts, grants
//! a vote, or campaigns; while it follows a known leader it also waits out that leader's lease
//! (`election_timeout_ms_max`), during which the other voters would refuse a vote anyway; and
//! after a voter refused its campaign for holding a longer log it waits `2 ×
//! election_timeout_ms_max` more, so the up-to-date nodes campaign first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::Consensus;

#[derive(Debug)]
pub(super) struct ElectionTimer {
    /// When the current round started: the last contact with a leader, vote granted, or
    /// campaign of our own.
    round_start: Mutex<Instant>,
    /// False while a leadership transfer asks this node not to campaign.
    enabled: AtomicBool,
}

impl Default for ElectionTimer {
    fn default() -> Self {
        Self { round_start: Mutex::new(Instant::now()), enabled: AtomicBool::new(true) }
    }
}

impl ElectionTimer {
    /// Starts a new round: a leader was heard from, a vote was granted, or we campaigned.
    pub(super) fn restart(&self) {
        *self.round_start.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn round_start(&self) -> Instant {
        *self.round_start.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }
}

/// Runs the timer until raft stops. Spawned beside the node's services.
pub(super) async fn run(node: Arc<Consensus>) {
    let raft = &node.config.raft;
    let (min, max) = (raft.election_timeout_ms_min, raft.election_timeout_ms_max);
    loop {
        let start = node.election.round_start();
        let (following, voter, sole_voter) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            let voters: Vec<_> = m.membership_config.membership().voter_ids().collect();
            (m.vote.is_committed(), voters.contains(&node.id), voters == [node.id])
        };
        // A sole voter needs nobody's vote: it only waits a heartbeat, so it never spins.
        let wait_ms = if sole_voter {
            raft.heartbeat_ms
        } else {
            let lease = if following { max } else { 0 };
            lease + node.env.with_rng(|r| r.gen_range(min..max))
        };
        tokio::time::sleep_until(start + Duration::from_millis(wait_ms)).await;
        if node.election.round_start() != start {
            continue; // a new round began while we slept: draw a new timeout
        }
        // A voter refused our last campaign for holding a longer log: give the up-to-date
        // nodes time to win first (openraft's own timer does the same), or a stale majority of
        // one configuration can keep out-campaigning them term after term (seed 1427).
        if node.peers.take_longer_log_seen() {
            tokio::time::sleep(Duration::from_millis(2 * max)).await;
            if node.election.round_start() != start {
                continue;
            }
        }
        if !voter || !node.election.enabled() || node.is_leader() {
            node.election.restart();
            continue;
        }
        tracing::info!(node = node.id, waited_ms = wait_ms, "no leader heard from: starting an election");
        node.election.restart();
        if node.raft.trigger().elect().await.is_err() {
            return; // raft has stopped
        }
    }
}
