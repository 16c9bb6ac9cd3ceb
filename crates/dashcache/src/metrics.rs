//! [`CacheMetrics`]: per-namespace counters and latency, lock-free on the hot path, exported
//! through the `metrics` facade.
//!
//! Namespaces come from a [`Keys`] declaration, so the label set is bounded: a key outside
//! every declared namespace is counted under [`OTHER_NAMESPACE`], whatever it looks like.
//!
//! Recording is a few relaxed atomic increments into fixed slots. Export is separate:
//! [`CacheMetrics::publish`] writes the current totals to whatever `metrics` recorder is
//! installed (a Prometheus exporter, say), so the hot path never pays for the recorder's label
//! lookups. Call it before rendering (e.g. in a `/metrics` handler), or run
//! [`CacheMetrics::publish_every`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::key::{Keys, OTHER_NAMESPACE};

/// Upper bounds of the latency buckets, in microseconds (the last bucket is unbounded).
const BUCKETS_MICROS: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

/// Upper bounds of the buckets of the age of values served from a hybrid cache's L1, in
/// milliseconds (the last bucket is unbounded).
const AGE_BUCKETS_MILLIS: [u64; 8] = [
    10, 100, 1_000, 10_000, 60_000, 300_000, 1_800_000, 3_600_000,
];

/// What happened to one lookup or operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A read found a value.
    Hit,
    /// A read found nothing.
    Miss,
    /// A cache-aside lookup served a value past its TTL because the refresh failed.
    Stale,
    /// A cache-aside lookup went straight to the source of truth because the cache failed.
    Bypassed,
    /// A cache operation failed (transport, timeout, breaker, corrupt value, bad input).
    Error,
    /// A hybrid cache answered a read from its in-process L1, with no network.
    L1Hit,
    /// A hybrid cache's L1 did not have the value and its L2 (Redis) did.
    L2Hit,
    /// A hybrid cache heard from Redis that a key changed, and dropped it from L1.
    Invalidation,
    /// A hybrid cache read from L2 although L1 might have had the value: its invalidation
    /// channel had not proven itself alive within the staleness bound.
    L1Bypassed,
    /// A cache-aside fill was committed: its generation was still the latest.
    FillCommitted,
    /// A cache-aside fill was refused: its key was invalidated (or filled) after its load
    /// began, so its value may be stale. Its caller still got the value.
    FillRejected,
    /// A cache-aside miss took the key's cross-process lease: this process loads it.
    LeaseWon,
    /// A cache-aside miss waited for another process's load and got its value.
    WaitSatisfied,
    /// A cache-aside miss waited for another process's load in vain (it took too long, failed
    /// or its holder died) and loaded the value itself.
    WaitTimedOut,
    /// A cache-aside hit near the end of its TTL started a refresh in the background.
    RefreshedAhead,
}

/// Per-namespace counters and latency. Cheap to clone: clones share the counters.
///
/// ```
/// use dashcache::{Keys, metrics::{CacheMetrics, Event}};
///
/// let keys = Keys::new("app", ["user", "session"])?;
/// let metrics = CacheMetrics::new(&keys);
/// metrics.record("app:user:1", Event::Hit);
/// metrics.record("app:user:2", Event::Miss);
/// metrics.record("app:user:3", Event::Hit);
/// let user = metrics.snapshot("user");
/// assert_eq!((user.hits, user.misses), (2, 1));
/// assert!((user.hit_rate() - 2.0 / 3.0).abs() < 1e-9);
/// # Ok::<(), dashcache::Error>(())
/// ```
#[derive(Clone)]
pub struct CacheMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    /// One slot per declared namespace, in declaration order, then one for `other`.
    slots: Box<[Slot]>,
    names: Box<[String]>,
}

