//! A circuit breaker for one provider: after `failures` consecutive failures it sheds calls
//! for `open_for`, then lets one probe through; the probe's result closes or reopens it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub(crate) fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            failures: failures.max(1),
            open_for,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a call may go out now (while half-open, only the one probe).
    pub(crate) fn allow(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        match s.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if s.probing => false,
            Some(_) => {
                s.probing = true;
                true
            }
        }
    }

    pub(crate) fn record(&self, healthy: bool, now: Instant) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.probing = false;
        if healthy {
            s.consecutive = 0;
            s.open_until = None;
        } else {
            s.consecutive = s.consecutive.saturating_add(1);
            if s.consecutive >= self.failures || s.open_until.is_some() {
                s.open_until = Some(now + self.open_for);
            }
        }
    }

    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.open_until)
            .is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_then_one_probe_decides() {
        let b = Breaker::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.allow(t0));
            b.record(false, t0);
        }
        assert!(!b.allow(t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_millis(1001);
        assert!(b.allow(later), "the probe");
        assert!(!b.allow(later), "only one probe at a time");
        b.record(false, later);
        assert!(b.is_open(later + Duration::from_millis(500)), "reopened");
        let again = later + Duration::from_millis(1001);
        assert!(b.allow(again));
        b.record(true, again);
        assert!(b.allow(again) && b.allow(again), "closed");
    }
}
