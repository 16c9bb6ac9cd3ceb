//! Reservations: a hot bucket's checks answered in process from tokens this instance took
//! ahead, in one round trip, from the shared bucket — one limit across instances without a
//! round trip per request.
//!
//! Why it stays one limit:
//! - A token is taken from the shared bucket (atomically, by the same script as a single
//!   check) before any check it answers, so all instances together never admit more than the
//!   bucket gave out.
//! - A reserved token answers a check only within `hold` of being taken; after that it is
//!   given back with this instance's next take of the same bucket. Giving back tokens that
//!   were never used leaves the bucket exactly as if they had never been taken (the script adds
//!   them after the refill, capped at full). Tokens still held when their entry is dropped are
//!   lost: the bucket errs towards refusing, never towards admitting.
//! - The batch grows (doubling) only while checks on this instance outrun it: a check that
//!   finds the reservation used up before its `hold` ran out. Otherwise it halves. A bucket
//!   checked less often than once per `hold` is therefore checked on the store every time,
//!   with a batch of 1, exactly as without reservations.
//! - One reservation takes at most 1/16 of a full bucket ([`SHARE`]) and at most
//!   `max_batch` checks' worth, so what other instances cannot use meanwhile is small; a
//!   bucket smaller than 32 checks is never reserved.
//!
//! - A refusal is remembered for the rest of the hold, or until its `retry_after` if sooner,
//!   and repeated in process: a client hammering an empty bucket (a login flood) costs one
//!   round trip per hold per instance, not one per request. That only ever refuses more: the
//!   store would say the same until `retry_after`, unless another instance gave tokens back or
//!   reset the bucket meanwhile (then this instance agrees within the hold). Buckets of every
//!   size get this, small ones included.
//!
//! The one thing that changes: over a window of length `w`, the checks admitted are those whose
//! tokens were taken in a window of `w + hold`, so a bucket may admit up to `refill × hold`
//! more than a single check per token would (with the defaults, 50 ms of refill: 0.08 of a
//! token for 100 a minute).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::ratelimit::bucket::Decision;
use crate::ratelimit::rule::Spec;
use crate::vars;

/// One reservation takes at most a full bucket divided by this (in checks).
pub(super) const SHARE: u64 = 16;

/// How [`RedisBuckets`](super::RedisBuckets) reserves tokens of hot buckets (see
/// [`RedisBuckets::with_reservations`](super::RedisBuckets::with_reservations)).
///
/// ```
/// use std::time::Duration;
/// use dashcache::ratelimit::Reservations;
///
/// let reservations = Reservations::default()
///     .max_batch(32)
///     .hold(Duration::from_millis(20))
///     .max_keys(50_000);
/// assert_eq!(reservations.batch_limit(), 32);
/// ```
#[derive(Debug, Clone)]
pub struct Reservations {
    max_batch: u64,
    hold: Duration,
    max_keys: u64,
    clock: Clock,
}

impl Default for Reservations {
    /// Batches of up to 64 checks, held for 50 ms, for up to 10 000 buckets at a time.
    fn default() -> Self {
        Self {
            max_batch: vars::CACHE_RATE_LIMIT_BATCH.default,
            hold: Duration::from_millis(50),
            max_keys: 10_000,
            clock: Clock::system(),
        }
    }
}

impl Reservations {
    /// The most checks one round trip reserves, from 1 (reserves nothing) to
    /// [`MAX_BATCH`](Self::MAX_BATCH); values outside are clamped.
    #[must_use]
    pub fn max_batch(mut self, checks: u64) -> Self {
        self.max_batch = checks.clamp(1, Self::MAX_BATCH);
        self
    }

    /// The largest batch: more would hold back too many tokens from other instances for
    /// too little gain (the default 64 took 97 % of the round trips off the service's hot
    /// bucket under load).
    pub const MAX_BATCH: u64 = vars::CACHE_RATE_LIMIT_BATCH.max;

    /// How long reserved tokens may answer checks before they are given back (at least 1 ms).
    #[must_use]
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold.max(Duration::from_millis(1));
        self
    }

    /// How many buckets this instance keeps reservations for; the least recently used go
    /// first (their unused tokens are lost, never admitted).
    #[must_use]
    pub fn max_keys(mut self, keys: u64) -> Self {
        self.max_keys = keys.max(1);
        self
    }

    /// Reads time from `clock` (default: the system's), for tests.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The most checks one round trip reserves.
    pub fn batch_limit(&self) -> u64 {
        self.max_batch
    }
}

