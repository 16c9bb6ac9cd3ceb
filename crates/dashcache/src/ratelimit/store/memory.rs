//! [`MemoryBuckets`]: token buckets in process.
//!
//! A bucket is found by a keyed hash of (rule, client id), computed once per check: it picks
//! one of 64 stripes and is the bucket's key inside it, so a check builds no key string and
//! hashes nothing twice. The bucket keeps the rule and id it belongs to and is compared with
//! them, so a hash collision (astronomically rare with a keyed 64-bit hash, and not something a
//! client can aim for) costs an allocation, never a shared bucket.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::quality::RandomState;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::BucketStore;
use crate::clock::{Clock, Tick};
use crate::error::Result;
use crate::ratelimit::bucket::{Decision, IDLE_MARGIN, State, decide};
use crate::ratelimit::rule::Spec;

const STRIPES: usize = 64;

/// Buckets in process, bounded. A bucket expires once it would be full anyway (plus a margin),
/// on the store's [`Clock`] — monotonic, so a step of the host's clock neither stalls nor
/// rushes refills.
///
/// When a stripe is full, only buckets that are full again are dropped: one that is, is the
/// same as one never seen. If none is, a new client shares the stripe's overflow bucket for its
/// rule until room comes back. A flood of new ids therefore never resets a live bucket — it
/// cannot refill another client's limit — and cannot win fresh buckets for itself either.
pub struct MemoryBuckets {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    max_per_stripe: usize,
    clock: Clock,
    epoch: Tick,
}

#[derive(Default)]
struct Stripe {
    /// By the bucket's hash.
    buckets: HashMap<u64, Bucket, BuildHasherDefault<Prehashed>>,
    /// Buckets whose hash another bucket of this stripe already had.
    collided: HashMap<(Box<str>, Box<str>), Stored>,
    /// Per rule, the bucket new clients share while the stripe is full.
    overflow: HashMap<Box<str>, Stored>,
    /// While the stripe is full, when its first bucket will be full again (before that, no
    /// sweep can make room: new clients go to the overflow bucket at once).
    no_room_until: u64,
}

struct Bucket {
    rule_len: usize,
    /// The rule's name followed by the client id.
    owner: Box<str>,
    stored: Stored,
}

#[derive(Clone, Copy)]
struct Stored {
    state: State,
    /// When the bucket would be full again, plus [`IDLE_MARGIN`]: past it, it may as well not
    /// exist.
    expires_at_ms: u64,
}

/// The hash a key already is. hashbrown takes a bucket's slot from the low bits and its tag
/// from the top seven; the stripe was picked by the low six, so they are rotated out of the way.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0.rotate_left(32)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else still gets a usable hash.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl fmt::Debug for MemoryBuckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBuckets")
            .field("stripes", &self.stripes.len())
            .field("max_per_stripe", &self.max_per_stripe)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Default for MemoryBuckets {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

impl MemoryBuckets {
    /// At most about `max_buckets` buckets (see the type's docs for what goes when full).
    pub fn new(max_buckets: u64) -> Self {
        let per_stripe = usize::try_from(max_buckets).unwrap_or(usize::MAX) / STRIPES;
        let clock = Clock::system();
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            max_per_stripe: per_stripe.max(16),
            epoch: clock.tick(),
            clock,
        }
    }

    /// Reads time from `clock` (default: the system's).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.epoch = clock.tick();
        self.clock = clock;
        self
    }

    /// Takes `spec.cost` tokens from `id`'s bucket of `rule` (see [`BucketStore::take`]).
    #[inline]
    pub(crate) fn take_for(&self, rule: &str, id: &str, spec: Spec, now: Option<u64>) -> Decision {
        let hash = self.hasher.hash_one((rule, id));
        let now = now.unwrap_or_else(|| self.now_ms());
        let decide_and_keep = |current: Option<State>| {
            let (decision, state) = decide(current, spec, now, true);
            let expires_at_ms = now
                .saturating_add(decision.reset_after.as_millis() as u64)
                .saturating_add(IDLE_MARGIN.as_millis() as u64);
            let stored = Stored {
                state,
                expires_at_ms,
            };
            (decision, stored)
        };
        let mut stripe = self.stripe(hash);
        // The common case, an existing bucket, in one lookup.
        if let Some(bucket) = stripe.buckets.get_mut(&hash)
            && bucket.belongs_to(rule, id)
        {
            let (decision, stored) = decide_and_keep(bucket.stored.live(now));
            bucket.stored = stored;
            return decision;
        }
        let known = stripe.get(hash, rule, id);
        if known.is_none() && !stripe.has_room(now, self.max_per_stripe) {
            let shared = stripe.overflow.get(rule).and_then(|s| s.live(now));
            let (decision, stored) = decide_and_keep(shared);
            match stripe.overflow.get_mut(rule) {
                Some(slot) => *slot = stored,
                None => {
                    stripe.overflow.insert(rule.into(), stored);
                }
            }
            return decision;
        }
        let (decision, stored) = decide_and_keep(known.and_then(|s| s.live(now)));
        stripe.put(hash, rule, id, stored);
        decision
    }

    /// What [`take_for`](Self::take_for) would answer, changing nothing.
    pub(crate) fn peek_for(&self, rule: &str, id: &str, spec: Spec, now: Option<u64>) -> Decision {
        let hash = self.hasher.hash_one((rule, id));
        let now = now.unwrap_or_else(|| self.now_ms());
        let current = self
            .stripe(hash)
            .get(hash, rule, id)
            .and_then(|s| s.live(now));
        decide(current, spec, now, false).0
    }

    /// Refills `id`'s bucket of `rule`.
    pub(crate) fn reset_for(&self, rule: &str, id: &str) {
        let hash = self.hasher.hash_one((rule, id));
        self.stripe(hash).remove(hash, rule, id);
    }

    #[inline]
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The stripe of `hash`, locked. A poisoned stripe is still sound: every update is a single
    /// insert of a computed value.
    fn stripe(&self, hash: u64) -> MutexGuard<'_, Stripe> {
        self.stripes[hash as usize % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        (0..STRIPES as u64).map(|i| self.stripe(i).len()).sum()
    }
}

