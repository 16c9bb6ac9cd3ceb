//! The token bucket: [`Rule`], [`Decision`], the algorithm, and where buckets live.
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

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::error::{Error, Result};

/// The largest `capacity × per` (in ms) a rule may have: every quantity then stays an exact
/// integer in an `f64`, here and in the Redis script.
const MAX_UNITS: u64 = 1 << 53;

/// What to do when the bucket cannot be consulted (the cache is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnError {
    /// Let the request through, log and count it (fail open). The default.
    #[default]
    Allow,
    /// Refuse it with 503 (fail closed), for rules that protect something expensive.
    Deny,
}

/// Whose requests share a bucket (used by the middleware).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Scope {
    /// The client's address (behind trusted proxies, the forwarded one). The default.
    #[default]
    Ip,
    /// The authenticated user (from the request's `AuthenticatedUser` extension); requests
    /// without one are counted by address.
    User,
    /// The authenticated user on this route pattern (by address when anonymous).
    UserAndRoute,
    /// Everyone together.
    Global,
    /// A key of your own from the request; `None` falls back to the address.
    Custom(KeyFn),
}

/// The key function of [`Scope::Custom`].
pub type KeyFn = Arc<dyn Fn(&super::RequestInfo<'_>) -> Option<String> + Send + Sync>;

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Ip => "Ip",
            Scope::User => "User",
            Scope::UserAndRoute => "UserAndRoute",
            Scope::Global => "Global",
            Scope::Custom(_) => "Custom",
        })
    }
}

/// One rate limit: a named token bucket and how it applies.
///
/// ```
/// use std::time::Duration;
/// use dashcache::ratelimit::{OnError, Rule, Scope};
///
/// // 5 logins a minute per address, refused outright if the cache is down.
/// let login = Rule::new("login", 5, 5, Duration::from_secs(60))?
///     .with_scope(Scope::Ip)
///     .with_on_error(OnError::Deny);
/// assert!(Rule::new("bad", 0, 1, Duration::from_secs(1)).is_err());
/// assert!(login.clone().with_cost(6).is_err(), "a cost above capacity could never pass");
/// # Ok::<(), dashcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    capacity: u64,
    refill: u64,
    per_ms: u64,
    cost: u64,
    scope: Scope,
    on_error: OnError,
}

impl Rule {
    /// A bucket of `capacity` tokens gaining `refill` tokens every `per`; each check costs 1.
    ///
    /// # Errors
    /// `InvalidArgument` for a zero capacity or refill, a `per` under 1 ms, or a bucket too
    /// large to count exactly (`capacity × per` over 2⁵³ ms).
    pub fn new(name: impl Into<String>, capacity: u64, refill: u64, per: Duration) -> Result<Self> {
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX);
        if capacity == 0 || refill == 0 {
            return Err(Error::invalid_argument(
                "a rule's capacity and refill must be at least 1",
            ));
        }
        if per_ms == 0 {
            return Err(Error::invalid_argument(
                "a rule's refill period must be at least 1 ms",
            ));
        }
        if capacity
            .checked_mul(per_ms)
            .is_none_or(|units| units > MAX_UNITS)
        {
            return Err(Error::invalid_argument(
                "capacity × period is too large to count exactly",
            ));
        }
        Ok(Self {
            name: name.into(),
            capacity,
            refill,
            per_ms,
            cost: 1,
            scope: Scope::Ip,
            on_error: OnError::Allow,
        })
    }

    /// `n` requests per minute, as a bucket of `n` refilled over the minute.
    ///
    /// # Errors
    /// As [`Rule::new`].
    pub fn per_minute(name: impl Into<String>, n: u64) -> Result<Self> {
        Self::new(name, n, n, Duration::from_secs(60))
    }

    /// Each check costs `cost` tokens.
    ///
    /// # Errors
    /// `InvalidArgument` for 0, or for more than the capacity (it could never be allowed).
    pub fn with_cost(mut self, cost: u64) -> Result<Self> {
        if cost == 0 || cost > self.capacity {
            return Err(Error::invalid_argument(format!(
                "a rule's cost must be between 1 and its capacity ({})",
                self.capacity
            )));
        }
        self.cost = cost;
        Ok(self)
    }

    /// Who shares the bucket (default: the client address).
    #[must_use]
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// What a cache failure means (default: allow).
    #[must_use]
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The rule's name (part of its buckets' keys).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket size.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Tokens per check.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Who shares the bucket.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// What a cache failure means.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    pub(crate) fn spec(&self) -> Spec {
        Spec {
            capacity: self.capacity,
            refill: self.refill,
            per_ms: self.per_ms,
            cost: self.cost,
        }
    }
}

/// The numbers of a rule that a bucket store needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Bucket size in tokens.
    pub capacity: u64,
    /// Tokens gained per period.
    pub refill: u64,
    /// The period, in ms.
    pub per_ms: u64,
    /// Tokens per check.
    pub cost: u64,
}

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

