//! [`Instrumented<C>`]: per-namespace metrics and a tracing span around every operation of any
//! [`Cache`].

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument as _;

use crate::cache::{Cache, KeyTtl, Ttl};
use crate::error::Result;
use crate::metrics::{CacheMetrics, Event};

/// Wraps a cache and records, per namespace, hits and misses of reads (`get`, `get_many`,
/// `take`), errors of every operation (counted as errors, never as misses), and latency; and
/// opens a `tracing` span (`cache`, with `op` and `namespace`) around each operation.
///
/// It is itself a [`Cache`], so it stacks with other decorators and hides behind
/// `Arc<dyn Cache>`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use dashcache::{Cache, Instrumented, Keys, MemoryCache, metrics::CacheMetrics};
///
/// let keys = Keys::new("app", ["user"])?;
/// let metrics = CacheMetrics::new(&keys);
/// let cache = Instrumented::new(MemoryCache::new(), metrics.clone());
/// cache.get(&keys.key(["user", "1"])?).await?;
/// assert_eq!(metrics.snapshot("user").misses, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Instrumented<C> {
    inner: C,
    metrics: CacheMetrics,
}

impl<C: Cache> Instrumented<C> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: C, metrics: CacheMetrics) -> Self {
        Self { inner, metrics }
    }

    /// The metrics this wrapper records into.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The wrapped cache.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Times `fut`, counts its error if it fails, and runs it inside a span.
    async fn observe<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            "cache",
            op,
            namespace = self.metrics.keys().namespace_of(key)
        );
        let start = Instant::now();
        let result = fut.instrument(span).await;
        self.metrics.record_latency(key, start.elapsed());
        if let Err(e) = &result {
            self.metrics.record(key, Event::Error);
            tracing::debug!(op, code = e.code(), error = %e, "cache operation failed");
        }
        result
    }

    fn count_read<T>(&self, key: &str, found: &Option<T>) {
        let event = if found.is_some() {
            Event::Hit
        } else {
            Event::Miss
        };
        self.metrics.record(key, event);
    }
}

/// The key a batch is labelled by: its first.
fn first<'a>(keys: impl IntoIterator<Item = &'a str>) -> &'a str {
    keys.into_iter().next().unwrap_or_default()
}

#[async_trait]
impl<C: Cache> Cache for Instrumented<C> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.observe("get", key, self.inner.get(key)).await?;
        self.count_read(key, &value);
        Ok(value)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.observe("set", key, self.inner.set(key, value, ttl))
            .await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.observe(
            "set_if_absent",
            key,
            self.inner.set_if_absent(key, value, ttl),
        )
        .await
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.observe("take", key, self.inner.take(key)).await?;
        self.count_read(key, &value);
        Ok(value)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.observe("delete", key, self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let label = first(keys.iter().copied());
        self.observe("delete_many", label, self.inner.delete_many(keys))
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.observe("exists", key, self.inner.exists(key)).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let label = first(keys.iter().copied());
        let values = self
            .observe("get_many", label, self.inner.get_many(keys))
            .await?;
        for (key, value) in keys.iter().zip(&values) {
            self.count_read(key, value);
        }
        Ok(values)
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let label = first(entries.iter().map(|(k, _)| *k));
        self.observe("set_many", label, self.inner.set_many(entries, ttl))
            .await
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.observe(
            "increment",
            key,
            self.inner.increment(key, delta, ttl_on_create),
        )
        .await
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.observe("expire", key, self.inner.expire(key, ttl))
            .await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.observe("ttl", key, self.inner.ttl(key)).await
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        self.observe(
            "delete_pattern",
            pattern,
            self.inner.delete_pattern(pattern),
        )
        .await
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.observe("set_add", key, self.inner.set_add(key, members, ttl))
            .await
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.observe("set_remove", key, self.inner.set_remove(key, members))
            .await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.observe("set_members", key, self.inner.set_members(key))
            .await
    }

    async fn ping(&self) -> Result<Duration> {
        self.observe("ping", "", self.inner.ping()).await
    }
}
