//! `MemoryCache` against a raw `moka::sync::Cache` of the same capacity, in one run, all driven
//! from the same async loop so the runtime's cost is the same on every side.
//!
//! Two baselines: `moka` with one cache-wide TTL (its cheapest configuration), and
//! `moka-per-entry-ttl` with an `Expiry` policy, which is what a TTL on every write needs and
//! what `MemoryCache` is built on.
//!
//! Run: `cargo bench -p dashcache --bench memory_vs_moka`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashcache::{Cache, MemoryCache, Ttl};

const ENTRIES: u64 = 100_000;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("bench:user:{i}")).collect();
    let value = Bytes::from(vec![b'x'; 256]);

    let ours = MemoryCache::builder().max_entries(ENTRIES).build();
    let raw: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
        .max_capacity(ENTRIES)
        .time_to_live(Duration::from_secs(300))
        .build();
    let per_entry: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
        .max_capacity(ENTRIES)
        .expire_after(FixedTtl)
        .build();
    rt.block_on(async {
        for key in &keys {
            ours.set(key, value.clone(), Ttl::secs(300)).await.unwrap();
            raw.insert(key.clone(), value.clone());
            per_entry.insert(key.clone(), value.clone());
        }
    });

    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("get", "dashcache"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let key = &keys[i];
            let ours = &ours;
            async move { ours.get(key).await.unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("get_now", "dashcache"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let key = &keys[i];
            let ours = &ours;
            async move { ours.get_now(key).unwrap().unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("get", "moka"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let key = &keys[i];
            let raw = &raw;
            async move { raw.get(key) }
        })
    });
    group.bench_function(BenchmarkId::new("get", "moka-per-entry-ttl"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let key = &keys[i];
            let raw = &per_entry;
            async move { raw.get(key) }
        })
    });
    group.bench_function(BenchmarkId::new("set", "dashcache"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, value, ours) = (&keys[i], value.clone(), &ours);
            async move { ours.set(key, value, Ttl::secs(300)).await.unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("set", "moka"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, value, raw) = (&keys[i], value.clone(), &raw);
            async move { raw.insert(key.clone(), value) }
        })
    });
    group.bench_function(BenchmarkId::new("set", "moka-per-entry-ttl"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, value, raw) = (&keys[i], value.clone(), &per_entry);
            async move { raw.insert(key.clone(), value) }
        })
    });
    group.finish();
}

/// The per-entry expiry baseline: every entry lives 300 s from its write.
struct FixedTtl;

impl moka::Expiry<String, Bytes> for FixedTtl {
    fn expire_after_create(&self, _: &String, _: &Bytes, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }

    fn expire_after_update(
        &self,
        _: &String,
        _: &Bytes,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

criterion_group!(memory_vs_moka, benches);
criterion_main!(memory_vs_moka);
