//! One `get_many(100)` against 100 sequential `get`s on a private `redis-server`: what one round
//! trip instead of a hundred is worth.
//!
//! Run: `cargo bench -p dashcache --bench batch_vs_sequential`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dashcache::{Cache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let cache = rt.block_on(async {
        RedisCache::builder(server.url())
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap()
    });
    let keys: Vec<String> = (0..100).map(|i| format!("bench:user:{i}")).collect();
    let batch: Vec<&str> = keys.iter().map(String::as_str).collect();
    let entries: Vec<(&str, Bytes)> = batch
        .iter()
        .map(|k| (*k, Bytes::from(vec![b'x'; 256])))
        .collect();
    rt.block_on(cache.set_many(&entries, Ttl::secs(300)))
        .unwrap();

    let mut group = c.benchmark_group("redis-100-keys");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("get_many(100)", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.get_many(&batch).await.unwrap() })
    });
    group.bench_function("100 sequential gets", |b| {
        b.to_async(&rt).iter(|| async {
            for key in &batch {
                cache.get(key).await.unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(batch_vs_sequential, benches);
criterion_main!(batch_vs_sequential);
