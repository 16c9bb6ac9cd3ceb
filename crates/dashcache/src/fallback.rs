//! Fail-open bookkeeping: when a pattern serves from its source of truth because the cache
//! failed, [`Fallbacks`] logs one warning per burst (not one per request) and counts every
//! fallback in the namespace's metrics, so an outage is visible without flooding the logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::error::Error;
use crate::metrics::{CacheMetrics, Event};

/// Where a pattern records its fallbacks. Cheap to clone; clones share the burst window.
///
/// ```
/// use dashcache::{Error, ErrorKind, fallback::Fallbacks};
///
/// let fallbacks = Fallbacks::new("session lookup");
/// let err = Error::new(ErrorKind::Timeout, "no answer");
/// fallbacks.record("app:session:x", &err); // one warning now, then one per 10 s at most
/// ```
#[derive(Clone)]
pub struct Fallbacks {
    inner: Arc<FallbacksInner>,
}

struct FallbacksInner {
    what: &'static str,
    metrics: Option<CacheMetrics>,
    log: BurstLog,
}

impl std::fmt::Debug for Fallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallbacks")
            .field("what", &self.inner.what)
            .field("counted", &self.inner.metrics.is_some())
            .finish()
    }
}

impl Fallbacks {
    /// Fallbacks of `what` (a short description for the log line, such as "permission
    /// check"), logged but not counted.
    pub fn new(what: &'static str) -> Self {
        Self {
            inner: Arc::new(FallbacksInner {
                what,
                metrics: None,
                log: BurstLog::new(),
            }),
        }
    }

    /// Counts each fallback as `bypassed` in `metrics`, in the namespace of its key.
    #[must_use]
    pub fn with_metrics(self, metrics: CacheMetrics) -> Self {
        Self {
            inner: Arc::new(FallbacksInner {
                what: self.inner.what,
                metrics: Some(metrics),
                log: BurstLog::new(),
            }),
        }
    }

    /// Records one fallback after `error` on `key`. The log line names the key's namespace
    /// and the error's code and message, never the key itself: keys can carry ids that must
    /// not reach a log.
    pub fn record(&self, key: &str, error: &Error) {
        let namespace = match &self.inner.metrics {
            Some(metrics) => {
                metrics.record(key, Event::Bypassed);
                metrics.keys().namespace_of(key)
            }
            None => "",
        };
        if let Some(suppressed) = self.inner.log.should_log() {
            tracing::warn!(
                namespace,
                code = error.code(),
                error = error.message(),
                suppressed,
                "{} fell back to the source of truth: the cache failed",
                self.inner.what
            );
        }
    }
}

/// Lets one warning through per window (10 s) and counts the rest, so a cache outage under
/// load — or an attacker's flood — produces a log line every few seconds, not one per request.
///
/// ```
/// let log = dashcache::fallback::BurstLog::new();
/// if let Some(suppressed) = log.should_log() {
///     tracing::warn!(suppressed, "something keeps failing");
/// }
/// assert_eq!(log.should_log(), None);
/// ```
#[derive(Debug)]
pub struct BurstLog {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last warning; `u64::MAX` before the first.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl BurstLog {
    const WINDOW_MS: u64 = 10_000;

    /// A log that lets the next warning through.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(warnings suppressed since the last one)` when this one should be logged.
    pub fn should_log(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= Self::WINDOW_MS;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for BurstLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_log_lets_one_through_per_window() {
        let log = BurstLog::new();
        assert_eq!(log.should_log(), Some(0));
        for _ in 0..100 {
            assert_eq!(log.should_log(), None);
        }
        log.last.store(0, Ordering::Relaxed);
        // Pretend the window passed.
        let log2 = BurstLog {
            epoch: Instant::now() - Duration::from_millis(BurstLog::WINDOW_MS + 1),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(100),
        };
        assert_eq!(log2.should_log(), Some(100));
    }
}
