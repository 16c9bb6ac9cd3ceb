//! The token bucket algorithm: [`decide`] one check from a bucket's state.
//!
//! A bucket holds up to `capacity` tokens and gains `refill` tokens every `per`, continuously.
//! A new bucket starts full. A check takes `cost` tokens if it has them; a denied check takes
//! nothing. To stay exact, tokens are counted in units of `1 / per_ms`: a token is `per_ms`
//! units and each millisecond adds `refill` units, so every quantity is an integer and
//! `retry_after` is exact to the millisecond.
//!
//! The arithmetic is done in `f64` in the same order as the Redis script's Lua numbers, so the
//! two give the same decision for the same history; `capacity × per_ms` is bounded by 2⁵³,
//! where every integer is exact.

use std::time::Duration;

use super::rule::Spec;

/// The answer of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The bucket size (`RateLimit-Limit`).
    pub limit: u64,
    /// Whole tokens left after this check (`RateLimit-Remaining`).
    pub remaining: u64,
    /// When denied, how long until `cost` tokens exist (exact to the ms, rounded up).
    pub retry_after: Duration,
    /// How long until the bucket is full again (rounded up to the ms).
    pub reset_after: Duration,
}

/// A bucket's state: units held and when they were counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct State {
    pub(crate) units: f64,
    pub(crate) at_ms: u64,
}

/// One step of the algorithm: the decision and the state to keep. Mirrors the Redis script
/// operation for operation (see the module docs).
#[inline]
pub(crate) fn decide(
    state: Option<State>,
    spec: Spec,
    now_ms: u64,
    consume: bool,
) -> (Decision, State) {
    let capacity = spec.capacity as f64;
    let refill = spec.refill as f64;
    let per = spec.per_ms as f64;
    let full = capacity * per;
    let (mut units, mut at) = match state {
        Some(s) => (s.units, s.at_ms),
        None => (full, now_ms),
    };
    if now_ms > at {
        units = full.min(units + (now_ms - at) as f64 * refill);
        at = now_ms;
    }
    let need = spec.cost as f64 * per;
    let allowed = units >= need;
    if allowed && consume {
        units -= need;
    }
    let retry = if allowed {
        0.0
    } else {
        ((need - units) / refill).ceil()
    };
    let reset = ((full - units) / refill).ceil();
    let decision = Decision {
        allowed,
        limit: spec.capacity,
        remaining: (units / per).floor() as u64,
        retry_after: Duration::from_millis(retry as u64),
        reset_after: Duration::from_millis(reset as u64),
    };
    (decision, State { units, at_ms: at })
}

/// Idle buckets are kept until they would have refilled, plus this margin (as on Redis).
pub(crate) const IDLE_MARGIN: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::rule::spec;

    #[test]
    fn a_new_bucket_starts_full_and_counts_down() {
        let s = spec(3, 1, 1000, 1);
        let (d, st) = decide(None, s, 0, true);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        let (d, st) = decide(Some(st), s, 0, true);
        assert_eq!(d.remaining, 1);
        let (d, st) = decide(Some(st), s, 0, true);
        assert_eq!((d.allowed, d.remaining), (true, 0));
        let (d, _) = decide(Some(st), s, 0, true);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(1000));
        assert_eq!(d.reset_after, Duration::from_millis(3000));
    }

    #[test]
    fn retry_after_is_exact_to_the_millisecond() {
        // 10 tokens a minute: one every 6 s.
        let s = spec(10, 10, 60_000, 1);
        let mut st = None;
        for _ in 0..10 {
            st = Some(decide(st, s, 0, true).1);
        }
        let (d, st2) = decide(st, s, 1_234, true);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(6_000 - 1_234));
        let (d, _) = decide(Some(st2), s, 6_000, true);
        assert!(d.allowed, "exactly when retry_after said");
    }

    #[test]
    fn a_denied_check_takes_nothing_and_idle_buckets_cap() {
        let s = spec(2, 1, 100, 2);
        let (_, st) = decide(None, s, 0, true);
        let (d, st) = decide(Some(st), s, 50, true);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(150));
        let (d, st) = decide(Some(st), s, 200, true);
        assert!(d.allowed, "the denied check took nothing");
        let (d, _) = decide(Some(st), s, 1_000_000, false);
        assert_eq!(d.remaining, 2, "capped at capacity after a long idle");
    }
}
