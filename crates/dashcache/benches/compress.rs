//! `Compressed<C>` on realistic JSON (pages of transactions, as the service caches them), in
//! one run:
//!
//! - the size ratio of 10-, 100- and 1000-row pages at levels 1 and 3 (printed first);
//! - encode and decode throughput in MB/s of uncompressed JSON;
//! - a `get` of a 1000-row page (~170 KB) from a private `redis-server`: the raw `redis`
//!   client reading it plain, `RedisCache` reading it plain, and `Compressed<RedisCache>`
//!   reading and inflating the compressed form.
//!
//! Run: `cargo bench -p dashcache --bench compress`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashcache::compress::{Compressed, Compression};
use dashcache::{Cache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;

fn page(n: usize) -> Bytes {
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let category = ["groceries", "transport", "dining", "shopping"][i % 4];
            let merchant = [
                "GROCERY MARKET",
                "FUEL STATION",
                "COFFEE BAR",
                "ONLINE STORE",
            ][i % 4];
            serde_json::json!({
                "id": format!("t_{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                "account_id": "a_4f2c9e17",
                "amount_cents": (i * 7919) % 100_000,
                "currency": "USD",
                "description": format!("CARD PURCHASE {merchant} #{}", (i * 31) % 997),
                "category": category,
                "posted_at": 1_764_000_000 + i * 3671,
                "pending": i % 17 == 0,
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&rows).unwrap())
}

fn benches(c: &mut Criterion) {
    for rows in [10, 100, 1000] {
        let json = page(rows);
        for level in [1, 3] {
            let stored = Compression::default()
                .with_level(level)
                .encode("k", &json)
                .unwrap();
            println!(
                "{rows:>5} rows: {:>7} bytes JSON -> {:>6} bytes at level {level} ({:.1}x)",
                json.len(),
                stored.len(),
                json.len() as f64 / stored.len() as f64
            );
        }
    }

    let json = page(100);
    let mut group = c.benchmark_group("compress-100-rows");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.measurement_time(Duration::from_secs(4));
    for level in [1, 3] {
        let config = Compression::default().with_level(level);
        group.bench_function(BenchmarkId::new("encode", level), |b| {
            b.iter(|| config.encode("k", &json).unwrap())
        });
    }
    let stored = Compression::default().encode("k", &json).unwrap();
    group.bench_function("decode", |b| {
        b.iter(|| Compression::default().decode("k", stored.clone()).unwrap())
    });
    group.finish();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let (cache, raw) = rt.block_on(async {
        let cache = RedisCache::builder(server.url())
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap();
        let raw = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (cache, raw)
    });
    let compressed = Compressed::new(cache.clone(), Compression::default());
    let big = page(1000);
    rt.block_on(async {
        cache
            .set("bench:plain", big.clone(), Ttl::secs(600))
            .await
            .unwrap();
        compressed
            .set("bench:zstd", big.clone(), Ttl::secs(600))
            .await
            .unwrap();
    });
    let mut group = c.benchmark_group("redis-get-1000-rows");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("raw-redis-plain", |b| {
        b.to_async(&rt).iter(|| {
            let mut raw = raw.clone();
            async move {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg("bench:plain")
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                v
            }
        })
    });
    group.bench_function("dashcache-plain", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.get("bench:plain").await.unwrap() })
    });
    group.bench_function("dashcache-compressed", |b| {
        b.to_async(&rt)
            .iter(|| async { compressed.get("bench:zstd").await.unwrap() })
    });
    group.finish();
}

criterion_group!(compress, benches);
criterion_main!(compress);