#[derive(Default)]
struct Slot {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    bypassed: AtomicU64,
    errors: AtomicU64,
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    invalidations: AtomicU64,
    l1_bypassed: AtomicU64,
    fills_committed: AtomicU64,
    fills_rejected: AtomicU64,
    leases_won: AtomicU64,
    waits_satisfied: AtomicU64,
    waits_timed_out: AtomicU64,
    refreshed_ahead: AtomicU64,
    /// Sampled ages of values served from a hybrid L1, per bucket of `AGE_BUCKETS_MILLIS`.
    l1_age_buckets: [AtomicU64; AGE_BUCKETS_MILLIS.len() + 1],
    l1_age_millis: AtomicU64,
    latency_nanos: AtomicU64,
    /// Timed operations per latency bucket, the last for those above every bound: their sum is
    /// the number timed (no counter of its own, one atomic add less per operation).
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("namespaces", &self.inner.names)
            .field("total", &self.total())
            .finish()
    }
}

/// A point-in-time copy of the counters of one namespace, or of all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Stale values served by cache-aside after a failed refresh.
    pub stale: u64,
    /// Lookups (cache-aside, permission checks, session reads) that bypassed a failing cache.
    pub bypassed: u64,
    /// Failed cache operations (never counted as misses).
    pub errors: u64,
    /// Reads a hybrid cache answered from its in-process L1.
    pub l1_hits: u64,
    /// Reads a hybrid cache's L1 missed and its L2 answered with a value.
    pub l2_hits: u64,
    /// Keys a hybrid cache dropped from L1 because Redis said they changed.
    pub invalidations: u64,
    /// Reads that skipped L1 because its invalidation channel was not proven alive.
    pub l1_bypassed: u64,
    /// Cache-aside fills committed.
    pub fills_committed: u64,
    /// Cache-aside fills refused because their key was invalidated after their load began.
    pub fills_rejected: u64,
    /// Cache-aside misses that took the key's cross-process lease and loaded it.
    pub leases_won: u64,
    /// Cache-aside misses that waited for another process's load and got its value.
    pub waits_satisfied: u64,
    /// Cache-aside misses that waited for another process's load in vain and loaded
    /// themselves.
    pub waits_timed_out: u64,
    /// Cache-aside hits near the end of their TTL that started a refresh in the background.
    pub refreshed_ahead: u64,
    /// Sampled values served from L1 whose age was measured.
    pub l1_age_samples: u64,
    /// Their total age (time since each was read from L2).
    pub l1_age_total: Duration,
    /// Timed operations.
    pub operations: u64,
    /// Total time of the timed operations.
    pub latency_total: Duration,
}

impl Stats {
    /// Hits over all answered lookups (`hits / (hits + misses + stale)`); 0 when there were
    /// none. Errors and bypasses are not lookups the cache answered, so they do not dilute it.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses + self.stale;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }

    /// Mean age of the sampled values served from a hybrid L1.
    pub fn mean_l1_age(&self) -> Option<Duration> {
        u32::try_from(self.l1_age_samples)
            .ok()
            .filter(|n| *n > 0)
            .map(|n| self.l1_age_total / n)
    }

    /// Mean latency of the timed operations.
    pub fn mean_latency(&self) -> Option<Duration> {
        u32::try_from(self.operations)
            .ok()
            .filter(|n| *n > 0)
            .map(|n| self.latency_total / n)
    }

    fn add(&mut self, other: &Stats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.stale += other.stale;
        self.bypassed += other.bypassed;
        self.errors += other.errors;
        self.l1_hits += other.l1_hits;
        self.l2_hits += other.l2_hits;
        self.invalidations += other.invalidations;
        self.l1_bypassed += other.l1_bypassed;
        self.fills_committed += other.fills_committed;
        self.fills_rejected += other.fills_rejected;
        self.leases_won += other.leases_won;
        self.waits_satisfied += other.waits_satisfied;
        self.waits_timed_out += other.waits_timed_out;
        self.refreshed_ahead += other.refreshed_ahead;
        self.l1_age_samples += other.l1_age_samples;
        self.l1_age_total += other.l1_age_total;
        self.operations += other.operations;
        self.latency_total += other.latency_total;
    }
}

