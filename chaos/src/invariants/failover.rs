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
//!
//! A call on a key restricted to the lost region cannot be answered anywhere: the client
//! retries it until its own deadline. Such a client owes an answer only `SETTLE_MS` after that
//! call ended (seed 8455: c0 of r1 called Encrypt on `k1-in-r1` just before r1 was lost).

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

/// `clients`: each workload client's region, by name. `key_regions`: the region each
/// restricted key (by alias) may be used in. `fault_times`: when every fault
/// (these losses included) was injected. `stop_ms`: when the workload stopped. `lease_ms`:
/// the nodes' read lease. Returns the violations and how many losses the condition applied to.
pub fn check(
    losses: &[RegionLoss],
    clients: &BTreeMap<String, String>,
    key_regions: &BTreeMap<String, String>,
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
            // Calls on keys only the lost region may use hold the client until they end.
            let mut client_by = by;
            for o in ops.iter().filter(|o| o.client == *client && key_regions.get(&o.key) == Some(&loss.region)) {
                let open_in_window = o.invoke_ms <= client_by && (o.outcome.is_none() || o.complete_ms > loss.at_ms);
                if open_in_window {
                    client_by = client_by.max(if o.outcome.is_none() { u64::MAX } else { o.complete_ms + SETTLE_MS });
                }
            }
            if client_by > loss.until_ms.min(stop_ms) || fault_times.iter().any(|t| *t > loss.at_ms && *t <= client_by)
            {
                continue;
            }
            let served = workload
                .iter()
                .any(|o| o.client == *client && o.complete_ms > loss.at_ms && o.complete_ms <= client_by);
            if !served {
                out.push(Violation {
                    invariant: "failover",
                    detail: format!(
                        "region {} down from {} ms: client {client} there had no call answered by {client_by} ms, \
                         though the cluster answered one at {served_at} ms",
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
        let none = BTreeMap::new();
        let unavailable = Outcome::Fail("Unavailable".into(), "no".into());
        // c1 is served at 1500; c0 only fails until 6000.
        let stuck =
            vec![at("c1", 1100, 1500, ok()), at("c0", 900, 3000, unavailable.clone()), at("c0", 3000, 6000, ok())];
        let (v, checked) = check(&loss, &clients, &none, &stuck, &[1000], 20_000, 0);
        assert_eq!(checked, 1);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("client c0"), "{v:?}");
        // Served at 4000 (a definite refusal counts), within 1500 + SETTLE_MS.
        let refused = Outcome::Fail("FailedPrecondition".into(), "disabled".into());
        let failed_over =
            vec![at("c1", 1100, 1500, ok()), at("c0", 900, 3000, unavailable), at("c0", 3000, 4000, refused)];
        assert!(check(&loss, &clients, &none, &failed_over, &[1000], 20_000, 0).0.is_empty());
        // Nobody served, a region back before the settle time, or a stopped workload: no claim.
        assert_eq!(check(&loss, &clients, &none, &[], &[1000], 20_000, 0).1, 0);
        let short = [RegionLoss { until_ms: 5000, ..loss[0].clone() }];
        assert_eq!(check(&short, &clients, &none, &stuck, &[1000], 20_000, 0).1, 0);
        assert_eq!(check(&loss, &clients, &none, &stuck, &[1000], 5000, 0).1, 0);
        // Another fault meanwhile (a second region lost, say): no claim either.
        assert_eq!(check(&loss, &clients, &none, &stuck, &[1000, 3000], 20_000, 0).1, 0);
        // A call answered within the read lease after the loss (a lease read) shows nothing.
        assert_eq!(check(&loss, &clients, &none, &stuck, &[1000], 20_000, 1600).1, 0);
        let later =
            vec![at("c1", 2700, 2800, ok()), at("c0", 900, 3000, Outcome::Fail("Unavailable".into(), "no".into()))];
        assert_eq!(check(&loss, &clients, &none, &later, &[1000], 20_000, 1600).0.len(), 1);
    }

    #[test]
    fn a_call_on_a_key_only_the_lost_region_may_use_holds_its_client_until_it_ends() {
        let clients: BTreeMap<String, String> = [("c0".into(), "r0".into()), ("c1".into(), "r1".into())].into();
        let loss = [RegionLoss { region: "r0".into(), at_ms: 1000, until_ms: 20_000 }];
        let key_regions: BTreeMap<String, String> = [("k1-in-r0".into(), "r0".into())].into();
        let on_lost_key = |invoke_ms, complete_ms| {
            let mut o = at("c0", invoke_ms, complete_ms, Outcome::Unknown("client timeout".into()));
            o.key = "k1-in-r0".into();
            o
        };
        // c0's call on k1-in-r0 times out at 7000; its next call is served at 7500, within
        // 7000 + SETTLE_MS though past 1500 + SETTLE_MS.
        let held = vec![at("c1", 1100, 1500, ok()), on_lost_key(900, 7000), at("c0", 7000, 7500, ok())];
        let (v, checked) = check(&loss, &clients, &key_regions, &held, &[1000], 30_000, 0);
        assert_eq!((v.len(), checked), (0, 1), "{v:?}");
        // Without that call's excuse the same history is a violation.
        assert_eq!(check(&loss, &clients, &BTreeMap::new(), &held, &[1000], 30_000, 0).0.len(), 1);
        // Nothing answered after the timeout: still a violation, named at the later deadline.
        let still = vec![at("c1", 1100, 1500, ok()), on_lost_key(900, 7000)];
        let (v, _) = check(&loss, &clients, &key_regions, &still, &[1000], 30_000, 0);
        assert!(v.len() == 1 && v[0].detail.contains("by 11000 ms"), "{v:?}");
    }
}
