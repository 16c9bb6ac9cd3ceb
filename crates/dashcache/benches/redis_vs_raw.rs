//! `RedisCache` against the raw `redis` multiplexed connection doing the same commands, on one
//! private `redis-server`, in one run: get, set, get_many(100), set_many(100), at concurrency 1
//! and 64; and get_many(100) against 100 sequential gets.
//!
//! Run: `cargo bench -p dashcache --bench redis_vs_raw`. Criterion reports time per operation
//! and throughput (operations per second); the README's ratios are computed from its output.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashcache::{Cache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;

const TTL_SECS: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(2);

struct Setup {
    rt: Runtime,
    _server: RedisServer,
    cache: RedisCache,
    raw: MultiplexedConnection,
    data: Arc<Data>,
}

/// Inputs built once, outside the timed loops, and shared by both sides: every key has its own
/// value, as in a real service (one shared value would make its reference count a point of
/// contention that only the `Bytes`-taking side pays).
struct Data {
    keys: Vec<&'static str>,
    values: Vec<Bytes>,
    batches: Vec<Vec<(&'static str, Bytes)>>,
}

fn setup() -> Setup {
    // One client thread: on a 2-core machine the other core belongs to redis-server, so both
    // sides are measured without fighting the server for CPU.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let (cache, raw) = rt.block_on(async {
        let cache = RedisCache::builder(server.url())
            .timeout(DEADLINE)
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
    // Leaked once per bench process, so batches of `&str` keys live as long as the benches.
    let keys: Vec<&'static str> = (0..1000)
        .map(|i| &*Box::leak(format!("bench:user:{i}").into_boxed_str()))
        .collect();
    let values: Vec<Bytes> = (0..1000).map(|_| Bytes::from(vec![b'x'; 256])).collect();
    let batches = keys
        .chunks(100)
        .zip(values.chunks(100))
        .map(|(k, v)| k.iter().copied().zip(v.iter().cloned()).collect())
        .collect();
    let data = Arc::new(Data {
        keys,
        values,
        batches,
    });
    rt.block_on(cache.set_many(&data.batches.concat(), Ttl::secs(TTL_SECS)))
        .unwrap();
    Setup {
        rt,
        _server: server,
        cache,
        raw,
        data,
    }
}

/// Runs `iters` operations spread over `concurrency` tasks; the wall time of all of them.
fn concurrent<F, Fut>(rt: &Runtime, iters: u64, concurrency: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    rt.block_on(async move {
        let per_task = iters.div_ceil(concurrency);
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let op = Arc::clone(&op);
                tokio::spawn(async move {
                    for i in 0..per_task {
                        op(t * per_task + i).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // Normalise to exactly `iters` operations.
        start
            .elapsed()
            .mul_f64(iters as f64 / (per_task * concurrency) as f64)
    })
}

/// Benchmarks `op` at `concurrency` under `group/name/side`.
fn bench<F, Fut>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    side: &str,
    concurrency: u64,
    op: F,
) where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    group.bench_function(BenchmarkId::new(name, side), |b| {
        b.iter_custom(|iters| concurrent(rt, iters, concurrency, op.clone()))
    });
}

fn single_key_ops(c: &mut Criterion, s: &Setup) {
    for concurrency in [1u64, 64] {
        let mut group = c.benchmark_group(format!("redis/c{concurrency}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(6));
        let g = &mut group;

        let (cache, d) = (s.cache.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "get", "dashcache", concurrency, move |i| {
            let (cache, d) = (cache.clone(), Arc::clone(&d));
            async move {
                cache.get(d.keys[(i % 1000) as usize]).await.unwrap();
            }
        });
        let (raw, d) = (s.raw.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "get", "raw", concurrency, move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            async move {
                let _: Option<Bytes> = redis::cmd("GET")
                    .arg(d.keys[(i % 1000) as usize])
                    .query_async(&mut raw)
                    .await
                    .unwrap();
            }
        });

        // The raw client with the deadline a production caller needs: the share of
        // RedisCache's overhead that is the deadline itself.
        let (raw, d) = (s.raw.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "get", "raw+deadline", concurrency, move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            async move {
                let mut get = redis::cmd("GET");
                get.arg(d.keys[(i % 1000) as usize]);
                let get = get.query_async::<Option<Bytes>>(&mut raw);
                tokio::time::timeout(DEADLINE, get).await.unwrap().unwrap();
            }
        });

        let (cache, d) = (s.cache.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "set", "dashcache", concurrency, move |i| {
            let (cache, d) = (cache.clone(), Arc::clone(&d));
            async move {
                let i = (i % 1000) as usize;
                cache
                    .set(d.keys[i], d.values[i].clone(), Ttl::secs(TTL_SECS))
                    .await
                    .unwrap();
            }
        });
        let (raw, d) = (s.raw.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "set", "raw", concurrency, move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            async move {
                let i = (i % 1000) as usize;
                let () = redis::cmd("SET")
                    .arg(d.keys[i])
                    .arg(d.values[i].as_ref())
                    .arg("PX")
                    .arg(TTL_SECS * 1000)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
            }
        });
        let (raw, d) = (s.raw.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "set", "raw+deadline", concurrency, move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            async move {
                let i = (i % 1000) as usize;
                let mut set = redis::cmd("SET");
                set.arg(d.keys[i])
                    .arg(d.values[i].as_ref())
                    .arg("PX")
                    .arg(TTL_SECS * 1000);
                let set = set.query_async::<()>(&mut raw);
                tokio::time::timeout(DEADLINE, set).await.unwrap().unwrap();
            }
        });
        group.finish();
    }
}