impl Slot {
    fn stats(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            l1_hits: self.l1_hits.load(Ordering::Relaxed),
            l2_hits: self.l2_hits.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            l1_bypassed: self.l1_bypassed.load(Ordering::Relaxed),
            fills_committed: self.fills_committed.load(Ordering::Relaxed),
            fills_rejected: self.fills_rejected.load(Ordering::Relaxed),
            leases_won: self.leases_won.load(Ordering::Relaxed),
            waits_satisfied: self.waits_satisfied.load(Ordering::Relaxed),
            waits_timed_out: self.waits_timed_out.load(Ordering::Relaxed),
            refreshed_ahead: self.refreshed_ahead.load(Ordering::Relaxed),
            l1_age_samples: self
                .l1_age_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .sum(),
            l1_age_total: Duration::from_millis(self.l1_age_millis.load(Ordering::Relaxed)),
            operations: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum(),
            latency_total: Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed)),
        }
    }
}

impl CacheMetrics {
    /// Counters for every namespace `keys` declares, plus `other`.
    pub fn new(keys: &Keys) -> Self {
        let names: Box<[String]> = keys
            .namespaces()
            .chain(std::iter::once(OTHER_NAMESPACE))
            .map(str::to_owned)
            .collect();
        let slots = names.iter().map(|_| Slot::default()).collect();
        Self {
            inner: Arc::new(Inner {
                keys: keys.clone(),
                slots,
                names,
            }),
        }
    }

