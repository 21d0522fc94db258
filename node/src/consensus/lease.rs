//! The leader's read lease: a linearizable read served without a quorum round trip.
//!
//! openraft 0.9's `get_read_log_id` confirms leadership with a fresh heartbeat round on every
//! read, so a read at a follower in another region pays two WAN round trips (the read index
//! at the leader, and the leader's confirmation). A lease removes the second.
//!
//! **Why it is safe.** A follower that accepts a heartbeat restarts its election timer and,
//! while it follows, neither grants a vote (openraft's own lease of `election_timeout_ms_max`)
//! nor campaigns ([`super::election`]: `election_timeout_ms_max + election_timeout_ms_min`) for
//! at least `election_timeout_ms_min` after receiving it. Receiving happens after the leader
//! *sent* it. So once a quorum has accepted heartbeats the leader sent at `t` or later, no
//! other leader can be elected before `t + election_timeout_ms_min` on the followers' clocks:
//! every quorum that could elect one contains a node that refuses. The leader answers reads
//! from its commit index until `t + read_lease_ms`, with `read_lease_ms` below
//! `election_timeout_ms_min` by a margin for clock-rate drift.
//!
//! **The commit index covers earlier leaders' entries** only once this leader has committed an
//! entry of its own term (its first entry, the blank one); until then the lease is not used.
//!
//! **Leadership transfer** is the one place a node campaigns while it heard from the leader
//! recently (`super::transfer`: the target campaigns on request, after `election_timeout_ms_max`
//! plus a heartbeat). So from the moment a transfer starts until every campaign it asked for
//! has ended, whether or not the transfer succeeded, the lease counts only heartbeats sent
//! before that moment. It thus keeps serving reads through the first part of a handover and
//! expires `read_lease_ms` after it began at the latest, before any campaign starts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::Vote;
use raft::NodeId;
use tokio::time::Instant;

use super::Consensus;

/// Per follower: the leader vote it accepted and when that heartbeat was sent.
type Acks = BTreeMap<NodeId, (Vote<NodeId>, Instant)>;

/// Per follower: the vote of the leader whose heartbeat it accepted last, and when that
/// heartbeat was sent (the newest one, if answers arrive out of order).
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseAcks {
    acks: Arc<Mutex<Acks>>,
    /// While a leadership transfer may still lead to a campaign: (when it started, until
    /// when). Only heartbeats sent before the start count meanwhile.
    frozen: Arc<Mutex<Option<(Instant, Instant)>>>,
}

