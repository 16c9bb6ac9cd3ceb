//! `RedisCache` against the raw `redis` multiplexed connection doing the same commands, on one
//! private `redis-server`, in one run: get, set, get_many(100), set_many(100), at concurrency 1
//! and 64. A third side, the raw client under `tokio::time::timeout`, shows what the deadline
//! alone costs.
//!
//! The sides are interleaved (ABCABC…, order rotating each round) over many short rounds, and the
//! ratio is the median of the per-round ratios: on a small, shared machine a slow patch then
//! hits both sides alike instead of skewing whichever ran during it.
//!
//! Run: `cargo bench -p dashcache --bench redis_vs_raw`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashcache::{Cache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;
use dashcache_testkit::load::{Op, OpFuture, Plan, median, rates};
use redis::aio::MultiplexedConnection;

const TTL_SECS: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(2);

/// Inputs built once and shared by every side: every key has its own value, as in a real
/// service.
struct Data {
    keys: Vec<&'static str>,
    values: Vec<Bytes>,
    batches: Vec<Vec<(&'static str, Bytes)>>,
}

fn data() -> Arc<Data> {
    // Leaked once per bench process so batches of `&str` keys live as long as the run.
    let keys: Vec<&'static str> = (0..1000)
        .map(|i| &*Box::leak(format!("bench:user:{i}").into_boxed_str()))
        .collect();
    let values: Vec<Bytes> = (0..1000).map(|_| Bytes::from(vec![b'x'; 256])).collect();
    let batches = keys
        .chunks(100)
        .zip(values.chunks(100))
        .map(|(k, v)| k.iter().copied().zip(v.iter().cloned()).collect())
        .collect();
    Arc::new(Data {
        keys,
        values,
        batches,
    })
}

fn main() {
    // One client thread: on a 2-core machine the other core belongs to redis-server.
    dashcache_testkit::load::bench_main(0, run);
}

async fn run() {
    let server = RedisServer::start();
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
    let d = data();
    cache
        .set_many(&d.batches.concat(), Ttl::secs(TTL_SECS))
        .await
        .unwrap();

    println!(
        "RedisCache vs raw redis ({} cores, {} interleaved rounds of {:?})",
        std::thread::available_parallelism().map_or(0, usize::from),
        Plan::default().rounds,
        Plan::default().round
    );
    println!(
        "| operation | concurrency | dashcache ops/s | raw ops/s | ratio | raw+deadline ops/s | ratio to raw+deadline |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, sides) in workloads(&cache, &raw, &d) {
        for concurrency in [1, 64] {
            let per_round = rates(&sides, concurrency).await;
            let ours: Vec<f64> = per_round.iter().map(|r| r[0]).collect();
            let ratio_raw: Vec<f64> = per_round.iter().map(|r| r[0] / r[1]).collect();
            let ratio_deadline: Vec<f64> = per_round.iter().map(|r| r[0] / r[2]).collect();
            println!(
                "| {name} | {concurrency} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
                median(ours),
                median(per_round.iter().map(|r| r[1]).collect()),
                median(ratio_raw),
                median(per_round.iter().map(|r| r[2]).collect()),
                median(ratio_deadline),
            );
        }
    }
}

/// Each workload as three sides: dashcache, raw, raw under a deadline.
fn workloads(
    cache: &RedisCache,
    raw: &MultiplexedConnection,
    d: &Arc<Data>,
) -> Vec<(&'static str, [Op; 3])> {
    let ours = |f: fn(RedisCache, Arc<Data>, usize) -> OpFuture| -> Op {
        let (cache, d) = (cache.clone(), Arc::clone(d));
        Arc::new(move |i| f(cache.clone(), Arc::clone(&d), i))
    };
    let theirs =
        |f: fn(MultiplexedConnection, Arc<Data>, usize) -> OpFuture, deadline: bool| -> Op {
            let (raw, d) = (raw.clone(), Arc::clone(d));
            Arc::new(move |i| {
                let fut = f(raw.clone(), Arc::clone(&d), i);
                if deadline {
                    Box::pin(async move { tokio::time::timeout(DEADLINE, fut).await.unwrap() })
                } else {
                    fut
                }
            })
        };
    vec![
        (
            "get",
            [ours(get), theirs(raw_get, false), theirs(raw_get, true)],
        ),
        (
            "set",
            [ours(set), theirs(raw_set, false), theirs(raw_set, true)],
        ),
        (
            "get_many(100)",
            [
                ours(get_many),
                theirs(raw_get_many, false),
                theirs(raw_get_many, true),
            ],
        ),
        (
            "set_many(100)",
            [
                ours(set_many),
                theirs(raw_set_many, false),
                theirs(raw_set_many, true),
            ],
        ),
    ]
}

fn get(cache: RedisCache, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        cache.get(d.keys[i % 1000]).await.unwrap();
    })
}

fn raw_get(mut raw: MultiplexedConnection, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let mut cmd = redis::cmd("GET");
        cmd.arg(d.keys[i % 1000]);
        let _: Option<Bytes> = cmd.query_async(&mut raw).await.unwrap();
    })
}

fn set(cache: RedisCache, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let i = i % 1000;
        cache
            .set(d.keys[i], d.values[i].clone(), Ttl::secs(TTL_SECS))
            .await
            .unwrap();
    })
}

fn raw_set(mut raw: MultiplexedConnection, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let i = i % 1000;
        let mut cmd = redis::cmd("SET");
        cmd.arg(d.keys[i])
            .arg(d.values[i].as_ref())
            .arg("PX")
            .arg(TTL_SECS * 1000);
        let () = cmd.query_async(&mut raw).await.unwrap();
    })
}

fn get_many(cache: RedisCache, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let start = (i % 10) * 100;
        cache.get_many(&d.keys[start..start + 100]).await.unwrap();
    })
}

fn raw_get_many(mut raw: MultiplexedConnection, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let start = (i % 10) * 100;
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&d.keys[start..start + 100]);
        let _: Vec<Option<Bytes>> = cmd.query_async(&mut raw).await.unwrap();
    })
}

fn set_many(cache: RedisCache, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let batch = &d.batches[i % 10];
        cache.set_many(batch, Ttl::secs(TTL_SECS)).await.unwrap();
    })
}

fn raw_set_many(mut raw: MultiplexedConnection, d: Arc<Data>, i: usize) -> OpFuture {
    Box::pin(async move {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (k, v) in &d.batches[i % 10] {
            pipe.cmd("SET")
                .arg(*k)
                .arg(v.as_ref())
                .arg("PX")
                .arg(TTL_SECS * 1000)
                .ignore();
        }
        let () = pipe.query_async(&mut raw).await.unwrap();
    })
}
