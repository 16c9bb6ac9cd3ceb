//! [`Instrumented<C>`]: per-namespace metrics and a tracing span around every operation of any
//! [`Cache`].

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument as _;

use crate::cache::{Cache, Condition, KeyTtl, Ttl, Write};
use crate::error::Result;
use crate::metrics::{CacheMetrics, Event, NamespaceMetrics};

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
    /// Operations that wait for the backend: one in this many is timed.
    latency_every: u32,
    /// Reads the backend answers at once ([`Cache::get_now`]): one in this many is timed.
    immediate_latency_every: u32,
}

/// By default, one in this many reads answered at once is timed: timing every one would cost
/// a tenth of an in-process hit, for a histogram of the same shape.
const IMMEDIATE_SAMPLING: u32 = 16;

impl<C: Cache> Instrumented<C> {
    /// Wraps `inner`, recording into `metrics`. Every operation that waits on the backend is
    /// timed; of the reads it answers at once (an in-process cache's `get`, see
    /// [`Cache::get_now`]), one in 16 is. Counts are always exact.
    pub fn new(inner: C, metrics: CacheMetrics) -> Self {
        Self {
            inner,
            metrics,
            latency_every: 1,
            immediate_latency_every: IMMEDIATE_SAMPLING,
        }
    }

    /// Times one operation in `every` (0: none; 1: all), whether it waits or not. Counts stay
    /// exact.
    ///
    /// Timing an operation costs some 15 ns and two atomic additions: noise next to a Redis
    /// round trip, about a tenth of an in-process `MemoryCache` hit. Sampling keeps the
    /// latency histogram's shape at a fraction of that cost.
    ///
    /// ```
    /// # use dashcache::{Instrumented, Keys, MemoryCache, metrics::CacheMetrics};
    /// let metrics = CacheMetrics::new(&Keys::new("app", ["user"])?);
    /// let cache = Instrumented::new(MemoryCache::new(), metrics).with_latency_sampling(16);
    /// # let _ = cache;
    /// # Ok::<(), dashcache::Error>(())
    /// ```
    #[must_use]
    pub fn with_latency_sampling(mut self, every: u32) -> Self {
        self.latency_every = every;
        self.immediate_latency_every = every;
        self
    }

    /// The metrics this wrapper records into.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The wrapped cache.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Times `fut`, counts its error if it fails (or its hit or miss, via `found`), and runs it
    /// inside a span.
    async fn observe<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T>>,
        found: impl FnOnce(&T, NamespaceMetrics<'_>),
    ) -> Result<T> {
        let ns = self.metrics.for_key(key);
        let span = tracing::debug_span!(
            "cache",
            op,
            namespace = self.metrics.keys().namespace_of(key)
        );
        // The time-stamp counter: a few nanoseconds where `Instant::now` costs tens.
        let start = sampled(self.latency_every).then(quanta::Instant::now);
        let result = fut.instrument(span).await;
        if let Some(start) = start {
            ns.record_latency(start.elapsed());
        }
        match &result {
            Ok(value) => found(value, ns),
            Err(e) => {
                ns.record(Event::Error);
                // The message, not the error: its key may hold an id that must not be logged.
                tracing::debug!(
                    op,
                    code = e.code(),
                    error = e.message(),
                    "cache operation failed"
                );
            }
        }
        result
    }

    /// Counts (and times) a `get` the inner cache answered at once, if it could.
    fn observe_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        let span = tracing::debug_span!(
            "cache",
            op = "get",
            namespace = self.metrics.keys().namespace_of(key)
        );
        let start = sampled(self.immediate_latency_every).then(quanta::Instant::now);
        let result = span.in_scope(|| self.inner.get_now(key))?;
        let ns = self.metrics.for_key(key);
        if let Some(start) = start {
            ns.record_latency(start.elapsed());
        }
        match &result {
            Ok(value) => count_read(value, ns),
            Err(e) => {
                ns.record(Event::Error);
                tracing::debug!(
                    op = "get",
                    code = e.code(),
                    error = e.message(),
                    "cache operation failed"
                );
            }
        }
        Some(result)
    }

    /// Times and counts an operation that is not a read.
    async fn write<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.observe(op, key, fut, |_, _| {}).await
    }
}

/// Whether this operation is one of the `every` to time. A per-thread tick: no shared counter
/// to contend on, and over many operations each thread samples its share.
pub(crate) fn sampled(every: u32) -> bool {
    thread_local! {
        static TICK: Cell<u32> = const { Cell::new(0) };
    }
    match every {
        0 => false,
        1 => true,
        n => TICK.with(|tick| {
            let next = tick.get().wrapping_add(1);
            tick.set(next);
            next % n == 0
        }),
    }
}

fn count_read<T>(found: &Option<T>, ns: NamespaceMetrics<'_>) {
    ns.record(if found.is_some() {
        Event::Hit
    } else {
        Event::Miss
    });
}

/// The key a batch is labelled by: its first.
fn first<'a>(keys: impl IntoIterator<Item = &'a str>) -> &'a str {
    keys.into_iter().next().unwrap_or_default()
}

#[async_trait]
impl<C: Cache> Cache for Instrumented<C> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if let Some(result) = self.observe_now(key) {
            return result;
        }
        self.observe("get", key, self.inner.get(key), count_read)
            .await
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.observe_now(key)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.write("set", key, self.inner.set(key, value, ttl))
            .await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.write(
            "set_if_absent",
            key,
            self.inner.set_if_absent(key, value, ttl),
        )
        .await
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        self.observe("take", key, self.inner.take(key), count_read)
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.write("delete", key, self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let label = first(keys.iter().copied());
        self.write("delete_many", label, self.inner.delete_many(keys))
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.write("exists", key, self.inner.exists(key)).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let label = first(keys.iter().copied());
        let metrics = &self.metrics;
        self.observe("get_many", label, self.inner.get_many(keys), |values, _| {
            for (key, value) in keys.iter().zip(values) {
                count_read(value, metrics.for_key(key));
            }
        })
        .await
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let label = first(entries.iter().map(|(k, _)| *k));
        self.write("set_many", label, self.inner.set_many(entries, ttl))
            .await
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.write(
            "increment",
            key,
            self.inner.increment(key, delta, ttl_on_create),
        )
        .await
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.write("expire", key, self.inner.expire(key, ttl)).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.write("ttl", key, self.inner.ttl(key)).await
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        self.write(
            "delete_pattern",
            pattern,
            self.inner.delete_pattern(pattern),
        )
        .await
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.write("set_add", key, self.inner.set_add(key, members, ttl))
            .await
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.write("set_remove", key, self.inner.set_remove(key, members))
            .await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.write("set_members", key, self.inner.set_members(key))
            .await
    }

    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        let label = first(
            writes
                .iter()
                .map(Write::key)
                .chain(conditions.iter().map(Condition::key)),
        );
        self.write("write_if", label, self.inner.write_if(conditions, writes))
            .await
    }

    async fn ping(&self) -> Result<Duration> {
        self.write("ping", "", self.inner.ping()).await
    }
}