fn batch_ops(c: &mut Criterion, s: &Setup) {
    for concurrency in [1u64, 64] {
        let mut group = c.benchmark_group(format!("redis-batch100/c{concurrency}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(6));
        let g = &mut group;

        let (cache, d) = (s.cache.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "get_many", "dashcache", concurrency, move |i| {
            let (cache, d) = (cache.clone(), Arc::clone(&d));
            async move {
                let i = (i % 10) as usize * 100;
                cache.get_many(&d.keys[i..i + 100]).await.unwrap();
            }
        });
        let (raw, d) = (s.raw.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "get_many", "raw", concurrency, move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            async move {
                let i = (i % 10) as usize * 100;
                let _: Vec<Option<Bytes>> = redis::cmd("MGET")
                    .arg(&d.keys[i..i + 100])
                    .query_async(&mut raw)
                    .await
                    .unwrap();
            }
        });

        let (cache, d) = (s.cache.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "set_many", "dashcache", concurrency, move |i| {
            let (cache, d) = (cache.clone(), Arc::clone(&d));
            async move {
                let batch = &d.batches[(i % 10) as usize];
                cache.set_many(batch, Ttl::secs(TTL_SECS)).await.unwrap();
            }
        });
        let (raw, d) = (s.raw.clone(), Arc::clone(&s.data));
        bench(g, &s.rt, "set_many", "raw", concurrency, move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            async move {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for (k, v) in &d.batches[(i % 10) as usize] {
                    pipe.cmd("SET")
                        .arg(*k)
                        .arg(v.as_ref())
                        .arg("PX")
                        .arg(TTL_SECS * 1000)
                        .ignore();
                }
                let () = pipe.query_async(&mut raw).await.unwrap();
            }
        });
        group.finish();
    }
}

fn batch_vs_sequential(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("redis-100-keys");
    group.measurement_time(Duration::from_secs(6));
    let batch = &s.data.keys[..100];
    group.bench_function("get_many(100)", |b| {
        b.to_async(&s.rt)
            .iter(|| async { s.cache.get_many(batch).await.unwrap() })
    });
    group.bench_function("100 sequential gets", |b| {
        b.to_async(&s.rt).iter(|| async {
            for key in batch {
                s.cache.get(key).await.unwrap();
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let s = setup();
    single_key_ops(c, &s);
    batch_ops(c, &s);
    batch_vs_sequential(c, &s);
}

criterion_group!(redis_vs_raw, benches);
criterion_main!(redis_vs_raw);
