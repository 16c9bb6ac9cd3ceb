//! [`BurstLog`]: one warning per burst of failures, not one per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lets one warning through per window and counts the rest, so a cache outage under load
/// produces a log line every few seconds, not one per request.
pub(crate) struct BurstLog {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last warning; `u64::MAX` before the first.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl BurstLog {
    const WINDOW_MS: u64 = 10_000;

    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(warnings suppressed since the last one)` when this one should be logged.
    pub(crate) fn should_log(&self) -> Option<u64> {
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
