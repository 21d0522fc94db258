//! Region custody, sampled all through a run: no node ever holds the unwrapped material of a
//! key whose allowed regions exclude the node's region (the workload restricts some keys to
//! one region and uses them through every node; nodes outside must forward).

use raft::{KeyRef, KeyStore};
use uuid::Uuid;

use crate::history::Violation;

/// The violation, if node `id` in `region` holds material `cached` that its own replicated
/// state says `region` may not hold. Keys' regions never change in the workload, so the node's
/// own state is an exact reference.
pub fn check(id: u64, region: &str, cached: &[(Uuid, u32)], store: &KeyStore) -> Option<Violation> {
    let outside =
        cached.iter().find(|(key, _)| store.resolve(&KeyRef::Id(*key)).is_ok_and(|k| !k.allows_region(region)))?;
    let allowed = store.resolve(&KeyRef::Id(outside.0)).map(|k| k.allowed_regions.clone()).unwrap_or_default();
    Some(Violation {
        invariant: "regions",
        detail: format!(
            "n{id} in region {region} holds the material of key {} v{}, allowed only in {allowed:?}",
            outside.0, outside.1
        ),
    })
}
