//! The circuit breaker in front of every Redis operation.
//!
//! Closed, it costs one atomic load per operation. After `failure_threshold` consecutive
//! transient failures (unreachable, timed out) it opens: operations fail at once with
//! `CircuitOpen`, without touching the network, so a hung server costs one deadline, not one
//! per request. After `open_for` it lets exactly one probe through (half-open); the probe's
//! success closes it, its failure opens it for another `open_for`.
//!
//! On a cluster a master can fail while the others answer, so [`Breakers`] keeps one breaker per
//! range of [`SLOTS_PER_GROUP`] hash slots — nodes own contiguous slot ranges, so a range's
//! breaker sees (almost always) one node — and a "wide" one for operations that span ranges or
//! have no key. A dead master then opens the breakers of its ranges only.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};
use crate::vars;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker (default 5; at least 1).
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through (default 500 ms).
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: vars::CACHE_BREAKER_FAILURES.default_u32(),
            open_for: vars::CACHE_BREAKER_OPEN_MS.default_duration(),
        }
    }
}

impl BreakerConfig {
    /// Sets the failure threshold (a value of 0 is taken as 1).
    ///
    /// ```
    /// let cfg = dashcache::BreakerConfig::default().with_failure_threshold(3);
    /// assert_eq!(cfg.failure_threshold, 3);
    /// ```
    #[must_use]
    pub fn with_failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// Sets how long the breaker stays open.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = dashcache::BreakerConfig::default().with_open_for(Duration::from_secs(1));
    /// assert_eq!(cfg.open_for, Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn with_open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }
}

const UNAVAILABLE: u8 = 0;
const TIMEOUT: u8 = 1;
const MISCONFIGURED: u8 = 2;

/// A failure's kind as the breaker remembers it.
fn cause_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Timeout => TIMEOUT,
        ErrorKind::Misconfigured => MISCONFIGURED,
        _ => UNAVAILABLE,
    }
}

/// The breaker's state, shared by every clone of a `RedisCache`.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    epoch: Instant,
    failures: AtomicU32,
    /// Nanoseconds after `epoch` until which the breaker is open, plus one; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    /// The kind of the last failure counted (see [`cause_code`]), named when refusing.
    last_cause: AtomicU8,
}

/// Leave to run one operation. Dropped without [`Permit::record`] (the caller's future was
/// cancelled), a probe counts as failed, so the breaker can never stay stuck half-open.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

/// Hash slots per breaker on a cluster: 256 breakers of 64 slots, a few KiB, fine-grained enough
/// that a range straddles two masters only at the ranges' edges.
pub(crate) const SLOTS_PER_GROUP: u16 = 64;
const SLOTS: u16 = 16384;

/// The breakers of one `RedisCache`: a single one for a standalone server; one per slot range
/// plus a wide one on a cluster.
#[derive(Debug)]
pub(crate) struct Breakers {
    wide: CircuitBreaker,
    groups: Box<[CircuitBreaker]>,
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig, cluster: bool) -> Self {
        let groups = if cluster {
            (0..SLOTS / SLOTS_PER_GROUP)
                .map(|_| CircuitBreaker::new(config))
                .collect()
        } else {
            Box::default()
        };
        Self {
            wide: CircuitBreaker::new(config),
            groups,
        }
    }

    /// The breaker for an operation on `key` (or on keys sharing its slot): its range's on a
    /// cluster; the wide one for a standalone server or an operation without a key.
    pub(crate) fn for_key(&self, key: Option<&str>) -> &CircuitBreaker {
        match key {
            // No hashing on a standalone server: this is on every operation's path.
            Some(k) if !self.groups.is_empty() => self
                .groups
                .get(usize::from(slot(k.as_bytes()) / SLOTS_PER_GROUP))
                .unwrap_or(&self.wide),
            _ => &self.wide,
        }
    }

    /// The breakers of the ranges of `slots`, each once (the wide one for a standalone
    /// server).
    pub(crate) fn for_slots(&self, slots: impl IntoIterator<Item = u16>) -> Vec<&CircuitBreaker> {
        if self.groups.is_empty() {
            return vec![&self.wide];
        }
        let mut seen = [false; (SLOTS / SLOTS_PER_GROUP) as usize];
        let mut breakers = Vec::new();
        for slot in slots {
            let g = usize::from(slot / SLOTS_PER_GROUP);
            if let (Some(flag), Some(b)) = (seen.get_mut(g), self.groups.get(g))
                && !*flag
            {
                *flag = true;
                breakers.push(b);
            }
        }
        breakers
    }

    /// Whether any breaker is open.
    pub(crate) fn is_open(&self) -> bool {
        self.wide.is_open() || self.groups.iter().any(CircuitBreaker::is_open)
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 of its hash tag (the part between the first `{`
/// and the next `}`, when not empty) or of the whole key.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            rest.get(..close).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

impl CircuitBreaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            last_cause: AtomicU8::new(UNAVAILABLE),
        }
    }

    fn ticks(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX) + 1
    }

    /// Whether the breaker is open now (for health reports).
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Asks to run one operation. The clock is read only while the breaker is open: a closed
    /// breaker costs one atomic load.
    pub(crate) fn acquire(&self, now: impl FnOnce() -> Instant) -> Result<Permit<'_>, Error> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(Permit {
                breaker: self,
                probe: false,
                recorded: false,
            });
        }
        if self.ticks(now()) >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(Permit {
                breaker: self,
                probe: true,
                recorded: false,
            });
        }
        let message = match self.last_cause.load(Ordering::Acquire) {
            MISCONFIGURED => {
                "the circuit breaker is open: the server refuses this client's configuration \
                 (cache_misconfigured)"
            }
            TIMEOUT => "the circuit breaker is open after repeated failures (cache_timeout)",
            _ => "the circuit breaker is open after repeated failures (cache_unavailable)",
        };
        Err(Error::new(ErrorKind::CircuitOpen, message))
    }

    fn on_success(&self) {
        // Read before writing: on the hot path both are already 0, and a plain load keeps the
        // cache line shared between cores instead of bouncing it on every operation.
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Acquire) != 0
            && self.open_until.swap(0, Ordering::AcqRel) != 0
        {
            tracing::info!("cache circuit breaker closed: the backend answers again");
        }
    }

    fn on_failure(&self, probe: bool, now: Instant, cause: &Error) {
        self.last_cause
            .store(cause_code(cause.kind()), Ordering::Release);
        if cause.kind() == ErrorKind::Misconfigured && self.failures.load(Ordering::Acquire) == 0 {
            // Loud, once per run of failures: no retry will fix it.
            tracing::error!(error = %cause, "the cache backend refuses this client: fix its configuration");
        }
        let open_until = self
            .ticks(now)
            .saturating_add(u64::try_from(self.config.open_for.as_nanos()).unwrap_or(u64::MAX));
        if probe {
            self.open_until.store(open_until, Ordering::Release);
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.config.failure_threshold
            && self
                .open_until
                .compare_exchange(0, open_until, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                failures,
                open_for_ms = self.config.open_for.as_millis() as u64,
                "cache circuit breaker opened: failing fast without contacting the backend"
            );
        }
    }
}

