//! Configuring a [`CacheAside`]: [`CacheAsideBuilder`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CacheAside, Inner, lease};
use crate::cache::{Cache, Ttl};
use crate::clock::Clock;
use crate::fallback::BurstLog;
use crate::metrics::CacheMetrics;

/// Configures a [`CacheAside`]; see [`CacheAside::builder`].
#[must_use]
pub struct CacheAsideBuilder {
    pub(super) cache: Arc<dyn Cache>,
    pub(super) jitter: f64,
    pub(super) stale_for: Option<Duration>,
    pub(super) negative_ttl: Option<Ttl>,
    pub(super) loader_timeout: Option<Duration>,
    pub(super) fence: Option<Duration>,
    pub(super) lease: Option<lease::LeaseConfig>,
    pub(super) refresh_ahead: Option<f64>,
    pub(super) tag_prefix: String,
    pub(super) tag_ttl: Duration,
    pub(super) metrics: Option<CacheMetrics>,
    pub(super) count_reads: bool,
    pub(super) clock: Clock,
}

impl fmt::Debug for CacheAsideBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAsideBuilder")
            .field("jitter", &self.jitter)
            .field("stale_for", &self.stale_for)
            .field("negative_ttl", &self.negative_ttl)
            .field("loader_timeout", &self.loader_timeout)
            .field("fence", &self.fence)
            .field("lease", &self.lease)
            .field("refresh_ahead", &self.refresh_ahead)
            .finish_non_exhaustive()
    }
}

impl CacheAsideBuilder {
    /// The TTL jitter, as a fraction of the TTL each way, clamped to 0.0–0.5 (default 0.1:
    /// ±10 %).
    ///
    /// ```
    /// # let cache = std::sync::Arc::new(dashcache::MemoryCache::new());
    /// let aside = dashcache::aside::CacheAside::builder(cache).jitter(0.0).build();
    /// # let _ = aside;
    /// ```
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Keeps values this long past their TTL, to serve when a refresh fails (default: none).
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.stale_for = Some(window).filter(|w| !w.is_zero());
        self
    }

    /// Caches "not found" (a loader's `Ok(None)`) for this long in the `_optional` and bulk
    /// forms (default: not cached).
    pub fn negative_ttl(mut self, ttl: Ttl) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Gives up on a loader after this long (default: none). The stale value is served if
    /// there is one; otherwise the caller gets `E::from(LoaderTimeout)`.
    pub fn loader_timeout(mut self, timeout: Duration) -> Self {
        self.loader_timeout = Some(timeout);
        self
    }

    /// Turns fenced fills off (they are on by default): a fill is then a plain `set`, one
    /// generation key less per key and no compare step, and an invalidation racing a load can
    /// be overwritten by the load's older value until its TTL. Only for values that can never
    /// be stale in a way that matters.
    pub fn unfenced(mut self) -> Self {
        self.fence = None;
        self
    }

    /// The fence window (default 60 s, at least 2 s): how long a key's generation lives after
    /// its last change. A load that takes longer than half of it is not committed (its caller
    /// still gets the value): past that, a generation written after the load began may have
    /// expired, and the fence could no longer tell.
    pub fn fence_window(mut self, window: Duration) -> Self {
        if self.fence.is_some() {
            self.fence = Some(window.max(Duration::from_secs(2)));
        }
        self
    }

    /// Single-flight across processes (off by default): a miss first takes a lease on its key
    /// (a companion key set only when absent, living `lease_ttl`), and a process that misses
    /// while another holds the lease waits up to `max_wait` for that process's value instead
    /// of loading too. The wait ends early when the value arrives or the lease is given back
    /// without one (the holder's load failed: the waiter takes the lease in turn); at
    /// `max_wait`, or when the cache fails, it loads by itself (fail-open). A holder that dies
    /// holds the key for at most `lease_ttl`. Fills stay fenced, so a holder whose lease
    /// expired cannot commit over a newer generation.
    ///
    /// Costs a miss one conditional write (and waiters a few small reads while they wait);
    /// hits are unchanged. `lease_ttl` is at least 100 ms. A waiter therefore loads after at
    /// most `max_wait`, or `lease_ttl` and one poll (8 ms) when the holder died, whichever
    /// comes first.
    pub fn leases(mut self, lease_ttl: Duration, max_wait: Duration) -> Self {
        self.lease = Some(lease::LeaseConfig {
            ttl: lease_ttl.max(Duration::from_millis(100)),
            wait: max_wait,
        });
        self
    }

    /// Refresh-ahead (off by default): a hit in the last `fraction` of its TTL (0.0–0.9; e.g.
    /// 0.2 for the last fifth) is answered at once and reloads the key in the background, so
    /// a key read steadily never expires into a miss. One refresh per key per process at a
    /// time; with [`leases`](Self::leases), one across every process. The refresh is a fenced
    /// fill: an invalidation during it wins. A failed refresh leaves the cached value to its
    /// TTL. Tagged lookups do not refresh ahead; bulk lookups do through
    /// [`get_many_or_load_refreshing`](CacheAside::get_many_or_load_refreshing).
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(fraction)
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| f.min(0.9));
        self
    }

    /// What tag version keys start with (default `"dashcache"`; give it the service's key
    /// prefix): `<prefix>:_tag:{<tag>}`.
    pub fn tag_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.tag_prefix = prefix.into();
        self
    }

    /// How long a tag's version lives after its last change (default 1 day, at least 1 s).
    /// When it expires, the values under the tag are reloaded once.
    pub fn tag_ttl(mut self, ttl: Duration) -> Self {
        self.tag_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Counts every outcome into `metrics`: hits, misses, stale, bypassed, and cache errors.
    pub fn metrics(mut self, metrics: CacheMetrics) -> Self {
        self.metrics = Some(metrics);
        self.count_reads = true;
        self
    }

    /// For a cache wrapped in [`Instrumented`](crate::Instrumented) with these same `metrics`,
    /// which already counts hits, misses and failed operations: counts only what it cannot
    /// see (stale, bypassed, and undecodable values), so nothing is counted twice.
    ///
    /// The instrumented counts are of cache reads, not lookups: the leader of a single-flight
    /// reads the key once more before calling the loader (so a load that just finished is not
    /// repeated), and that read is counted too.
    pub fn metrics_over_instrumented(mut self, metrics: CacheMetrics) -> Self {
        self.metrics = Some(metrics);
        self.count_reads = false;
        self
    }

    /// The clock freshness is judged on (default: the system's). Freshness is stored with the
    /// value as calendar time, so every process sharing the cache must agree on it.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds it.
    pub fn build(self) -> CacheAside {
        CacheAside {
            inner: Arc::new(Inner {
                cache: self.cache,
                jitter: self.jitter,
                stale_for: self.stale_for,
                negative_ttl: self.negative_ttl,
                loader_timeout: self.loader_timeout,
                fence: self.fence,
                lease: self.lease,
                refresh_ahead: self.refresh_ahead,
                tag_prefix: self.tag_prefix,
                tag_ttl: self.tag_ttl,
                metrics: self.metrics,
                count_reads: self.count_reads,
                clock: self.clock,
                flights: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                next_flight: AtomicU64::new(0),
                warnings: BurstLog::new(),
            }),
        }
    }
}
