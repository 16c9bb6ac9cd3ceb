//! The conformance suite (dashcache-testkit) on every backend, one test per contract; and proof
//! that the suite fails a broken backend.

#![allow(clippy::panic, clippy::expect_used)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashcache::{Cache, Condition, KeyTtl, MemoryCache, Result, Ttl, Write};

// One test per contract per backend: `cargo test conformance::memory::take_` runs one.
dashcache_testkit::conformance_tests!();

/// A backend with three classic bugs, to prove the suite can fail: `take` as a read then a
/// delete (the Python original's OAuth-state bug), `delete_pattern` counting one too many, and
/// counters created without their TTL.
#[derive(Debug)]
struct Broken(MemoryCache);

#[async_trait::async_trait]
impl Cache for Broken {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.0.get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.0.set(key, value, ttl).await
    }
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.0.set_if_absent(key, value, ttl).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.0.get(key).await?;
        tokio::task::yield_now().await;
        self.0.delete(key).await?;
        Ok(value)
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.0.delete(key).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.0.delete_many(keys).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.0.exists(key).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.0.get_many(keys).await
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.0.set_many(entries, ttl).await
    }
    async fn increment(&self, key: &str, delta: i64, _ttl: Option<Ttl>) -> Result<i64> {
        self.0.increment(key, delta, None).await
    }
    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.0.expire(key, ttl).await
    }
    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.0.ttl(key).await
    }
    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        Ok(self.0.delete_pattern(pattern).await? + 1)
    }
    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.0.set_add(key, members, ttl).await
    }
    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.0.set_remove(key, members).await
    }
    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.0.set_members(key).await
    }
    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        self.0.write_if(conditions, writes).await
    }
    async fn ping(&self) -> Result<Duration> {
        self.0.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_broken_backend() {
    let run = tokio::spawn(dashcache_testkit::conformance::run(Arc::new(Broken(
        MemoryCache::new(),
    ))));
    let panic = run
        .await
        .expect_err("the suite must fail on a broken backend");
    let payload = panic.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    for case in [
        "take_is_exactly_once_under_contention",
        "delete_pattern_deletes_exactly_the_matches",
        "increment_sets_ttl_only_when_missing",
    ] {
        assert!(message.contains(case), "{case} not reported in:\n{message}");
    }
}
