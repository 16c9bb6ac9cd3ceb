//! [`Clock`]: the time every time-dependent part reads, injectable so tests advance it instead
//! of sleeping.
//!
//! Two readings: [`now`](Clock::now), monotonic, for what measures durations (TTLs in memory,
//! token-bucket refills) — a clock step on the host cannot stall or rush them; and
//! [`wall`](Clock::wall), calendar time, for what is stored and compared across processes
//! (session expiry, cache-aside freshness).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The system's clocks, or a manual clock that moves only when told.
///
/// Cheap to clone; clones of a manual clock share its time.
///
/// ```
/// use std::time::Duration;
/// use dashcache::Clock;
///
/// let clock = Clock::manual();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now() - start, Duration::from_secs(60));
/// ```
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

struct Manual {
    instant: Instant,
    wall: SystemTime,
    elapsed_nanos: AtomicU64,
}

impl Clock {
    /// The system's clocks (the default).
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that starts at the current time and only moves by [`advance`](Self::advance).
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(Manual {
                instant: Instant::now(),
                wall: SystemTime::now(),
                elapsed_nanos: AtomicU64::new(0),
            })),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Moves a manual clock forward by `by` (both readings); the system clock cannot be moved,
    /// so on it this does nothing.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            manual.elapsed_nanos.fetch_add(nanos, Ordering::AcqRel);
        }
    }

    /// Monotonic time, for durations.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => manual.instant + manual.elapsed(),
        }
    }

    /// Calendar time, for what is stored or compared across processes.
    pub fn wall(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            Some(manual) => manual.wall + manual.elapsed(),
        }
    }

    /// [`wall`](Self::wall) as milliseconds since the Unix epoch (0 before it).
    pub fn unix_millis(&self) -> u64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A point on a [`Clock`]'s monotonic time, read cheaply: on the system clock the processor's
/// time-stamp counter (a few nanoseconds, where `Instant::now` costs a system call's worth).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tick {
    System(quanta::Instant),
    Manual(Duration),
}

impl Clock {
    /// The monotonic time now, for [`since`](Self::since).
    #[inline]
    pub(crate) fn tick(&self) -> Tick {
        match &self.manual {
            None => Tick::System(quanta::Instant::now()),
            Some(manual) => Tick::Manual(manual.elapsed()),
        }
    }

    /// The time since `earlier` (a tick of this clock; zero for a tick of another kind).
    #[inline]
    pub(crate) fn since(&self, earlier: Tick) -> Duration {
        match (self.tick(), earlier) {
            (Tick::System(now), Tick::System(then)) => now.saturating_duration_since(then),
            (Tick::Manual(now), Tick::Manual(then)) => now.saturating_sub(then),
            _ => Duration::ZERO,
        }
    }
}

impl Manual {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(manual) => write!(f, "Clock::manual(+{:?})", manual.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual();
        let (now, wall) = (clock.now(), clock.wall());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), now);
        let other = clock.clone();
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - now, Duration::from_millis(1500));
        assert_eq!(
            clock.wall().duration_since(wall).ok(),
            Some(Duration::from_millis(1500))
        );
        assert!(format!("{clock:?}").contains("1.5s"));
    }

    #[test]
    fn the_system_clock_follows_real_time() {
        let clock = Clock::system();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() - before < Duration::from_secs(60));
        assert!(!clock.is_manual());
        assert!(clock.unix_millis() > 1_600_000_000_000);
    }
}