/// What reservations did so far (one instance's counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReservationStats {
    /// Checks answered in process from reserved tokens.
    pub answered_locally: u64,
    /// Checks that went to the store.
    pub store_takes: u64,
    /// Checks' worth of tokens taken ahead.
    pub reserved: u64,
    /// Checks' worth of unused tokens given back.
    pub given_back: u64,
    /// Checks refused in process, repeating a refusal the store gave within the hold.
    pub refused_locally: u64,
}

/// One bucket's reservation on this instance.
#[derive(Debug)]
struct Held {
    spec: Spec,
    /// Checks' worth of tokens held.
    left: u64,
    /// Until when they may answer checks.
    until: Instant,
    /// The size of the next reservation.
    batch: u64,
    /// The store's answer when they were taken.
    remaining: u64,
    reset_after: Duration,
    taken_at: Instant,
    /// The store's last refusal, when it was given, and until when it is repeated.
    refusal: Option<(Decision, Instant, Instant)>,
}

impl Held {
    fn new(spec: Spec, now: Instant) -> Self {
        Self {
            spec,
            left: 0,
            until: now,
            batch: 1,
            remaining: 0,
            reset_after: Duration::ZERO,
            taken_at: now,
            refusal: None,
        }
    }

    /// The remembered refusal, aged to `now`, while it holds.
    fn refusal_at(&self, now: Instant) -> Option<Decision> {
        let (decision, at, until) = self.refusal?;
        if now >= until {
            return None;
        }
        let elapsed = now.saturating_duration_since(at);
        Some(Decision {
            retry_after: decision.retry_after.saturating_sub(elapsed),
            reset_after: decision.reset_after.saturating_sub(elapsed),
            ..decision
        })
    }
}

/// The next step of a check.
pub(super) enum Step {
    /// Answered from a reservation.
    Local(Decision),
    /// Take up to `count` checks' worth from the store, giving `give_back` back first.
    Store { count: u64, give_back: u64 },
}

/// This instance's reservations, by bucket key.
#[derive(Debug)]
pub(super) struct Table {
    config: Reservations,
    held: moka::sync::Cache<String, Arc<Mutex<Held>>>,
    answered_locally: AtomicU64,
    refused_locally: AtomicU64,
    store_takes: AtomicU64,
    reserved: AtomicU64,
    given_back: AtomicU64,
}

impl Table {
    pub(super) fn new(config: Reservations) -> Self {
        let held = moka::sync::Cache::builder()
            .max_capacity(config.max_keys)
            // An idle entry holds at most a few tokens to give back and a batch size to
            // start from; neither is worth keeping long.
            .time_to_idle(config.hold.saturating_mul(20).max(Duration::from_secs(1)))
            .build();
        Self {
            config,
            held,
            answered_locally: AtomicU64::new(0),
            refused_locally: AtomicU64::new(0),
            store_takes: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            given_back: AtomicU64::new(0),
        }
    }

    /// `key`'s entry, made for `spec` when there is none.
    fn entry(&self, key: &str, spec: Spec, now: Instant) -> Arc<Mutex<Held>> {
        self.held
            .get_with_by_ref(key, || Arc::new(Mutex::new(Held::new(spec, now))))
    }

    /// The largest reservation for `spec`, in checks: 1 (none) for small buckets.
    fn cap(&self, spec: Spec) -> u64 {
        (spec.capacity / spec.cost.max(1) / SHARE)
            .min(self.config.max_batch)
            .max(1)
    }

    /// Answers a check from `key`'s reservation, or says what to take from the store.
    pub(super) fn step(&self, key: &str, spec: Spec) -> Step {
        let cap = self.cap(spec);
        let now = self.config.clock.now();
        if cap <= 1 {
            // A small bucket has an entry only while it refuses.
            if let Some(entry) = self.held.get(key) {
                let held = entry.lock().unwrap_or_else(PoisonError::into_inner);
                if held.spec == spec
                    && let Some(refused) = held.refusal_at(now)
                {
                    self.refused_locally.fetch_add(1, Ordering::Relaxed);
                    return Step::Local(refused);
                }
            }
            self.store_takes.fetch_add(1, Ordering::Relaxed);
            return Step::Store {
                count: 1,
                give_back: 0,
            };
        }
        let entry = self.entry(key, spec, now);
        let mut held = lock_for(&entry, spec, now);
        if let Some(refused) = held.refusal_at(now) {
            self.refused_locally.fetch_add(1, Ordering::Relaxed);
            return Step::Local(refused);
        }
        if held.left > 0 && now < held.until {
            held.left -= 1;
            self.answered_locally.fetch_add(1, Ordering::Relaxed);
            return Step::Local(Decision {
                allowed: true,
                limit: spec.capacity,
                remaining: held
                    .remaining
                    .saturating_add(held.left.saturating_mul(spec.cost)),
                retry_after: Duration::ZERO,
                reset_after: held
                    .reset_after
                    .saturating_sub(now.saturating_duration_since(held.taken_at)),
            });
        }
        let give_back = std::mem::take(&mut held.left);
        held.batch = if now < held.until {
            held.batch.saturating_mul(2).min(cap)
        } else {
            (held.batch / 2).max(1)
        };
        self.store_takes.fetch_add(1, Ordering::Relaxed);
        if give_back > 0 {
            self.given_back.fetch_add(give_back, Ordering::Relaxed);
        }
        Step::Store {
            count: held.batch,
            give_back,
        }
    }

