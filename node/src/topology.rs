//! Topology: every member with its region, role, client address and health, for clients that
//! choose a node by region; and the placement check (can the voters lose any one region?).

use std::collections::BTreeMap;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::kms_client::KmsClient;
use raft::NodeId;
use tonic::metadata::MetadataValue;
use tonic::Request;

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::region::FORWARDED_BY;

/// What is wrong with placing the voters in these regions: losing any one region must leave
/// a quorum (and so t+1 root-key holders, who are the voters). `voters` maps each voter to its
/// region.
pub fn placement_warnings(voters: &BTreeMap<NodeId, String>) -> Vec<String> {
    let n = voters.len();
    if n == 0 {
        return Vec::new();
    }
    let quorum = n / 2 + 1;
    let mut per_region: BTreeMap<&str, usize> = BTreeMap::new();
    for r in voters.values() {
        *per_region.entry(r.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    if per_region.len() == 1 {
        let only = per_region.keys().next().copied().unwrap_or_default();
        out.push(format!(
            "all {n} voters are in region {only}: losing it loses the cluster; place voters in at least 3 regions"
        ));
        return out;
    }
    for (region, k) in &per_region {
        let left = n - k;
        if left < quorum {
            out.push(format!(
                "losing region {region} ({k} of {n} voters) would leave {left}, fewer than the quorum of {quorum}: \
                 the cluster would stop serving writes and unwraps; spread the voters so no region holds {} or more",
                n - quorum + 1
            ));
        }
    }
    out
}

impl Node {
    /// This node's view of the topology. Health is known on the leader (from when each peer
    /// last answered its raft RPCs); elsewhere only this node's own, and the leader's when it
    /// was heard from recently.
    pub(crate) fn local_topology(&self) -> pb::TopologyResponse {
        let consensus = &self.consensus;
        let view = consensus.view();
        let leader = view.leader;
        let is_leader = view.is_leader();
        let window = consensus.health_window();
        let heard_from_leader = consensus.last_leader_contact().is_some_and(|t| t.elapsed() <= window);
        let voters = view.voter_regions();
        let mut members = Vec::new();
        for (id, info) in &view.members {
            let voter = voters.contains_key(id);
            let role = if Some(*id) == leader {
                "leader"
            } else if voter {
                "voter"
            } else {
                "learner"
            };
            let (health, last_contact_ms) = if *id == self.id() {
                (
                    if self.state().sealed().is_some() { pb::Health::Unreachable } else { pb::Health::Healthy },
                    is_leader.then_some(0),
                )
            } else if is_leader {
                match consensus.peer_silence(*id) {
                    Some(ago) => {
                        let h = if ago <= window { pb::Health::Healthy } else { pb::Health::Unreachable };
                        (h, Some(ago.as_millis() as u64))
                    }
                    None => (pb::Health::Unreachable, None),
                }
            } else if Some(*id) == leader && heard_from_leader {
                (pb::Health::Healthy, Some(0))
            } else {
                (pb::Health::Unknown, None)
            };
            members.push(pb::TopologyMember {
                id: *id,
                region: info.region.clone(),
                zone: info.zone.clone(),
                addr: info.addr.clone(),
                role: role.into(),
                health: health as i32,
                last_contact_ms,
            });
        }
        pb::TopologyResponse {
            members,
            leader_id: leader.unwrap_or(0),
            answered_by: self.id(),
            from_leader: is_leader,
            placement_warnings: placement_warnings(&voters),
        }
    }

    /// The topology with the leader's view of health: asked of the leader when this node is
    /// not it; this node's own view when the leader cannot be reached.
    pub(crate) async fn topology(&self, forwarded: bool) -> Result<pb::TopologyResponse> {
        self.ensure_unsealed()?;
        if self.consensus.is_leader() || forwarded {
            return Ok(self.local_topology());
        }
        let Some((_, addr)) = self.consensus.leader() else { return Ok(self.local_topology()) };
        let ask = async {
            let mut client = KmsClient::new(self.consensus.peers().channel(&addr)?);
            let mut request = Request::new(pb::GetTopologyRequest {});
            let me = MetadataValue::try_from(self.id().to_string()).map_err(|e| NodeError::Internal(e.to_string()))?;
            request.metadata_mut().insert(FORWARDED_BY, me);
            client
                .get_topology(request)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| NodeError::Unavailable(s.message().into()))
        };
        let timeout = Duration::from_millis(self.config().raft.rpc_timeout_ms);
        match tokio::time::timeout(timeout, ask).await {
            Ok(Ok(mut t)) => {
                t.answered_by = self.id();
                Ok(t)
            }
            _ => Ok(self.local_topology()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(regions: &[&str]) -> BTreeMap<NodeId, String> {
        regions.iter().enumerate().map(|(i, r)| (i as u64 + 1, r.to_string())).collect()
    }

    #[test]
    fn three_regions_of_one_voter_each_survive_any_loss() {
        assert!(placement_warnings(&voters(&["a", "b", "c"])).is_empty());
        assert!(placement_warnings(&voters(&["a", "a", "b", "b", "c"])).is_empty());
    }

    #[test]
    fn a_region_holding_half_the_voters_is_flagged() {
        let w = placement_warnings(&voters(&["a", "a", "b"]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("losing region a (2 of 3 voters) would leave 1, fewer than the quorum of 2"), "{w:?}");
        // Four voters over two regions: losing either leaves 2 < 3.
        assert_eq!(placement_warnings(&voters(&["a", "a", "b", "b"])).len(), 2);
    }

    #[test]
    fn one_region_is_flagged_once() {
        let w = placement_warnings(&voters(&["a", "a", "a"]));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("all 3 voters are in region a"), "{w:?}");
        assert!(placement_warnings(&BTreeMap::new()).is_empty());
    }
}
