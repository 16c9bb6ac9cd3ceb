//! Single-flight across processes: a miss takes a short lease on its key before it loads;
//! other processes that miss the same key wait for the holder's value instead of loading too.
//!
//! - The lease is a companion key ([`lease_key`], on the key's hash slot) set only when absent,
//!   holding a random token, with a TTL: a holder that dies frees it by expiring.
//! - Waiters poll the key, its fence and its lease in one round trip, first after 2 ms and then
//!   with the delay doubling up to 8 ms (at most 125 small reads a second per waiting
//!   process). A poll rather than a keyspace notification or a tracking push: it needs no
//!   server configuration (`notify-keyspace-events` is off by default and often locked on
//!   managed Redis), no second connection, and works the same on every backend; and only one
//!   task per process polls a key (the others wait on its in-process flight).
//! - A waiter stops waiting when the value arrives (it is answered from the cache), when the
//!   lease is gone without a value (its holder failed: the waiter takes the lease itself), or
//!   at the wait bound (it loads itself, unleased: fail-open). Every fill is still fenced, so a
//!   holder whose lease expired cannot commit over a newer generation.

use std::time::Duration;

use bytes::Bytes;

use super::envelope::decode;
use super::fence::{Seen, fence_key, lease_key, new_generation};
use super::{CachedValue, Fill, Found, Inner};
use crate::cache::{Condition, Ttl, Write};
use crate::metrics::Event;

/// The first delay between two polls of a waiter.
const FIRST_POLL: Duration = Duration::from_millis(2);
/// The longest delay between two polls.
const MAX_POLL: Duration = Duration::from_millis(8);

/// How long a lease lives and how long a process waits for another's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseConfig {
    pub(super) ttl: Duration,
    pub(super) wait: Duration,
}

/// What a miss got when it asked for the lease.
pub(super) enum Claim {
    /// This process loads; the token releases the lease.
    Won(i64),
    /// Another process is loading.
    Held,
    /// The cache failed: load without a lease.
    Failed,
}

/// How a wait for another process's load ended.
pub(super) enum Waited<V> {
    /// Its value arrived.
    Value(V),
    /// The lease is gone and no value came: its holder failed or died. The fill to load with,
    /// as read by the last poll.
    Released(Fill),
    /// The wait bound passed (or the cache failed): load without a lease.
    TimedOut(Fill),
}

impl Inner {
    /// Tries to take `key`'s lease, only while the key's generation is still the one `fill`
    /// saw: a fill committed since (which changes the generation) means the value is there
    /// and there is nothing to load, so the claim fails as if the lease were held.
    pub(super) async fn claim(&self, key: &str, config: LeaseConfig, fill: Fill) -> Claim {
        let lease = lease_key(key);
        let fence = fence_key(key);
        let token = new_generation();
        let take = Write::SetInt(&lease, token, Ttl::from(config.ttl));
        let mut conditions = vec![Condition::Absent(&lease)];
        if let Fill::Fenced(seen) = fill {
            conditions.push(match seen.generation {
                Some(generation) => Condition::IntEquals(&fence, generation),
                None => Condition::Absent(&fence),
            });
        }
        match self.cache.write_if(&conditions, &[take]).await {
            Ok(true) => {
                self.count(key, Event::LeaseWon, false);
                Claim::Won(token)
            }
            Ok(false) => Claim::Held,
            Err(e) => {
                self.cache_failed(key, &e, false);
                Claim::Failed
            }
        }
    }

    /// Gives `key`'s lease back if it is still the one `token` took (it may have expired and
    /// been taken by another process since).
    pub(super) async fn release(&self, key: &str, token: i64) {
        let lease = lease_key(key);
        if let Err(e) = self
            .cache
            .write_if(
                &[Condition::IntEquals(&lease, token)],
                &[Write::Delete(&lease)],
            )
            .await
        {
            // Harmless: the lease expires by itself; waiters load at their bound.
            self.cache_failed(key, &e, false);
        }
    }

    /// Waits until `deadline` for the lease holder's value of `key`; `fill` is how a load
    /// would commit as of the last read, `tags` the tag versions the lookup read (empty when
    /// untagged).
    pub(super) async fn wait_for<V: CachedValue>(
        &self,
        key: &str,
        mut fill: Fill,
        tags: &[i64],
        deadline: tokio::time::Instant,
    ) -> Waited<V> {
        let fence = fence_key(key);
        let lease = lease_key(key);
        let mut delay = FIRST_POLL;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Waited::TimedOut(fill);
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(MAX_POLL);
            let Ok(mut found) = self.cache.get_many(&[key, &fence, &lease]).await else {
                return Waited::TimedOut(Fill::Unfenceable);
            };
            let holder = found.pop().flatten();
            let generation = found.pop().flatten();
            // A tagged value counts only if it was loaded under the tag versions this lookup
            // saw: one loaded before a later tag invalidation is not an answer.
            if let Some(Some(bytes)) = found.pop()
                && let Ok(env) = decode::<V>(key, &bytes)
                && env.fresh_at(self.clock.unix_millis())
                && env.tags == tags
            {
                return Waited::Value(env.value);
            }
            fill = self.fill_from(generation.as_ref());
            if holder.is_none() {
                return Waited::Released(fill);
            }
        }
    }

    /// How to commit a load that starts now, given the generation just read.
    pub(super) fn fill_from(&self, generation: Option<&Bytes>) -> Fill {
        if self.fence.is_none() {
            return Fill::Plain;
        }
        Seen::parse(generation, &self.clock).map_or(Fill::Unfenceable, Fill::Fenced)
    }

    /// The value in `bytes` if it decodes and is still fresh.
    pub(super) fn fresh<V: CachedValue>(&self, key: &str, bytes: &[u8]) -> Option<V> {
        match self.judge::<V>(key, bytes, None) {
            Ok(Found::Fresh(env)) => Some(env.value),
            _ => None,
        }
    }
}