    /// The key declarations these metrics label by.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The counters of the namespace `key` belongs to: look it up once, record several
    /// things.
    pub fn for_key(&self, key: &str) -> NamespaceMetrics<'_> {
        let last = self.inner.slots.len() - 1;
        let i = self.inner.keys.namespace_index(key).unwrap_or(last);
        NamespaceMetrics {
            slot: &self.inner.slots[i],
        }
    }

    /// Counts `event` for the namespace of `key`.
    pub fn record(&self, key: &str, event: Event) {
        self.for_key(key).record_n(event, 1);
    }

    /// Counts `n` events for the namespace of `key` (a batch read, say).
    pub fn record_n(&self, key: &str, event: Event, n: u64) {
        self.for_key(key).record_n(event, n);
    }

    /// Records how long one operation on `key` took.
    pub fn record_latency(&self, key: &str, took: Duration) {
        self.for_key(key).record_latency(took);
    }

    /// The counters of one namespace (`"other"` for undeclared keys); all zero for an unknown
    /// name.
    pub fn snapshot(&self, namespace: &str) -> Stats {
        self.inner
            .names
            .iter()
            .position(|n| n == namespace)
            .map(|i| self.inner.slots[i].stats())
            .unwrap_or_default()
    }

    /// Every namespace's counters, in declaration order, `other` last.
    pub fn snapshot_all(&self) -> Vec<(String, Stats)> {
        self.inner
            .names
            .iter()
            .zip(self.inner.slots.iter())
            .map(|(name, slot)| (name.clone(), slot.stats()))
            .collect()
    }

    /// The counters of all namespaces together.
    pub fn total(&self) -> Stats {
        let mut total = Stats::default();
        for slot in self.inner.slots.iter() {
            total.add(&slot.stats());
        }
        total
    }

    /// Writes the current totals to the installed `metrics` recorder:
    /// `dashcache_cache_{hits,misses,stale,bypassed,errors}_total{namespace}`, for a hybrid
    /// cache `dashcache_cache_{l1_hits,l2_hits,invalidations,l1_bypassed}_total`, and for
    /// cache-aside `dashcache_cache_{fills_committed,fills_rejected,leases_won,…}_total`. The
    /// histograms come from [`render_histograms`](Self::render_histograms).
    pub fn publish(&self) {
        for (name, slot) in self.inner.names.iter().zip(self.inner.slots.iter()) {
            let stats = slot.stats();
            let ns = name.clone();
            for (metric, help, value) in [
                (
                    "dashcache_cache_hits_total",
                    "Reads answered by the cache.",
                    stats.hits,
                ),
                (
                    "dashcache_cache_misses_total",
                    "Reads the cache did not have.",
                    stats.misses,
                ),
                (
                    "dashcache_cache_stale_total",
                    "Stale values served while the source failed or was slow.",
                    stats.stale,
                ),
                (
                    "dashcache_cache_bypassed_total",
                    "Operations that went to the source because the cache failed.",
                    stats.bypassed,
                ),
                (
                    "dashcache_cache_errors_total",
                    "Cache operations that failed.",
                    stats.errors,
                ),
                (
                    "dashcache_cache_l1_hits_total",
                    "Reads a hybrid cache answered from its in-process L1.",
                    stats.l1_hits,
                ),
                (
                    "dashcache_cache_l2_hits_total",
                    "Reads a hybrid cache answered from Redis.",
                    stats.l2_hits,
                ),
                (
                    "dashcache_cache_invalidations_total",
                    "L1 entries dropped on an invalidation from Redis.",
                    stats.invalidations,
                ),
                (
                    "dashcache_cache_l1_bypassed_total",
                    "Reads a hybrid cache sent to Redis because L1 could not prove itself fresh.",
                    stats.l1_bypassed,
                ),
                (
                    "dashcache_cache_fills_committed_total",
                    "Cache-aside fills stored.",
                    stats.fills_committed,
                ),
                (
                    "dashcache_cache_fills_rejected_total",
                    "Cache-aside fills refused because the key was invalidated during the load.",
                    stats.fills_rejected,
                ),
                (
                    "dashcache_cache_leases_won_total",
                    "Loads this process ran under a lease (across processes).",
                    stats.leases_won,
                ),
                (
                    "dashcache_cache_waits_satisfied_total",
                    "Lookups that waited on another's load and got its value.",
                    stats.waits_satisfied,
                ),
                (
                    "dashcache_cache_waits_timed_out_total",
                    "Lookups that waited on another's load and gave up.",
                    stats.waits_timed_out,
                ),
                (
                    "dashcache_cache_refreshed_ahead_total",
                    "Values refreshed before they expired.",
                    stats.refreshed_ahead,
                ),
            ] {
                metrics::describe_counter!(metric, help);
                metrics::counter!(metric, "namespace" => ns.clone()).absolute(value);
            }
        }
    }

    /// The two histograms in the Prometheus text format, each one family with `# HELP`,
    /// `# TYPE … histogram`, its buckets in order, `_sum` and `_count` per namespace: the
    /// operation latency `dashcache_cache_operation_duration_seconds`, and (once a hybrid
    /// cache served from L1) `dashcache_cache_l1_age_seconds`. Append it to an exporter's
    /// output: the `metrics` facade cannot carry histograms aggregated here.
    pub fn render_histograms(&self) -> String {
        let mut out = String::new();
        let latency: Vec<(String, Vec<u64>, f64)> = self.families(|slot| {
            let counts = load_all(&slot.buckets);
            let sum = Duration::from_nanos(slot.latency_nanos.load(Ordering::Relaxed));
            (counts, sum.as_secs_f64())
        });
        let bounds: Vec<f64> = BUCKETS_MICROS.iter().map(|b| *b as f64 / 1e6).collect();
        write_histogram(
            &mut out,
            "dashcache_cache_operation_duration_seconds",
            "How long cache operations took, by key namespace.",
            &bounds,
            &latency,
        );
        let ages = self.families(|slot| {
            let counts = load_all(&slot.l1_age_buckets);
            let sum = Duration::from_millis(slot.l1_age_millis.load(Ordering::Relaxed));
            (counts, sum.as_secs_f64())
        });
        if ages
            .iter()
            .any(|(_, counts, _)| counts.iter().any(|c| *c > 0))
        {
            let bounds: Vec<f64> = AGE_BUCKETS_MILLIS.iter().map(|b| *b as f64 / 1e3).collect();
            write_histogram(
                &mut out,
                "dashcache_cache_l1_age_seconds",
                "Age of the values a hybrid cache served from L1 (time since read from L2).",
                &bounds,
                &ages,
            );
        }
        out
    }

    fn families(&self, read: impl Fn(&Slot) -> (Vec<u64>, f64)) -> Vec<(String, Vec<u64>, f64)> {
        self.inner
            .names
            .iter()
            .zip(self.inner.slots.iter())
            .map(|(name, slot)| {
                let (counts, sum) = read(slot);
                (name.clone(), counts, sum)
            })
            .collect()
    }

    /// Publishes every `interval` from a background task, for exporters that scrape on their
    /// own schedule. The task stops when the returned guard is dropped.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns a task).
    #[must_use = "the publisher stops when the guard is dropped"]
    pub fn publish_every(&self, interval: Duration) -> PublishGuard {
        let metrics = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                metrics.publish();
            }
        });
        PublishGuard(task)
    }
}

