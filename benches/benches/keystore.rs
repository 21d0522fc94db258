//! The state machine every replica runs for every committed entry: `KeyStore::apply` of the
//! commands behind CreateKey, RotateKey and TagKey, on a store that already holds 1,000 keys.

#![allow(clippy::unwrap_used)] // a benchmark whose fixture fails should fail loudly

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use crypto::SecureRng;
use raft::{Command, KeyChange, KeyRef};
use uuid::Uuid;

fn apply(c: &mut Criterion) {
    let mut rng = SecureRng::from_seed_u64(3);
    let (store, root) = benches::store_with_keys(1000, &mut rng);
    let material = benches::wrapped(&root, 1, &mut rng);
    let mut group = c.benchmark_group("keystore_apply");
    let mut next = 1_000_000u128;
    group.bench_function("create_key", |b| {
        b.iter_batched_ref(
            || store.clone(),
            |s| {
                next += 1;
                s.apply(&benches::create_key(Uuid::from_u128(next), material.clone(), None)).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    let key = KeyRef::Id(Uuid::from_u128(500));
    group.bench_function("rotate_key", |b| {
        b.iter_batched_ref(
            || store.clone(),
            |s| {
                let command = Command::RotateKey {
                    key: key.clone(),
                    token: None,
                    material: material.clone(),
                    if_primary_is: None,
                    by: None,
                    now_ms: 2,
                };
                s.apply(&command).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("tag_key", |b| {
        b.iter_batched_ref(
            || store.clone(),
            |s| {
                let tags = BTreeMap::from([("team".to_string(), "bench".to_string())]);
                let command = Command::Update {
                    key: key.clone(),
                    change: KeyChange::Tag(tags),
                    token: None,
                    by: None,
                    now_ms: 2,
                };
                s.apply(&command).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