    /// Keeps what the store granted beyond this check (`granted` checks' worth, this one
    /// included) and returns the check's decision with what this instance holds counted as
    /// remaining.
    pub(super) fn record(
        &self,
        key: &str,
        spec: Spec,
        granted: u64,
        mut decision: Decision,
    ) -> Decision {
        let now = self.config.clock.now();
        if self.cap(spec) <= 1 {
            if !decision.allowed {
                let entry = self.entry(key, spec, now);
                lock_for(&entry, spec, now).refusal = Some(self.refusal(decision, now));
            }
            return decision;
        }
        let entry = self.entry(key, spec, now);
        let mut held = entry.lock().unwrap_or_else(PoisonError::into_inner);
        if held.spec != spec {
            return decision;
        }
        if !decision.allowed {
            // The bucket is empty: reserving from it would only take from other instances.
            held.batch = 1;
            held.refusal = Some(self.refusal(decision, now));
            decision.remaining = decision
                .remaining
                .saturating_add(held.left.saturating_mul(spec.cost));
            return decision;
        }
        held.refusal = None;
        let extra = granted.saturating_sub(1);
        if extra > 0 {
            self.reserved.fetch_add(extra, Ordering::Relaxed);
        }
        held.left = held.left.saturating_add(extra);
        held.until = now + self.config.hold;
        held.remaining = decision.remaining;
        held.reset_after = decision.reset_after;
        held.taken_at = now;
        decision.remaining = decision
            .remaining
            .saturating_add(held.left.saturating_mul(spec.cost));
        decision
    }

    /// A refusal given at `now`, remembered for the rest of the hold or until its
    /// `retry_after`, whichever is sooner.
    fn refusal(&self, decision: Decision, now: Instant) -> (Decision, Instant, Instant) {
        (
            decision,
            now,
            now + decision.retry_after.min(self.config.hold),
        )
    }

    /// Tokens (not checks) this instance holds for `key`, live or to give back.
    pub(super) fn held_tokens(&self, key: &str) -> u64 {
        self.held.get(key).map_or(0, |entry| {
            let held = entry.lock().unwrap_or_else(PoisonError::into_inner);
            held.left.saturating_mul(held.spec.cost)
        })
    }

    /// Forgets `key`'s reservation (the bucket was reset).
    pub(super) fn forget(&self, key: &str) {
        self.held.invalidate(key);
    }

    pub(super) fn stats(&self) -> ReservationStats {
        ReservationStats {
            answered_locally: self.answered_locally.load(Ordering::Relaxed),
            refused_locally: self.refused_locally.load(Ordering::Relaxed),
            store_takes: self.store_takes.load(Ordering::Relaxed),
            reserved: self.reserved.load(Ordering::Relaxed),
            given_back: self.given_back.load(Ordering::Relaxed),
        }
    }
}

