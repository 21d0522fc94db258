//! Reads: how fresh this node's state must be before a call reads it, and the read index that
//! makes it so.
//!
//! A linearizable read waits until this node has applied the leader's commit index as of a
//! moment after the call arrived. Every request waiting at one moment shares one read-index
//! round (at the leader, one lease check or quorum confirmation; at a follower, one round trip
//! to the leader): the hot path never costs a quorum round trip per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::internal::ReadIndexRequest;
use tokio::sync::oneshot;

use super::{lock, Consensus};
use crate::error::{NodeError, Result};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    /// Local state, if this node heard from a leader within the bound; otherwise an error
    /// or, with `read_index_when_stale`, a read index through the leader.
    BoundedStaleness {
        max_staleness_ms: u64,
        read_index_when_stale: bool,
    },
}

/// The requests waiting for the next read-index round, and whether one is running.
#[derive(Debug, Default)]
pub(super) struct ReadBatch(Mutex<Batch>);

#[derive(Debug, Default)]
struct Batch {
    running: bool,
    waiters: Vec<oneshot::Sender<std::result::Result<u64, String>>>,
}

impl Consensus {
    /// Waits until this node's state is fresh enough for `consistency`. Does not check that
    /// the node is unsealed (the caller does, before reading).
    pub async fn linearize(self: &Arc<Self>, consistency: Consistency) -> Result<()> {
        match consistency {
            Consistency::Linearizable => {
                // Failpoint (simulator self-test): serve from local state, skipping the read index.
                if crate::failpoint("node::read-without-read-index") {
                    return Ok(());
                }
                let index = self.read_index().await?;
                self.wait_applied(index).await
            }
            Consistency::BoundedStaleness { max_staleness_ms, read_index_when_stale } => {
                let bound = Duration::from_millis(max_staleness_ms);
                let fresh = if self.is_leader() {
                    self.quorum_heard_within(bound)
                } else {
                    self.last_leader_contact().is_some_and(|t| t.elapsed() <= bound)
                };
                if fresh {
                    Ok(())
                } else if read_index_when_stale {
                    let index = self.read_index().await?;
                    self.wait_applied(index).await
                } else {
                    Err(NodeError::Unavailable(format!(
                        "node {} has not heard from a leader within {max_staleness_ms} ms; retry with LINEARIZABLE, \
                         ON_STALE_READ_INDEX or another node",
                        self.id
                    )))
                }
            }
        }
    }

    /// Whether the state at index `from` already held every write acknowledged before now:
    /// a read index at most `from`, so what was answered from that state is linearizable.
    pub async fn covers(self: &Arc<Self>, from: u64) -> Result<bool> {
        // Failpoint (simulator self-test): serve from local state, skipping the read index.
        if crate::failpoint("node::read-without-read-index") {
            return Ok(true);
        }
        Ok(self.read_index().await? <= from)
    }

    /// A read index shared by every request waiting at the moment a round starts: requests
    /// that arrive while a round is in flight join the next one, never the current one (which
    /// may have been confirmed before they arrived).
    pub async fn read_index(self: &Arc<Self>) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut batch = lock(&self.reads.0);
            batch.waiters.push(tx);
            !std::mem::replace(&mut batch.running, true)
        };
        if start {
            let consensus = self.clone();
            tokio::spawn(async move {
                loop {
                    let waiters = {
                        let mut batch = lock(&consensus.reads.0);
                        if batch.waiters.is_empty() {
                            batch.running = false;
                            return;
                        }
                        std::mem::take(&mut batch.waiters)
                    };
                    let result = consensus.read_index_round().await.map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            });
        }
        match rx.await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(why)) => Err(NodeError::Unavailable(why)),
            Err(_) => Err(NodeError::Internal("read-index round dropped".into())),
        }
    }

    async fn read_index_round(&self) -> Result<u64> {
        let round = async {
            if self.is_leader() {
                return self.leader_read_index().await;
            }
            let (leader, addr) = self.leader().ok_or_else(|| {
                NodeError::Unavailable("no leader is known: the cluster may have lost its quorum; retry".into())
            })?;
            let mut client = self.peers.client(&addr)?;
            let reply = client.read_index(ReadIndexRequest {}).await.map_err(|s| {
                NodeError::Unavailable(format!("read index from leader {leader} at {addr} failed: {}", s.message()))
            })?;
            Ok(reply.into_inner().index)
        };
        tokio::time::timeout(self.request_timeout(), round).await.map_err(|_| self.no_quorum())?
    }

    /// On the leader: the index reads must see, from the read lease (`lease.rs`) or after
    /// confirming leadership with a quorum.
    pub async fn leader_read_index(&self) -> Result<u64> {
        // The lease renews nobody's, so it may serve during a transfer too.
        if let Some(index) = self.lease_read_index().await {
            return Ok(index);
        }
        self.check_not_transferring()?;
        let (read_log_id, _) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(|e| NodeError::Unavailable(format!("leadership not confirmed: {e}")))?;
        Ok(read_log_id.map_or(0, |l| l.index))
    }
}