/// Where buckets live: in process ([`MemoryBuckets`]) or on Redis (`RedisBuckets`). Each check
/// is one atomic step.
#[async_trait]
pub trait BucketStore: Send + Sync + fmt::Debug + 'static {
    /// Takes `spec.cost` tokens from the bucket at `key` if it has them. `now_ms` overrides the
    /// store's clock (Unix ms), for deterministic tests.
    ///
    /// # Errors
    /// The store's errors.
    async fn take(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision>;

    /// What [`take`](Self::take) would answer, without changing the bucket.
    ///
    /// # Errors
    /// The store's errors.
    async fn peek(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision>;

    /// Refills the bucket at `key`.
    ///
    /// # Errors
    /// The store's errors.
    async fn reset(&self, key: &str) -> Result<()>;
}

/// Buckets in process: a striped map (each check locks one of 64 stripes for a few hundred
/// nanoseconds), bounded, where a bucket expires once it would be full anyway — on the same
/// clock as its decisions, as on Redis. The clock is the system's wall clock, as the Redis
/// store uses the server's.
pub struct MemoryBuckets {
    stripes: Box<[Mutex<HashMap<String, Stored>>]>,
    hasher: RandomState,
    max_per_stripe: usize,
}

#[derive(Clone, Copy)]
struct Stored {
    state: State,
    /// When the bucket would be full again, plus a margin: past it, it may as well not exist.
    expires_at_ms: u64,
}

impl fmt::Debug for MemoryBuckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBuckets")
            .field("stripes", &self.stripes.len())
            .field("max_per_stripe", &self.max_per_stripe)
            .finish()
    }
}

impl Default for MemoryBuckets {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

const STRIPES: usize = 64;

impl MemoryBuckets {
    /// At most about `max_buckets` live buckets. Past that, expired buckets are swept; if the
    /// live ones still do not fit, some are dropped — which refills them, so memory stays
    /// bounded under a flood of distinct clients at the cost of a little leniency.
    pub fn new(max_buckets: u64) -> Self {
        let per_stripe = usize::try_from(max_buckets).unwrap_or(usize::MAX) / STRIPES;
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            max_per_stripe: per_stripe.max(16),
        }
    }

    /// The stripe of `key`, locked. A poisoned stripe is still sound: every update is a single
    /// insert of a computed value.
    fn stripe(&self, key: &str) -> MutexGuard<'_, HashMap<String, Stored>> {
        let i = self.hasher.hash_one(key) as usize % self.stripes.len();
        self.stripes[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room in a full stripe: expired buckets first, then arbitrary ones down to 90 %, so
    /// the next sweep is a tenth of the stripe away.
    fn make_room(&self, stripe: &mut HashMap<String, Stored>, now: u64) {
        stripe.retain(|_, b| b.expires_at_ms > now);
        let target = self.max_per_stripe - self.max_per_stripe / 10;
        if stripe.len() > target {
            let excess: Vec<String> = stripe.keys().take(stripe.len() - target).cloned().collect();
            for key in excess {
                stripe.remove(&key);
            }
        }
    }
}

/// Idle buckets are kept until they would have refilled, plus this margin (as on Redis).
pub(crate) const IDLE_MARGIN: Duration = Duration::from_secs(1);

fn live(stored: Option<&Stored>, now: u64) -> Option<State> {
    stored.filter(|b| b.expires_at_ms > now).map(|b| b.state)
}

#[async_trait]
impl BucketStore for MemoryBuckets {
    async fn take(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        let now = now_ms.unwrap_or_else(unix_millis);
        let mut stripe = self.stripe(key);
        let (decision, state) = decide(live(stripe.get(key), now), spec, now, true);
        let stored = Stored {
            state,
            expires_at_ms: now
                .saturating_add(decision.reset_after.as_millis() as u64)
                .saturating_add(IDLE_MARGIN.as_millis() as u64),
        };
        match stripe.get_mut(key) {
            Some(slot) => *slot = stored,
            None => {
                if stripe.len() >= self.max_per_stripe {
                    self.make_room(&mut stripe, now);
                }
                stripe.insert(key.to_owned(), stored);
            }
        }
        Ok(decision)
    }

    async fn peek(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        let now = now_ms.unwrap_or_else(unix_millis);
        let current = live(self.stripe(key).get(key), now);
        Ok(decide(current, spec, now, false).0)
    }

    async fn reset(&self, key: &str) -> Result<()> {
        self.stripe(key).remove(key);
        Ok(())
    }
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(capacity: u64, refill: u64, per_ms: u64, cost: u64) -> Spec {
        Spec {
            capacity,
            refill,
            per_ms,
            cost,
        }
    }

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

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_clients() {
        let store = MemoryBuckets::new(1024);
        let s = spec(10, 1, 1000, 1);
        for i in 0..100_000 {
            let _ = store.take(&format!("client-{i}"), s, Some(0)).await;
        }
        let held: usize = store
            .stripes
            .iter()
            .map(|m| m.lock().map(|g| g.len()).unwrap_or(0))
            .sum();
        assert!(held <= 1024 + STRIPES, "{held}");
        // Buckets expire once they would be full, on the decisions' clock.
        let key = "client-99999";
        assert_eq!(
            store.peek(key, s, Some(0)).await.ok().map(|d| d.remaining),
            Some(9)
        );
        assert_eq!(
            store
                .peek(key, s, Some(2_001))
                .await
                .ok()
                .map(|d| d.remaining),
            Some(10)
        );
    }

    #[test]
    fn rules_refuse_what_could_never_work() {
        let per = Duration::from_secs(1);
        assert!(Rule::new("r", 0, 1, per).is_err());
        assert!(Rule::new("r", 1, 0, per).is_err());
        assert!(Rule::new("r", 1, 1, Duration::from_micros(10)).is_err());
        assert!(Rule::new("r", u64::MAX, 1, per).is_err());
        let rule = Rule::new("r", 5, 1, per).unwrap_or_else(|e| panic!("{e}"));
        assert!(rule.clone().with_cost(0).is_err());
        assert!(rule.clone().with_cost(6).is_err());
        assert!(rule.with_cost(5).is_ok());
    }
}
