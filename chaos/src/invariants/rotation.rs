//! Rotation consistency at the nodes: no two hold different material for the same (key,
//! version). The clients' side of rotation is `history::check::rotation`.

use std::collections::BTreeMap;

use raft::KeyStore;

use crate::history::Violation;

/// Compares the wrapped material every node holds for every (key, version).
pub fn compare_material(states: &[(u64, KeyStore)]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut first: BTreeMap<(String, u32), (u64, Vec<u8>)> = BTreeMap::new();
    for (node, store) in states {
        for key in store.list(None, usize::MAX) {
            for v in &key.versions {
                let material = v.material.as_ref().map(|m| m.ciphertext.clone()).unwrap_or_default();
                let slot = (key.id.to_string(), v.version);
                match first.get(&slot) {
                    None => {
                        first.insert(slot, (*node, material));
                    }
                    Some((other, m)) if *m != material && !material.is_empty() && !m.is_empty() => {
                        out.push(Violation {
                            invariant: "rotation",
                            detail: format!(
                                "n{node} and n{other} hold different material for key {} version {}",
                                key.id, v.version
                            ),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
    }
    out
}
