//! The threshold custody a cold unwrap and a new key pay for: wrapping material under the root
//! key, one holder's decryption share (with and without the ciphertext's validity check), and
//! combining t+1 shares checked against the key-check value; for 3 and 5 holders.

#![allow(clippy::unwrap_used)] // a benchmark whose fixture fails should fail loudly

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crypto::threshold::{shares_needed, unwrap, verify_wrapped, wrap, Wrapped};
use crypto::{SecretBytes, SecureRng};

fn threshold(c: &mut Criterion) {
    let mut rng = SecureRng::from_seed_u64(2);
    let mut group = c.benchmark_group("threshold");
    group.sample_size(20);
    for n in [3usize, 5] {
        let root = benches::root(n, &mut rng);
        let pks = &root.public_key_set;
        let material = SecretBytes::new(rng.bytes::<32>().to_vec());
        group.bench_with_input(BenchmarkId::new("wrap", n), &n, |b, _| {
            b.iter(|| wrap(pks, &material, &mut rng).unwrap())
        });
        let wrapped: Wrapped = wrap(pks, &material, &mut rng).unwrap();
        let holder = &root.holders[0];
        group.bench_with_input(BenchmarkId::new("verify_wrapped", n), &n, |b, _| {
            b.iter(|| assert!(verify_wrapped(&wrapped.ciphertext).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("decryption_share_of_verified", n), &n, |b, _| {
            b.iter(|| holder.decryption_share_of_verified(&wrapped.ciphertext).unwrap())
        });
        let need = shares_needed(pks).unwrap();
        let shares: BTreeMap<u64, Vec<u8>> = root
            .holders
            .iter()
            .take(need)
            .map(|h| (h.index(), h.decryption_share_of_verified(&wrapped.ciphertext).unwrap()))
            .collect();
        group.bench_with_input(BenchmarkId::new("combine_t_plus_1", n), &n, |b, _| {
            b.iter(|| assert_eq!(unwrap(pks, &wrapped, &shares).unwrap(), material))
        });
    }
    group.finish();
}

criterion_group!(benches, threshold);
criterion_main!(benches);