impl LeaseAcks {
    pub(crate) fn record(&self, follower: NodeId, vote: Vote<NodeId>, sent: Instant) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        match acks.get(&follower) {
            Some((v, t)) if *v == vote && *t >= sent => {}
            _ => {
                acks.insert(follower, (vote, sent));
            }
        }
    }

    /// From `start` until `until`, only heartbeats sent before `start` count.
    pub(crate) fn freeze(&self, start: Instant, until: Instant) {
        let mut f = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        *f = match *f {
            // Still frozen by an earlier transfer: keep its start, extend its end.
            Some((s, u)) if start < u => Some((s.min(start), u.max(until))),
            _ => Some((start, until)),
        };
    }

    /// The acks that count at `now`.
    fn counting(&self, now: Instant) -> Acks {
        let mut acks = self.snapshot();
        if let Some((start, until)) = *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) {
            if now < until {
                acks.retain(|_, (_, sent)| *sent <= start);
            }
        }
        acks
    }

    fn snapshot(&self) -> Acks {
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Whether `me`, leader with `vote`, holds a lease at `now`: in every configuration of the
/// (possibly joint) membership, a majority is `me` or accepted a heartbeat of `vote` sent
/// less than `lease` ago.
pub(crate) fn quorum_fresh(
    configs: &[std::collections::BTreeSet<NodeId>],
    me: NodeId,
    vote: &Vote<NodeId>,
    acks: &Acks,
    now: Instant,
    lease: Duration,
) -> bool {
    !configs.is_empty()
        && configs.iter().all(|config| {
            let fresh = config
                .iter()
                .filter(|v| {
                    **v == me
                        || acks.get(v).is_some_and(|(acked, sent)| acked == vote && now.duration_since(*sent) < lease)
                })
                .count();
            2 * fresh > config.len()
        })
}

impl Consensus {
    /// On the leader: whether a majority accepted a heartbeat of its current term sent within
    /// `bound` (the freshness of a bounded-staleness read at the leader).
    pub fn quorum_heard_within(&self, bound: Duration) -> bool {
        let (vote, configs) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.vote, m.membership_config.membership().get_joint_config().clone())
        };
        let acks = self.peers.lease_acks.snapshot();
        quorum_fresh(&configs, self.id, &vote, &acks, Instant::now(), bound)
    }

    /// On the leader: the read index from the lease, or `None` when the lease does not hold
    /// (the caller then confirms leadership with a quorum round).
    pub(crate) async fn lease_read_index(&self) -> Option<u64> {
        let lease_ms = self.config.raft.read_lease_ms();
        let now = Instant::now();
        if lease_ms == 0 {
            return None;
        }
        let snapshot = self.peers.lease_acks.counting(now);
        let me = self.id;
        let lease = Duration::from_millis(lease_ms);
        self.raft
            .with_raft_state(move |st| {
                if !st.server_state.is_leader() {
                    return None;
                }
                let vote = *st.vote_ref();
                let committed = st.committed?;
                if committed.leader_id.term != vote.leader_id().term {
                    return None; // nothing of this term committed yet (one leader per term)
                }
                let configs = st.membership_state.effective().membership().get_joint_config().clone();
                quorum_fresh(&configs, me, &vote, &snapshot, now, lease).then_some(committed.index)
            })
            .await
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn vote(term: u64, node: NodeId) -> Vote<NodeId> {
        Vote::new_committed(term, node)
    }

    #[test]
    fn a_lease_needs_a_fresh_majority_of_this_vote_in_every_configuration() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(1000);
        let v = vote(3, 1);
        let cfg: Vec<BTreeSet<NodeId>> = vec![[1, 2, 3].into()];
        let mut acks = BTreeMap::new();
        assert!(!quorum_fresh(&cfg, 1, &v, &acks, t0, lease), "the leader alone is no majority of 3");
        acks.insert(2, (v, t0));
        assert!(quorum_fresh(&cfg, 1, &v, &acks, t0 + Duration::from_millis(999), lease));
        assert!(!quorum_fresh(&cfg, 1, &v, &acks, t0 + lease, lease), "expired at sent + lease");
        acks.insert(2, (vote(2, 2), t0));
        assert!(!quorum_fresh(&cfg, 1, &v, &acks, t0, lease), "an ack of another vote does not count");
        acks.insert(2, (v, t0));
        let joint: Vec<BTreeSet<NodeId>> = vec![[1, 2, 3].into(), [4, 5, 6].into()];
        assert!(!quorum_fresh(&joint, 1, &v, &acks, t0, lease), "the new configuration has no majority");
        acks.insert(4, (v, t0));
        acks.insert(5, (v, t0));
        assert!(quorum_fresh(&joint, 1, &v, &acks, t0, lease));
        assert!(!quorum_fresh(&[], 1, &v, &acks, t0, lease));
    }

    #[test]
    fn acks_keep_the_newest_send_time_and_a_transfer_freezes_them() {
        let acks = LeaseAcks::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let v = vote(1, 1);
        acks.record(2, v, t0 + ms(5));
        acks.record(2, v, t0); // an older heartbeat answered late
        assert_eq!(acks.snapshot()[&2], (v, t0 + ms(5)));
        acks.record(2, vote(2, 3), t0); // a new term's heartbeat replaces it
        assert_eq!(acks.snapshot()[&2], (vote(2, 3), t0));

        acks.record(3, v, t0 + ms(20));
        acks.freeze(t0 + ms(10), t0 + ms(100));
        acks.freeze(t0 + ms(30), t0 + ms(50)); // never shortened, never moved later
        let during = acks.counting(t0 + ms(99));
        assert!(during.contains_key(&2) && !during.contains_key(&3), "sent after the start: {during:?}");
        assert!(acks.counting(t0 + ms(100)).contains_key(&3), "the freeze is over");
    }
}
