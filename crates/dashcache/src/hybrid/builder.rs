//! [`HybridCacheBuilder`]: L1's bounds, the staleness bound Δ, the tracked prefixes.

use std::sync::Arc;
use std::time::Duration;

use super::coherence::Coherence;
use super::tracking::{self, Report};
use super::{HybridCache, Inner};
use crate::coherent::Follower;
use crate::error::{Error, Result};
use crate::metrics::CacheMetrics;
use crate::vars;
use crate::{Keys, MemoryCache, RedisCache};

/// Configures a [`HybridCache`]; see [`HybridCache::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HybridCacheBuilder {
    l2: RedisCache,
    max_entries: u64,
    max_bytes: u64,
    max_ttl: Duration,
    staleness: Duration,
    prefixes: Vec<String>,
    metrics: Option<CacheMetrics>,
    follower: Option<Follower>,
}

impl HybridCacheBuilder {
    pub(super) fn new(l2: RedisCache) -> Self {
        Self {
            l2,
            max_entries: vars::CACHE_L1_MAX_ENTRIES.default,
            max_bytes: vars::CACHE_L1_MAX_BYTES.default,
            max_ttl: vars::CACHE_L1_MAX_TTL_SECS.default_duration(),
            staleness: vars::CACHE_L1_STALENESS_MS.default_duration(),
            prefixes: Vec::new(),
            metrics: None,
            follower: None,
        }
    }

    /// At most this many entries in L1 (default 100 000).
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }

    /// At most this many bytes of keys and values in L1 (default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The longest an entry stays in L1 (default 5 minutes); never longer than the key has left
    /// in Redis either.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// The staleness bound Δ (default 1 s, 10 ms to 1 hour): L1 serves a value only while the
    /// invalidation channel has proven, within Δ, that it missed no write. Smaller costs more
    /// probes (four per Δ per server) and stops L1 sooner when Redis hiccups.
    pub fn staleness(mut self, bound: Duration) -> Self {
        self.staleness = bound;
        self
    }

    /// Tracks keys starting with `prefix`, and keeps only those in L1 (every other key goes
    /// to Redis each time). Without any prefix every key is tracked — then every write to the
    /// server, counters and rate-limit buckets included, costs each instance an invalidation
    /// push: name the read-mostly namespaces instead.
    pub fn track_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    /// Tracks the declared `namespaces` of `keys` (`prefix:namespace:`), see
    /// [`track_prefix`](Self::track_prefix).
    ///
    /// # Errors
    /// `InvalidKey` for a namespace `keys` does not declare.
    pub fn track_namespaces<'n>(
        mut self,
        keys: &Keys,
        namespaces: impl IntoIterator<Item = &'n str>,
    ) -> Result<Self> {
        for namespace in namespaces {
            self.prefixes.push(keys.namespace_prefix(namespace)?);
        }
        Ok(self)
    }

    /// Makes the namespaces `follower` covers follow the database's log (see
    /// [`crate::coherent`]): L1 answers them while the log's proof is younger than Δ_db,
    /// whatever happens to Redis, and Redis is not asked for them while the log does not prove
    /// it holds every invalidation (they read as absent: the caller goes to the database).
    /// The other namespaces keep following Redis alone.
    pub fn follow(mut self, follower: Follower) -> Self {
        self.follower = Some(follower);
        self
    }

    /// Counts L1 hits, L2 hits, invalidations, bypasses and the age of L1's answers per
    /// namespace into `metrics` (hits, misses and latency come from an
    /// [`Instrumented`](crate::Instrumented) layer around the cache).
    pub fn metrics(mut self, metrics: CacheMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds the cache and starts its tracker, which connects in the background: until its
    /// first proof, every read goes to Redis.
    ///
    /// # Errors
    /// `InvalidArgument` outside a Tokio runtime, for a staleness bound outside 10 ms – 1 h,
    /// zero bounds, or overlapping prefixes (Redis refuses them).
    pub fn build(self) -> Result<HybridCache> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_argument("HybridCache must be built inside a Tokio runtime")
        })?;
        let (least, most) = vars::CACHE_L1_STALENESS_MS.duration_bounds();
        if !(least..=most).contains(&self.staleness) {
            return Err(Error::invalid_argument(format!(
                "the staleness bound must be between {least:?} and {most:?}"
            )));
        }
        if self.max_entries == 0 || self.max_bytes == 0 || self.max_ttl < Duration::from_millis(1) {
            return Err(Error::invalid_argument(
                "L1's entries, bytes and TTL must be above zero",
            ));
        }
        for (i, a) in self.prefixes.iter().enumerate() {
            for b in self.prefixes.iter().skip(i + 1) {
                if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                    return Err(Error::invalid_argument(format!(
                        "tracked prefixes {a:?} and {b:?} overlap"
                    )));
                }
            }
        }
        let l1 = MemoryCache::builder()
            .max_entries(self.max_entries)
            .max_bytes(self.max_bytes)
            .build();
        let coherence = Arc::new(Coherence::new(l1, self.staleness, self.metrics.clone()));
        let report = Arc::new(Report::default());
        let config = tracking::Config {
            prefixes: self.prefixes.clone(),
            interval: (self.staleness / 4).max(Duration::from_millis(2)),
            probe_timeout: self.staleness.max(self.l2.timeout()),
            masters_only: self.l2.is_cluster(),
        };
        let task = runtime.spawn(tracking::run(
            Arc::clone(&coherence),
            self.l2.clone(),
            config,
            Arc::clone(&report),
        ));
        let max_ttl_millis = u64::try_from(self.max_ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(HybridCache {
            inner: Arc::new(Inner {
                l2: self.l2,
                coherence,
                prefixes: self.prefixes.into_boxed_slice(),
                max_ttl_millis,
                staleness: self.staleness,
                metrics: self.metrics,
                follower: self.follower,
                report,
                task,
                #[cfg(test)]
                gate: Arc::default(),
            }),
        })
    }
}