/// The counters of one namespace; see [`CacheMetrics::for_key`].
#[derive(Clone, Copy)]
pub struct NamespaceMetrics<'a> {
    slot: &'a Slot,
}

impl std::fmt::Debug for NamespaceMetrics<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NamespaceMetrics")
            .field(&self.slot.stats())
            .finish()
    }
}

impl NamespaceMetrics<'_> {
    /// Counts one `event`.
    pub fn record(self, event: Event) {
        self.record_n(event, 1);
    }

    /// Counts `n` events.
    pub fn record_n(self, event: Event, n: u64) {
        let slot = self.slot;
        let counter = match event {
            Event::Hit => &slot.hits,
            Event::Miss => &slot.misses,
            Event::Stale => &slot.stale,
            Event::Bypassed => &slot.bypassed,
            Event::Error => &slot.errors,
            Event::L1Hit => &slot.l1_hits,
            Event::L2Hit => &slot.l2_hits,
            Event::Invalidation => &slot.invalidations,
            Event::L1Bypassed => &slot.l1_bypassed,
            Event::FillCommitted => &slot.fills_committed,
            Event::FillRejected => &slot.fills_rejected,
            Event::LeaseWon => &slot.leases_won,
            Event::WaitSatisfied => &slot.waits_satisfied,
            Event::WaitTimedOut => &slot.waits_timed_out,
            Event::RefreshedAhead => &slot.refreshed_ahead,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the age of a value a hybrid cache served from L1 (the time since it was read
    /// from L2).
    pub fn record_l1_age(self, age: Duration) {
        let slot = self.slot;
        let millis = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        slot.l1_age_millis.fetch_add(millis, Ordering::Relaxed);
        let i = AGE_BUCKETS_MILLIS
            .iter()
            .position(|bound| millis <= *bound)
            .unwrap_or(AGE_BUCKETS_MILLIS.len());
        if let Some(bucket) = slot.l1_age_buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how long one operation took.
    pub fn record_latency(self, took: Duration) {
        let slot = self.slot;
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        slot.latency_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let i = BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BUCKETS_MICROS.len());
        if let Some(bucket) = slot.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stops the background publisher of [`CacheMetrics::publish_every`] when dropped.
#[derive(Debug)]
pub struct PublishGuard(tokio::task::JoinHandle<()>);

impl Drop for PublishGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn load_all(counters: &[AtomicU64]) -> Vec<u64> {
    counters.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// One histogram family: `counts[i]` observations fell in bucket `i` (the last one past every
/// bound). Cumulative counts come from one reading, so `+Inf` and `_count` always agree.
fn write_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: &[(String, Vec<u64>, f64)],
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (namespace, counts, sum) in series {
        let ns = escape_label(namespace);
        let mut cumulative = 0u64;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{namespace=\"{ns}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += counts.iter().skip(bounds.len()).sum::<u64>();
        let _ = writeln!(
            out,
            "{name}_bucket{{namespace=\"{ns}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "{name}_sum{{namespace=\"{ns}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{namespace=\"{ns}\"}} {cumulative}");
    }
}

/// A label value as the text format wants it: `\\`, `\"` and `\n` escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> CacheMetrics {
        CacheMetrics::new(&Keys::new("app", ["user", "session"]).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn namespaces_are_independent_and_unknown_keys_go_to_other() {
        let m = metrics();
        m.record("app:user:1", Event::Hit);
        m.record("app:session:1", Event::Miss);
        m.record("app:nope:1", Event::Error);
        m.record("elsewhere", Event::Error);
        assert_eq!(m.snapshot("user").hits, 1);
        assert_eq!(m.snapshot("user").misses, 0);
        assert_eq!(m.snapshot("session").misses, 1);
        assert_eq!(m.snapshot("other").errors, 2);
        assert_eq!(m.snapshot("unknown"), Stats::default());
        let total = m.total();
        assert_eq!((total.hits, total.misses, total.errors), (1, 1, 2));
    }

    #[test]
    fn hit_rate_ignores_errors_and_bypasses() {
        let m = metrics();
        m.record_n("app:user:1", Event::Hit, 3);
        m.record("app:user:1", Event::Miss);
        m.record_n("app:user:1", Event::Error, 10);
        m.record_n("app:user:1", Event::Bypassed, 10);
        assert!((m.snapshot("user").hit_rate() - 0.75).abs() < 1e-12);
        assert_eq!(Stats::default().hit_rate(), 0.0);
    }

    #[test]
    fn hybrid_tiers_are_counted_apart_and_ages_bucketed() {
        let m = metrics();
        m.record_n("app:user:1", Event::L1Hit, 3);
        m.record("app:user:1", Event::L2Hit);
        m.record("app:user:2", Event::Invalidation);
        m.record("app:session:1", Event::L1Bypassed);
        m.for_key("app:user:1")
            .record_l1_age(Duration::from_millis(5));
        m.for_key("app:user:1")
            .record_l1_age(Duration::from_millis(2_000));
        let user = m.snapshot("user");
        assert_eq!(
            (user.l1_hits, user.l2_hits, user.invalidations, user.hits),
            (3, 1, 1, 0)
        );
        assert_eq!(m.snapshot("session").l1_bypassed, 1);
        assert_eq!(user.l1_age_samples, 2);
        assert_eq!(user.mean_l1_age(), Some(Duration::from_micros(1_002_500)));
        let slot = &m.inner.slots[0];
        assert_eq!(
            slot.l1_age_buckets[0].load(Ordering::Relaxed),
            1,
            "5 ms ≤ 10 ms"
        );
        assert_eq!(
            slot.l1_age_buckets[3].load(Ordering::Relaxed),
            1,
            "2 s ≤ 10 s"
        );
        assert_eq!(m.total().l1_hits, 3);
    }

    #[test]
    fn latency_is_summed_and_bucketed() {
        let m = metrics();
        m.record_latency("app:user:1", Duration::from_micros(40));
        m.record_latency("app:user:1", Duration::from_micros(160));
        let s = m.snapshot("user");
        assert_eq!(s.operations, 2);
        assert_eq!(s.mean_latency(), Some(Duration::from_micros(100)));
        let slot = &m.inner.slots[0];
        assert_eq!(slot.buckets[2].load(Ordering::Relaxed), 1, "40 µs ≤ 50 µs");
        assert_eq!(
            slot.buckets[4].load(Ordering::Relaxed),
            1,
            "160 µs ≤ 250 µs"
        );
    }
}