impl Stored {
    #[inline]
    fn live(&self, now: u64) -> Option<State> {
        (self.expires_at_ms > now).then_some(self.state)
    }
}

impl Bucket {
    #[inline]
    fn belongs_to(&self, rule: &str, id: &str) -> bool {
        self.rule_len == rule.len()
            && self.owner.get(..rule.len()) == Some(rule)
            && self.owner.get(rule.len()..) == Some(id)
    }
}

impl Stripe {
    fn get(&self, hash: u64, rule: &str, id: &str) -> Option<Stored> {
        match self.buckets.get(&hash) {
            Some(bucket) if bucket.belongs_to(rule, id) => Some(bucket.stored),
            _ if self.collided.is_empty() => None,
            _ => self.collided.get(&owned(rule, id)).copied(),
        }
    }

    /// Stores a bucket (a new one only where [`has_room`](Self::has_room) said so).
    fn put(&mut self, hash: u64, rule: &str, id: &str, stored: Stored) {
        if let Some(bucket) = self.buckets.get_mut(&hash) {
            if bucket.belongs_to(rule, id) {
                bucket.stored = stored;
            } else {
                self.collided.insert(owned(rule, id), stored);
            }
            return;
        }
        if !self.collided.is_empty()
            && let Some(slot) = self.collided.get_mut(&owned(rule, id))
        {
            *slot = stored;
            return;
        }
        let bucket = Bucket {
            rule_len: rule.len(),
            owner: format!("{rule}{id}").into_boxed_str(),
            stored,
        };
        self.buckets.insert(hash, bucket);
    }

    fn remove(&mut self, hash: u64, rule: &str, id: &str) {
        if self
            .buckets
            .get(&hash)
            .is_some_and(|b| b.belongs_to(rule, id))
        {
            self.buckets.remove(&hash);
        } else if !self.collided.is_empty() {
            self.collided.remove(&owned(rule, id));
        }
    }

    fn len(&self) -> usize {
        self.buckets.len() + self.collided.len()
    }

    /// Whether a new bucket fits, after dropping the buckets that are full again (they are the
    /// same as never seen) when the stripe is at `max`.
    fn has_room(&mut self, now: u64, max: usize) -> bool {
        if self.len() < max {
            return true;
        }
        if now < self.no_room_until {
            return false;
        }
        let margin = IDLE_MARGIN.as_millis() as u64;
        let full_again = |s: &Stored| s.expires_at_ms.saturating_sub(margin) <= now;
        self.buckets.retain(|_, b| !full_again(&b.stored));
        self.collided.retain(|_, s| !full_again(s));
        self.overflow.retain(|_, s| !full_again(s));
        if self.len() < max {
            return true;
        }
        // Nothing to drop before the first bucket is full again: no sweep until then.
        self.no_room_until = self
            .buckets
            .values()
            .map(|b| &b.stored)
            .chain(self.collided.values())
            .map(|s| s.expires_at_ms.saturating_sub(margin))
            .min()
            .unwrap_or(now);
        false
    }
}

/// The owned key of a collided bucket (only ever built when a collision happened).
fn owned(rule: &str, id: &str) -> (Box<str>, Box<str>) {
    (rule.into(), id.into())
}

/// Through the trait a bucket is known by its key alone.
#[async_trait]
impl BucketStore for MemoryBuckets {
    async fn take(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        Ok(self.take_for("", key, spec, now_ms))
    }

