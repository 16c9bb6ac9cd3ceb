//! `delete_pattern` removing 10 000 of 1 000 000 keys on a private `redis-server`, while other
//! clients keep reading: how long the sweep takes, and the latency of the GETs issued during it
//! (the server must not block). For contrast, one `KEYS` call over the same keyspace, the
//! blocking command the Python original's approach amounts to.
//!
//! Run: `cargo bench -p dashcache --bench delete_pattern`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashcache::{Cache, RedisCache};
use dashcache_testkit::RedisServer;

const TOTAL: usize = 1_000_000;
const VICTIMS: usize = 10_000;
const READERS: usize = 4;

fn main() {
    dashcache_testkit::load::bench_main(2, run);
}

async fn run() {
    let server = RedisServer::start();
    let cache = RedisCache::builder(server.url())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    load(&server).await;

    let idle = read_latencies(server.url(), Duration::from_secs(2), None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let readers = tokio::spawn(read_latencies(
        server.url(),
        Duration::from_secs(3600),
        Some(Arc::clone(&stop)),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let deleted = cache.delete_pattern("bench:victim:*").await.unwrap();
    let sweep = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = readers.await.unwrap();
    assert_eq!(deleted, VICTIMS as u64);

    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let start = Instant::now();
    let _: Vec<String> = redis::cmd("KEYS")
        .arg("bench:none:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let keys_block = start.elapsed();

    println!("delete_pattern: {VICTIMS} of {TOTAL} keys");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| keys deleted (returned count) | {deleted} |");
    println!("| sweep time | {:.0} ms |", sweep.as_secs_f64() * 1e3);
    println!("| GETs during the sweep | {} |", during.len());
    println!("| GET p50 / p99 / max during | {} |", summary(&during));
    println!("| GET p50 / p99 / max idle | {} |", summary(&idle));
    println!(
        "| one KEYS over the keyspace blocks the server for | {:.0} ms |",
        keys_block.as_secs_f64() * 1e3
    );
}

/// Fills the server: every 100th key is a victim, so they are spread over the whole keyspace.
async fn load(server: &RedisServer) {
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for chunk in 0..TOTAL / 1000 {
        let mut cmd = redis::cmd("MSET");
        for i in chunk * 1000..(chunk + 1) * 1000 {
            let key = if i % (TOTAL / VICTIMS) == 0 {
                format!("bench:victim:{i}")
            } else {
                format!("bench:other:{i}")
            };
            cmd.arg(key).arg("v");
        }
        let () = cmd.query_async(&mut conn).await.unwrap();
    }
}

/// GETs from `READERS` clients of their own until `stop` (or `limit`); their latencies.
async fn read_latencies(
    url: String,
    limit: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let reader = RedisCache::builder(url.clone())
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let begin = Instant::now();
            let mut i = r;
            while begin.elapsed() < limit
                && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
            {
                let key = format!("bench:other:{}", (i * 7919) % TOTAL + 1);
                let start = Instant::now();
                reader.get(&key).await.unwrap();
                latencies.push(start.elapsed());
                i += READERS;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn summary(sorted: &[Duration]) -> String {
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    format!("{:.2} / {:.2} / {:.2} ms", at(0.5), at(0.99), at(1.0))
}
