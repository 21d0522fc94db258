//! The ciphertext format a warm Encrypt and Decrypt pay for (AES-256-GCM-SIV under a cached
//! key version, with an encryption context), by plaintext size.

#![allow(clippy::unwrap_used)] // a benchmark whose fixture fails should fail loudly

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crypto::{ciphertext, SecretBytes, SecureRng};
use uuid::Uuid;

fn ciphertext_format(c: &mut Criterion) {
    let mut rng = SecureRng::from_seed_u64(1);
    let key = SecretBytes::new(rng.bytes::<32>().to_vec());
    let id = Uuid::from_u128(7);
    let context = BTreeMap::from([("app".to_string(), "bench".to_string())]);
    let mut group = c.benchmark_group("ciphertext");
    for size in [64usize, 1024, 64 * 1024] {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encrypt", size), &plaintext, |b, p| {
            b.iter(|| ciphertext::encrypt(&key, id, 1, &context, p, &mut rng).unwrap())
        });
        let sealed = ciphertext::encrypt(&key, id, 1, &context, &plaintext, &mut rng).unwrap();
        group.bench_with_input(BenchmarkId::new("decrypt", size), &sealed, |b, s| {
            b.iter(|| ciphertext::decrypt(&key, s, &context).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, ciphertext_format);
criterion_main!(benches);
