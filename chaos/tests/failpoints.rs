//! Proof that the checkers can fail: each failpoint injects a known bug into the production
//! code, and the invariant that targets it must report it.
//! Runs only with `--features failpoints` (see scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use chaos::{run_seed_with, SeedReport};

/// Failpoints are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Removes the failpoint even if the test fails.
struct Active(&'static str);

impl Drop for Active {
    fn drop(&mut self) {
        fail::remove(self.0);
    }
}

/// Runs seeds with `failpoint` active until one reports `invariant`; returns that report.
fn caught(failpoint: &'static str, invariant: &str, adjust: fn(&mut chaos::plan::Plan)) -> SeedReport {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    fail::cfg(failpoint, "return").unwrap();
    let _active = Active(failpoint);
    let mut seen = Vec::new();
    let mut found = None;
    for seed in 0..20 {
        let r = run_seed_with(seed, false, adjust);
        if r.violations.iter().any(|v| v.invariant == invariant) {
            found = Some(r);
            break;
        }
        seen.push((seed, r.violations.iter().map(|v| v.invariant).collect::<Vec<_>>()));
    }
    found.unwrap_or_else(|| panic!("{failpoint}: no seed reported {invariant}; saw {seen:?}"))
}

#[test]
fn stale_linearizable_reads_are_caught() {
    // Partitions leave deposed leaders and lagging followers serving from local state.
    let r = caught("node::read-without-read-index", "linearizable", |p| {
        p.knobs.partition = 0.08;
        p.knobs.crash = 0.04;
    });
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn acknowledging_unsynced_appends_is_caught() {
    // A power loss of every node drops the unsynced tail that was already acknowledged.
    // (Single-node crashes are off: openraft's leader would notice a follower's log going
    // backwards and stop the run before the lost writes can be checked.)
    let r = caught("storage::log-writes-unsynced", "no-lost-writes", |p| {
        p.knobs.crash = 0.0;
        p.knobs.power_loss = 0.05;
    });
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn encrypting_under_an_old_version_is_caught() {
    let r = caught("node::encrypt-with-previous-version", "rotation", |_| {});
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn unwrapping_outside_a_keys_regions_is_caught() {
    // Every key restricted to the first region: nodes elsewhere that ignore the restriction
    // (and holders that help them) unwrap it themselves instead of forwarding.
    let r = caught("node::ignore-key-regions", "regions", |p| {
        p.key_regions = vec![Some(p.regions[0].clone()); p.keys];
    });
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn serving_while_sealed_is_caught() {
    // Every restart boots sealed; the prober's calls to a sealed node must be refused.
    let r = caught("node::serve-while-sealed", "sealed", |p| p.knobs.crash = 0.06);
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn serving_a_principal_without_authorizing_it_is_caught() {
    // The grantee principal is refused until a grant or policy allows it; a node that skips
    // the check serves it anyway, also after a revoke.
    let r = caught("node::skip-authorization", "revocation", |_| {});
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn authorizing_on_state_older_than_the_read_barrier_is_caught() {
    // A follower that authorizes before it has caught up can still hold a grant whose revoke
    // the leader has acknowledged: the grantee is served after the revoke. The window is
    // widest with the owner next to the leader and the grantee a WAN away, and no faults.
    let r = caught("node::authorize-before-read-barrier", "revocation", |p| {
        p.knobs = chaos::plan::Knobs::default();
        let near = p.access[0].region.clone();
        p.preferred_leader_region = Some(near.clone());
        if let Some(far) = p.regions.iter().find(|r| **r != near) {
            p.access[1].region = far.clone();
        }
    });
    println!("seed {} caught: {:?}", r.seed, r.violations.first());
}

#[test]
fn a_holder_giving_corrupt_shares_is_named_and_worked_around() {
    // Node 2 corrupts every decryption share it gives (key material and log keys). The others
    // must still unwrap everything (t + 1 honest holders remain) and name node 2, and only it.
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let failpoint = "node::corrupt-decryption-shares";
    fail::cfg(failpoint, "return(2)").unwrap();
    let _active = Active(failpoint);
    let mut named = std::collections::BTreeMap::new();
    for seed in 0..3 {
        let r = run_seed_with(seed, false, |_| {});
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        for (holder, n) in r.faulty_shares {
            *named.entry(holder).or_insert(0u64) += n;
        }
    }
    assert!(named.get(&2).is_some_and(|n| *n > 0), "node 2 was never named: {named:?}");
    assert_eq!(named.keys().copied().collect::<Vec<_>>(), vec![2], "honest nodes were named: {named:?}");
}