    async fn peek(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        Ok(self.peek_for("", key, spec, now_ms))
    }

    async fn reset(&self, key: &str) -> Result<()> {
        self.reset_for("", key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::rule::spec;

    #[test]
    fn memory_stays_bounded_under_a_flood_of_clients() {
        let store = MemoryBuckets::new(1024);
        let s = spec(10, 1, 1000, 1);
        for i in 0..100_000 {
            store.take_for("r", &format!("client-{i}"), s, Some(0));
        }
        assert!(store.held() <= 1024 + STRIPES, "{}", store.held());
        // Buckets expire once they would be full, on the decisions' clock.
        let id = "client-0";
        assert_eq!(store.peek_for("r", id, s, Some(0)).remaining, 9);
        assert_eq!(store.peek_for("r", id, s, Some(2_001)).remaining, 10);
    }

    /// Regression: a full stripe dropped arbitrary live buckets, so flooding the limiter with
    /// distinct ids refilled other clients' buckets — a way around any limit.
    #[test]
    fn a_flood_of_new_ids_cannot_refill_a_depleted_bucket() {
        let store = MemoryBuckets::new(1024);
        let s = spec(5, 1, 60_000, 1);
        for _ in 0..5 {
            assert!(store.take_for("login", "victim", s, Some(0)).allowed);
        }
        assert!(!store.take_for("login", "victim", s, Some(0)).allowed);
        for i in 0..200_000 {
            store.take_for("login", &format!("flood-{i}"), s, Some(1));
        }
        assert!(
            !store.take_for("login", "victim", s, Some(2)).allowed,
            "the flood refilled the victim's bucket"
        );
    }

    /// A full stripe whose buckets are all live sends new clients to one shared bucket per
    /// rule: a flood of fresh ids gets the capacity of one client, not one each.
    #[test]
    fn new_ids_share_an_overflow_bucket_while_every_bucket_is_live() {
        let store = MemoryBuckets::new(16 * STRIPES as u64);
        let s = spec(2, 1, 60_000, 1);
        let mut allowed = 0;
        for i in 0..100_000 {
            allowed += usize::from(
                store
                    .take_for("login", &format!("flood-{i}"), s, Some(0))
                    .allowed,
            );
        }
        // The ids that found room (16 a stripe) and two per stripe's overflow bucket.
        assert!(allowed <= (16 + 2) * STRIPES, "{allowed} allowed");
        // Once the buckets are full again, new clients get buckets of their own.
        assert!(store.take_for("login", "late", s, Some(120_000)).allowed);
        assert!(store.take_for("login", "late", s, Some(120_000)).allowed);
    }

    #[test]
    fn rules_and_ids_never_share_a_bucket() {
        let store = MemoryBuckets::new(1024);
        let s = spec(1, 1, 60_000, 1);
        assert!(store.take_for("ab", "c", s, Some(0)).allowed);
        assert!(store.take_for("a", "bc", s, Some(0)).allowed);
        assert!(!store.take_for("ab", "c", s, Some(0)).allowed);
        store.reset_for("ab", "c");
        assert!(store.take_for("ab", "c", s, Some(0)).allowed);
        assert!(!store.take_for("a", "bc", s, Some(0)).allowed);
    }

    #[test]
    fn collided_buckets_stay_apart() {
        let mut stripe = Stripe::default();
        let s = |at| Stored {
            state: State {
                units: 1.0,
                at_ms: at,
            },
            expires_at_ms: 100,
        };
        // Two owners forced onto one hash.
        stripe.put(7, "r", "one", s(1));
        stripe.put(7, "r", "two", s(2));
        stripe.put(7, "r", "two", s(3));
        assert_eq!(stripe.get(7, "r", "one").map(|s| s.state.at_ms), Some(1));
        assert_eq!(stripe.get(7, "r", "two").map(|s| s.state.at_ms), Some(3));
        stripe.remove(7, "r", "one");
        assert!(stripe.get(7, "r", "one").is_none());
        assert_eq!(stripe.get(7, "r", "two").map(|s| s.state.at_ms), Some(3));
        assert_eq!(stripe.len(), 1);
    }

    #[test]
    fn refills_follow_the_injected_clock() {
        let clock = Clock::manual();
        let store = MemoryBuckets::new(1024).with_clock(clock.clone());
        let s = spec(1, 1, 1000, 1);
        assert!(store.take_for("r", "c", s, None).allowed);
        assert!(!store.take_for("r", "c", s, None).allowed);
        clock.advance(Duration::from_millis(999));
        assert!(!store.take_for("r", "c", s, None).allowed);
        clock.advance(Duration::from_millis(1));
        assert!(store.take_for("r", "c", s, None).allowed);
    }
}