impl Permit<'_> {
    /// Records the outcome: an error that proves the backend unreachable or slow counts as a
    /// failure; any answer from the backend (errors such as WRONGTYPE included) as a success.
    /// The clock is read only on a failure.
    pub(crate) fn record<T>(mut self, outcome: &Result<T, Error>, now: impl FnOnce() -> Instant) {
        self.recorded = true;
        match outcome {
            Err(e) if e.kind().disables_backend() => {
                self.breaker.on_failure(self.probe, now(), e);
            }
            _ => self.breaker.on_success(),
        }
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Permit<'_> {
    /// Gives the permit back unused (a sibling breaker refused the operation): no verdict, and a
    /// probe can be taken again at once.
    pub(crate) fn abandon(mut self) {
        self.recorded = true;
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let cancelled = Error::new(ErrorKind::Timeout, "the probe was cancelled");
            self.breaker.on_failure(true, Instant::now(), &cancelled);
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b""), 0);
    }

    #[test]
    fn a_failing_range_leaves_the_others_closed() {
        let config = BreakerConfig::default().with_failure_threshold(1);
        let breakers = Breakers::new(config, true);
        let t0 = Instant::now();
        fail(breakers.for_key(Some("foo")), t0);
        assert!(breakers.for_key(Some("foo")).is_open());
        assert!(breakers.is_open());
        assert!(!breakers.for_key(Some("bar")).is_open());
        assert!(!breakers.for_key(None).is_open(), "the wide one");
        assert!(breakers.for_key(Some("{foo}:a")).is_open());
        let foo = slot(b"foo");
        let bar = slot(b"bar");
        assert_eq!(breakers.for_slots([foo, bar, foo]).len(), 2);
        assert!(breakers.for_slots([foo, bar]).iter().any(|b| b.is_open()));

        let single = Breakers::new(config, false);
        fail(single.for_key(Some("foo")), t0);
        assert!(
            single.for_key(Some("bar")).is_open(),
            "one server, one breaker"
        );
    }

    fn timeout() -> Result<(), Error> {
        Err(Error::new(ErrorKind::Timeout, "t"))
    }

    fn fail(b: &CircuitBreaker, now: Instant) {
        if let Ok(p) = b.acquire(|| now) {
            p.record(&timeout(), || now);
        }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&b, t0);
        }
        assert!(!b.is_open());
        fail(&b, t0);
        assert!(b.is_open());
        let err = b.acquire(|| t0).err().map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::CircuitOpen));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&b, t0);
        }
        if let Ok(p) = b.acquire(|| t0) {
            p.record(&Ok(()), || t0);
        }
        for _ in 0..4 {
            fail(&b, t0);
        }
        assert!(!b.is_open());
    }

    #[test]
    fn non_transient_errors_do_not_count() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..10 {
            if let Ok(p) = b.acquire(|| t0) {
                p.record::<()>(&Err(Error::new(ErrorKind::WrongType, "w")), || t0);
            }
        }
        assert!(!b.is_open());
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&b, t0);
        }
        let later = t0 + Duration::from_millis(501);
        let probe = b.acquire(|| later);
        assert!(probe.is_ok());
        assert!(b.acquire(|| later).is_err(), "only one probe at a time");
        if let Ok(p) = probe {
            p.record(&Ok(()), || later);
        }
        assert!(!b.is_open());
        assert!(b.acquire(|| later).is_ok());
    }

    #[test]
    fn a_failed_probe_reopens_for_another_period() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&b, t0);
        }
        let t1 = t0 + Duration::from_millis(600);
        fail(&b, t1);
        assert!(b.acquire(|| t1 + Duration::from_millis(400)).is_err());
        assert!(b.acquire(|| t1 + Duration::from_millis(501)).is_ok());
    }

    #[test]
    fn a_cancelled_probe_does_not_leave_the_breaker_stuck() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&b, t0);
        }
        let later = t0 + Duration::from_millis(501);
        drop(b.acquire(|| later));
        // The dropped probe reopened the breaker from the real clock; a probe is possible again
        // one period later.
        let much_later = Instant::now() + Duration::from_millis(501);
        assert!(b.acquire(|| much_later).is_ok());
    }
}
