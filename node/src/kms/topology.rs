//! Topology: every member with its region, role, client address and health, for clients that
//! choose a node by region; and the placement check (can the voters lose any one region?).

use std::collections::BTreeMap;

use raft::NodeId;

use crate::node::Node;

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

/// How a member looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// This node cannot tell (a follower knows only the leader's health).
    Unknown,
    Healthy,
    Unreachable,
}

/// One member of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyMember {
    pub id: NodeId,
    pub region: String,
    pub zone: String,
    pub addr: String,
    /// `leader`, `voter` or `learner`.
    pub role: &'static str,
    pub health: Health,
    /// How long ago the leader last heard from it, when known.
    pub last_contact_ms: Option<u64>,
}

/// The members, their regions and health, as one node sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub members: Vec<TopologyMember>,
    pub leader_id: Option<NodeId>,
    pub answered_by: NodeId,
    /// Whether the leader's view (health known for every member).
    pub from_leader: bool,
    pub placement_warnings: Vec<String>,
}

impl Node {
    /// This node's view of the topology. Health is known on the leader (from when each peer
    /// last answered its raft RPCs); elsewhere only this node's own, and the leader's when it
    /// was heard from recently.
    pub fn local_topology(&self) -> Topology {
        let consensus = &self.consensus;
        let view = consensus.view();
        let leader = view.leader;
        let is_leader = view.is_leader();
        let window = consensus.health_window();
        let heard_from_leader = consensus.last_leader_contact().is_some_and(|t| t.elapsed() <= window);
        let voters = view.voter_regions();
        let mut members = Vec::new();
        for (id, info) in &view.members {
            let role = if Some(*id) == leader {
                "leader"
            } else if voters.contains_key(id) {
                "voter"
            } else {
                "learner"
            };
            let (health, last_contact_ms) = if *id == self.id() {
                (
                    if self.state().sealed().is_some() { Health::Unreachable } else { Health::Healthy },
                    is_leader.then_some(0),
                )
            } else if is_leader {
                match consensus.peer_silence(*id) {
                    Some(ago) => {
                        let h = if ago <= window { Health::Healthy } else { Health::Unreachable };
                        (h, Some(ago.as_millis() as u64))
                    }
                    None => (Health::Unreachable, None),
                }
            } else if Some(*id) == leader && heard_from_leader {
                (Health::Healthy, Some(0))
            } else {
                (Health::Unknown, None)
            };
            members.push(TopologyMember {
                id: *id,
                region: info.region.clone(),
                zone: info.zone.clone(),
                addr: info.addr.clone(),
                role,
                health,
                last_contact_ms,
            });
        }
        Topology {
            members,
            leader_id: leader,
            answered_by: self.id(),
            from_leader: is_leader,
            placement_warnings: placement_warnings(&voters),
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