/// Locks `entry` for a check of `spec`, starting it afresh when the rule changed under the
/// same key (what it held was counted in other units).
fn lock_for(entry: &Mutex<Held>, spec: Spec, now: Instant) -> MutexGuard<'_, Held> {
    let mut held = entry.lock().unwrap_or_else(PoisonError::into_inner);
    if held.spec != spec {
        *held = Held::new(spec, now);
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::rule::spec;

    fn allowed(remaining: u64) -> Decision {
        Decision {
            allowed: true,
            limit: 0,
            remaining,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_secs(1),
        }
    }

    fn count(step: &Step) -> Option<(u64, u64)> {
        match step {
            Step::Local(_) => None,
            Step::Store { count, give_back } => Some((*count, *give_back)),
        }
    }

    #[test]
    fn small_buckets_and_slow_clients_are_never_reserved_for() {
        let clock = Clock::manual();
        let table = Table::new(Reservations::default().with_clock(clock.clone()));
        // 31 checks fit a full bucket: under 2 × SHARE, nothing is reserved.
        let small = spec(31, 31, 60_000, 1);
        for _ in 0..5 {
            assert_eq!(count(&table.step("k", small)), Some((1, 0)));
        }
        // A bucket checked less than once per hold: one token per check, every time.
        let big = spec(6400, 6400, 60_000, 1);
        for _ in 0..5 {
            assert_eq!(count(&table.step("b", big)), Some((1, 0)));
            table.record("b", big, 1, allowed(10));
            clock.advance(Duration::from_millis(51));
        }
        assert_eq!(table.stats().reserved, 0);
    }

    #[test]
    fn a_hot_bucket_doubles_up_to_its_cap_then_gives_leftovers_back() {
        let clock = Clock::manual();
        let table = Table::new(
            Reservations::default()
                .max_batch(8)
                .with_clock(clock.clone()),
        );
        let s = spec(6400, 6400, 60_000, 1);
        // Checks with no time passing: each reservation runs out within its hold.
        let mut batches = Vec::new();
        let mut local = 0;
        for _ in 0..30 {
            match table.step("k", s) {
                Step::Local(d) => {
                    assert!(d.allowed);
                    local += 1;
                }
                Step::Store { count, give_back } => {
                    assert_eq!(give_back, 0);
                    batches.push(count);
                    table.record("k", s, count, allowed(100));
                }
            }
        }
        // The first check finds no live reservation: 1 (it halves from 1).
        assert_eq!(batches[..5], [1, 2, 4, 8, 8]);
        assert_eq!(local + batches.len(), 30);
        assert_eq!(
            batches.iter().sum::<u64>() as usize - 30,
            table.held_tokens("k") as usize
        );
        // The hold runs out with tokens left: the next take gives them back and halves.
        let left = table.held_tokens("k");
        clock.advance(Duration::from_millis(50));
        assert_eq!(count(&table.step("k", s)), Some((4, left)));
        assert_eq!(table.held_tokens("k"), 0);
    }

    #[test]
    fn a_refusal_is_repeated_in_process_until_its_retry_or_the_hold_ends() {
        let clock = Clock::manual();
        let table = Table::new(Reservations::default().with_clock(clock.clone()));
        let mut refused = allowed(0);
        refused.allowed = false;
        refused.retry_after = Duration::from_millis(20);
        // A small bucket (never reserved for) and a large one.
        for s in [spec(5, 5, 60_000, 1), spec(6400, 6400, 60_000, 1)] {
            assert!(count(&table.step("k", s)).is_some());
            table.record("k", s, 0, refused);
            clock.advance(Duration::from_millis(5));
            match table.step("k", s) {
                Step::Local(d) => {
                    assert!(!d.allowed);
                    assert_eq!(d.retry_after, Duration::from_millis(15), "aged");
                }
                Step::Store { .. } => panic!("the refusal was not repeated"),
            }
            // At its retry time the store is asked again.
            clock.advance(Duration::from_millis(15));
            assert!(count(&table.step("k", s)).is_some());
            table.record("k", s, 1, allowed(0));
            table.held.invalidate("k");
        }
        // A long retry is repeated only for the hold.
        let s = spec(5, 5, 60_000, 1);
        refused.retry_after = Duration::from_secs(10);
        table.step("k", s);
        table.record("k", s, 0, refused);
        clock.advance(Duration::from_millis(49));
        assert!(count(&table.step("k", s)).is_none());
        clock.advance(Duration::from_millis(1));
        assert!(count(&table.step("k", s)).is_some());
        assert_eq!(table.stats().refused_locally, 3);
    }

    #[test]
    fn a_refusal_resets_the_batch_and_a_new_rule_drops_what_was_held() {
        let table = Table::new(Reservations::default().with_clock(Clock::manual()));
        let s = spec(6400, 6400, 60_000, 1);
        table.step("k", s);
        table.record("k", s, 1, allowed(5));
        assert_eq!(count(&table.step("k", s)), Some((2, 0)));
        let mut refused = allowed(0);
        refused.allowed = false;
        table.record("k", s, 0, refused);
        // Still within the hold: it would double, but from 1.
        assert_eq!(count(&table.step("k", s)), Some((2, 0)));
        table.record("k", s, 2, allowed(5));
        assert_eq!(table.held_tokens("k"), 1);
        let other = spec(3200, 3200, 60_000, 2);
        assert_eq!(count(&table.step("k", other)), Some((1, 0)));
        assert_eq!(table.held_tokens("k"), 0);
    }
}
