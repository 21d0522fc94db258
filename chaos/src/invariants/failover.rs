//! Clients fail over between regions: while a region is down, the workload clients in it
//! are served by the other regions whenever the cluster serves anyone.
//!
//! The condition is relative, so faults injected earlier need no model: if, after a region
//! was lost, any workload client had a call answered (at `served_at`), then every client of
//! the lost region must have had one answered by `served_at + SETTLE_MS`, provided the region
//! is still down, the workload still running, and no other fault was injected meanwhile. An
//! answer is a success or a definite refusal from the KMS (a disabled key, say);
//! unavailability and timeouts are not.
//!
//! Only calls invoked a read lease after the loss show that the cluster serves: until then a
//! leader may answer linearizable reads on a lease its lost followers granted before, though
//! the region held half the voters and nothing more can commit (seed 6887: 3 of 6 voters lost,
//! one lease read served, then rightly nothing).

use std::collections::BTreeMap;

use crate::history::{Op, Outcome, Violation};

/// What a client in a lost region may take beyond the first call served anywhere: a
/// failed attempt at its dead node (connections to a crashed host break at once), the
/// backoff (capped at 1 s) and a call elsewhere, with room to spare.
pub const SETTLE_MS: u64 = 4_000;

/// A region whose every node was down from `at_ms` until `until_ms`.
#[derive(Debug, Clone)]
pub struct RegionLoss {
    pub region: String,
    pub at_ms: u64,
    pub until_ms: u64,
}

fn answered(op: &Op) -> bool {
    match &op.outcome {
        Some(Outcome::Ok(_)) => true,
        Some(Outcome::Fail(code, _)) => {
            matches!(code.as_str(), "FailedPrecondition" | "NotFound" | "InvalidArgument" | "AlreadyExists")
        }
        _ => false,
    }
}

/// `clients`: each workload client's region, by name. `fault_times`: when every fault
/// (these losses included) was injected. `stop_ms`: when the workload stopped. `lease_ms`:
/// the nodes' read lease. Returns the violations and how many losses the condition applied to.
pub fn check(
    losses: &[RegionLoss],
    clients: &BTreeMap<String, String>,
    ops: &[Op],
    fault_times: &[u64],
    stop_ms: u64,
    lease_ms: u64,
) -> (Vec<Violation>, usize) {
    let mut out = Vec::new();
    let mut checked = 0;
    let workload: Vec<&Op> = ops.iter().filter(|o| clients.contains_key(&o.client) && answered(o)).collect();
    for loss in losses {
        let after_lease = loss.at_ms + lease_ms;
        let Some(served_at) = workload.iter().filter(|o| o.invoke_ms >= after_lease).map(|o| o.complete_ms).min()
        else {
            continue;
        };
        let by = served_at + SETTLE_MS;
        if by > loss.until_ms.min(stop_ms) || fault_times.iter().any(|t| *t > loss.at_ms && *t <= by) {
            continue;
        }
        checked += 1;
        for (client, region) in clients {
            if *region != loss.region {
                continue;
            }
            let served =
                workload.iter().any(|o| o.client == *client && o.complete_ms > loss.at_ms && o.complete_ms <= by);
            if !served {
                out.push(Violation {
                    invariant: "failover",
                    detail: format!(
                        "region {} down from {} ms: client {client} there had no call answered by {by} ms, though \
                         the cluster answered one at {served_at} ms",
                        loss.region, loss.at_ms
                    ),
                });
            }
        }
    }
    (out, checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpKind;
    use crate::invariants::testing::{key, op};

    fn at(client: &str, invoke_ms: u64, complete_ms: u64, outcome: Outcome) -> Op {
        let mut o = op(OpKind::Describe { node: None }, 0, 0, outcome);
        o.client = client.into();
        o.invoke_ms = invoke_ms;
        o.complete_ms = complete_ms;
        o
    }

    fn ok() -> Outcome {
        key(crate::history::KeyStatus::Enabled, 1)
    }

    #[test]
    fn a_client_of_the_lost_region_must_be_served_once_others_are() {
        let clients: BTreeMap<String, String> = [("c0".into(), "r0".into()), ("c1".into(), "r1".into())].into();
        let loss = [RegionLoss { region: "r0".into(), at_ms: 1000, until_ms: 9000 }];
        let unavailable = Outcome::Fail("Unavailable".into(), "no".into());
        // c1 is served at 1500; c0 only fails until 6000.
        let stuck =
            vec![at("c1", 1100, 1500, ok()), at("c0", 900, 3000, unavailable.clone()), at("c0", 3000, 6000, ok())];
        let (v, checked) = check(&loss, &clients, &stuck, &[1000], 20_000, 0);
        assert_eq!(checked, 1);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("client c0"), "{v:?}");
        // Served at 4000 (a definite refusal counts), within 1500 + SETTLE_MS.
        let refused = Outcome::Fail("FailedPrecondition".into(), "disabled".into());
        let failed_over =
            vec![at("c1", 1100, 1500, ok()), at("c0", 900, 3000, unavailable), at("c0", 3000, 4000, refused)];
        assert!(check(&loss, &clients, &failed_over, &[1000], 20_000, 0).0.is_empty());
        // Nobody served, a region back before the settle time, or a stopped workload: no claim.
        assert_eq!(check(&loss, &clients, &[], &[1000], 20_000, 0).1, 0);
        let short = [RegionLoss { until_ms: 5000, ..loss[0].clone() }];
        assert_eq!(check(&short, &clients, &stuck, &[1000], 20_000, 0).1, 0);
        assert_eq!(check(&loss, &clients, &stuck, &[1000], 5000, 0).1, 0);
        // Another fault meanwhile (a second region lost, say): no claim either.
        assert_eq!(check(&loss, &clients, &stuck, &[1000, 3000], 20_000, 0).1, 0);
        // A call answered within the read lease after the loss (a lease read) shows nothing.
        assert_eq!(check(&loss, &clients, &stuck, &[1000], 20_000, 1600).1, 0);
        let later =
            vec![at("c1", 2700, 2800, ok()), at("c0", 900, 3000, Outcome::Fail("Unavailable".into(), "no".into()))];
        assert_eq!(check(&loss, &clients, &later, &[1000], 20_000, 1600).0.len(), 1);
    }
}
