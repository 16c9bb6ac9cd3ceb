//! The embedded cache under load: a sweep of a million keys does not stall other tasks.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashcache::{Cache, MemoryCache, Ttl};

/// Regression: `MemoryCache::delete_pattern` walked up to a million entries on the async worker
/// without yielding, so on a single-threaded runtime nothing else ran until it finished. It now
/// runs on a blocking thread: here, on one runtime thread, another task keeps reading through
/// the whole sweep.
#[tokio::test(flavor = "current_thread")]
async fn a_million_key_sweep_leaves_other_tasks_running() {
    let cache = Arc::new(MemoryCache::builder().max_entries(2_000_000).build());
    let value = Bytes::from_static(b"v");
    let keys: Vec<String> = (0..1_000_000)
        .map(|i| format!("{}:{i}", if i % 100 == 0 { "doomed" } else { "kept" }))
        .collect();
    for chunk in keys.chunks(10_000) {
        let entries: Vec<(&str, Bytes)> =
            chunk.iter().map(|k| (k.as_str(), value.clone())).collect();
        cache.set_many(&entries, Ttl::secs(600)).await.unwrap();
    }

    let sweeping = Arc::new(AtomicBool::new(true));
    let reader = {
        let (cache, sweeping) = (Arc::clone(&cache), Arc::clone(&sweeping));
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while sweeping.load(Ordering::Acquire) {
                let started = Instant::now();
                assert!(cache.get("kept:1").await.unwrap().is_some());
                latencies.push(started.elapsed());
                tokio::task::yield_now().await;
            }
            latencies
        })
    };
    // Let the reader start before the sweep.
    tokio::task::yield_now().await;
    let started = Instant::now();
    let deleted = cache.delete_pattern("doomed:*").await.unwrap();
    let sweep = started.elapsed();
    sweeping.store(false, Ordering::Release);
    let mut latencies = reader.await.unwrap();

    assert_eq!(deleted, 10_000);
    assert!(
        latencies.len() > 100,
        "the reader ran {} times during a {sweep:?} sweep: the sweep held the runtime's only \
         thread",
        latencies.len()
    );
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "sweep of 1 000 000 keys: {sweep:?}; {} reads meanwhile, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies.last().copied().unwrap_or(Duration::ZERO)
    );
    assert_eq!(cache.get("doomed:0").await.unwrap(), None);
    assert!(cache.get("kept:1").await.unwrap().is_some());
}
