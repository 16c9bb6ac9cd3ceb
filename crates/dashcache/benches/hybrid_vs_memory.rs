//! An L1 hit of `HybridCache` against `MemoryCache` and a raw `moka::sync::Cache` with
//! per-entry expiry (what a TTL on every write needs), all of the same capacity, in one run and
//! from the same async loop; plus a read `RedisCache` sends over the network, for scale.
//!
//! The hybrid's L1 is warmed (every key read once) and its tracking connection proven before
//! the measurement; the bench checks after it that L1 was still serving, so a number here is
//! never a read that fell through to Redis.
//!
//! Run: `cargo bench -p dashcache --bench hybrid_vs_memory`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashcache::hybrid::HybridCache;
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, Keys, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;

const ENTRIES: u64 = 100_000;

fn benches(c: &mut Criterion) {
    // The measured loop runs on this thread; the hybrid's tracker (which keeps proving the
    // channel, so L1 keeps serving) and the Redis connections run on the one worker, as they
    // would beside a service's handlers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let keys: Vec<String> = (0..10_000).map(|i| format!("bench:user:{i}")).collect();
    let metrics = CacheMetrics::new(&Keys::new("bench", ["user"]).unwrap());
    let value = Bytes::from(vec![b'x'; 256]);

    let memory = MemoryCache::builder().max_entries(ENTRIES).build();
    let moka: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
        .max_capacity(ENTRIES)
        .expire_after(FixedTtl)
        .build();
    let (redis, hybrid) = rt.block_on(async {
        let redis = RedisCache::connect(server.url()).await.unwrap();
        let hybrid = HybridCache::builder(RedisCache::connect(server.url()).await.unwrap())
            .track_prefix("bench:")
            .max_entries(ENTRIES)
            .metrics(metrics.clone())
            .build()
            .unwrap();
        for key in &keys {
            memory
                .set(key, value.clone(), Ttl::secs(300))
                .await
                .unwrap();
            moka.insert(key.clone(), value.clone());
            redis.set(key, value.clone(), Ttl::secs(300)).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !hybrid.status().serving {
            assert!(Instant::now() < deadline, "L1 never started serving");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for key in &keys {
            hybrid.get(key).await.unwrap().unwrap();
        }
        assert!(hybrid.get_now(&keys[0]).is_some(), "L1 is not answering");
        (redis, hybrid)
    });

    let mut group = c.benchmark_group("l1");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("get", "hybrid-l1-hit"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, hybrid) = (&keys[i], &hybrid);
            async move { hybrid.get(key).await.unwrap().unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("get", "memory"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, memory) = (&keys[i], &memory);
            async move { memory.get(key).await.unwrap().unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("get", "moka-per-entry-ttl"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, moka) = (&keys[i], &moka);
            async move { moka.get(key).unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("get", "redis"), |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (key, redis) = (&keys[i], &redis);
            async move { redis.get(key).await.unwrap().unwrap() }
        })
    });
    group.finish();

    let status = hybrid.status();
    assert!(
        status.serving,
        "L1 stopped serving during the run: {status:?}"
    );
    let total = metrics.total();
    println!(
        "hybrid: {} L1 hits, {} reads from Redis (the {} of the warm-up included); {status:?}",
        total.l1_hits,
        total.l2_hits,
        keys.len()
    );
    drop(server);
}

/// Every entry lives 300 s from its write.
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

criterion_group!(hybrid_vs_memory, benches);
criterion_main!(hybrid_vs_memory);
