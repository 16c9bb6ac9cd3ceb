//! A test hook, compiled only into the crate's own tests: holding every fill (the step that
//! puts a value read from Redis into L1) so a test can put an invalidation between a read and
//! its fill. Release builds have neither the hook nor its check.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::HybridCache;
use crate::{Cache, RedisCache};

#[derive(Debug, Default)]
pub(super) struct FillGate {
    held: AtomicBool,
    waiting: AtomicUsize,
    lock: Arc<tokio::sync::RwLock<()>>,
}

impl FillGate {
    /// Waits while fills are held.
    pub(super) async fn pass(&self) {
        if self.held.load(Ordering::Acquire) {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let _pass = self.lock.read().await;
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Holds fills while it lives.
struct FillHold {
    gate: Arc<FillGate>,
    _guard: tokio::sync::OwnedRwLockWriteGuard<()>,
}

impl FillHold {
    fn waiting(&self) -> usize {
        self.gate.waiting.load(Ordering::Acquire)
    }
}

impl Drop for FillHold {
    fn drop(&mut self) {
        self.gate.held.store(false, Ordering::Release);
    }
}

impl HybridCache {
    async fn hold_fills(&self) -> FillHold {
        let gate = Arc::clone(&self.inner.gate);
        let guard = Arc::clone(&gate.lock).write_owned().await;
        gate.held.store(true, Ordering::Release);
        FillHold {
            gate,
            _guard: guard,
        }
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

/// A read of Redis that an invalidation overtakes before its fill: the old value is returned
/// to that reader, but never put into L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_an_invalidation_does_not_land() {
    let server = dashcache_testkit::RedisServer::start();
    let l2 = RedisCache::builder(server.url())
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let cache = Arc::new(
        HybridCache::builder(l2)
            .staleness(Duration::from_millis(500))
            .build()
            .unwrap(),
    );
    assert!(cache.ready(Duration::from_secs(10)).await, "{cache:?}");
    let mut raw = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let set = |value: &'static str| redis::cmd("SET").arg("race").arg(value).clone();
    let _: () = set("old").query_async(&mut raw).await.unwrap();
    let hold = cache.hold_fills().await;
    let reader = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move { cache.get("race").await })
    };
    let start = Instant::now();
    while hold.waiting() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the read never reached its fill"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = cache.status().invalidations;
    let _: () = set("new").query_async(&mut raw).await.unwrap();
    while cache.status().invalidations == before {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no invalidation arrived"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(hold);
    assert_eq!(
        reader.await.unwrap().unwrap(),
        Some(bytes("old")),
        "what it read"
    );
    assert!(cache.status().fills_refused >= 1, "{:?}", cache.status());
    assert_ne!(
        cache.get_now("race").and_then(Result::ok).flatten(),
        Some(bytes("old")),
        "the overtaken fill landed"
    );
    assert_eq!(cache.get("race").await.unwrap(), Some(bytes("new")));
}
