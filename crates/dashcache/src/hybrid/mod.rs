//! [`HybridCache`]: a bounded in-process L1 in front of Redis, kept coherent by Redis itself,
//! with a staleness bound Δ that holds under faults.
//!
//! - **Reads** of a tracked key are answered from L1 with no network while L1 may serve; a
//!   miss reads Redis (value and remaining TTL in one round trip) and fills L1 for no longer
//!   than the key has left there, and no longer than [`max_ttl`](HybridCacheBuilder::max_ttl).
//!   "No such key" is remembered too. `get_many` is answered by L1 when it holds every key,
//!   else by Redis in one round trip: an L1 part and a Redis part could straddle a write.
//! - **Writes** of every kind (`set`, `delete`, `take`, `increment`, `expire`, sets,
//!   `write_if`, `delete_pattern`) go to Redis, then drop the keys from this instance's L1 at
//!   once (read-your-writes). `ttl`, `set_members` and `ping` always ask Redis.
//! - **Coherence comes from the server**: a tracking connection per server (RESP3
//!   `CLIENT TRACKING` in broadcasting mode on the tracked prefixes; one per master on a
//!   cluster) hears of *every* write to a tracked key — from another instance, a `redis-cli`,
//!   a service in another language — and drops the key from L1.
//! - **The staleness bound Δ** (default 1 s): L1 serves only while the tracking connections
//!   have proven within Δ that no invalidation is outstanding (a probe's reply comes after
//!   every invalidation the server produced before it). A value served from L1 at time `t`
//!   therefore misses no write made before `t − Δ`. When the proof lapses — Redis frozen,
//!   killed, restarted, the connection killed, a master failing over — reads go to Redis
//!   (and fail open there as usual), and after a reconnection L1 is flushed before it serves
//!   again.
//! - **No stale fill**: a value read from Redis before an invalidation of its key never lands
//!   in L1 after it.
//!
//! What it costs: one tracking connection per server, four small probes per Δ, and one push
//! per write to a tracked prefix per instance — which is why only read-mostly namespaces
//! should be tracked ([`track_prefix`](HybridCacheBuilder::track_prefix),
//! [`track_namespaces`](HybridCacheBuilder::track_namespaces)); other keys bypass L1. Unlike
//! a pub/sub backplane, which only hears the writes made through the library and loses what
//! is published while it reconnects, nothing here depends on who wrote or on a message
//! arriving: a lost channel stops L1 within Δ.
//!
//! ```no_run
//! # async fn run() -> dashcache::Result<()> {
//! use std::time::Duration;
//! use dashcache::{Cache, Keys, RedisCache, Ttl, hybrid::HybridCache};
//!
//! let keys = Keys::new("app", ["user", "session", "ratelimit"])?;
//! let redis = RedisCache::connect("redis://127.0.0.1:6379").await?;
//! let cache = HybridCache::builder(redis)
//!     .track_namespaces(&keys, ["user", "session"])?
//!     .staleness(Duration::from_millis(500))
//!     .build()?;
//! let key = keys.key(["user", "42"])?;
//! cache.set(&key, "Ada".into(), Ttl::secs(60)).await?;
//! let first = cache.get(&key).await?;    // from Redis, now in L1
//! let second = cache.get(&key).await?;   // from L1, no network
//! assert_eq!(first, second);
//! # Ok(())
//! # }
//! ```

mod builder;
mod coherence;
#[cfg(test)]
mod hold;
mod read;
mod tracking;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;

pub use builder::HybridCacheBuilder;
use coherence::{Coherence, Held, Ticket};

use crate::RedisCache;
use crate::cache::{Cache, Condition, KeyTtl, Ttl, Write};
use crate::coherent::Follower;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{CacheMetrics, Event};

/// The name a hybrid cache's tracking connections give themselves: `CLIENT LIST` shows them
/// (and `CLIENT KILL` can find them, as the fault tests do).
pub const TRACKING_CLIENT_NAME: &str = "dashcache-l1-tracking";

/// How many L1 answers in each get their age measured.
const AGE_SAMPLE_EVERY: u32 = 16;

/// One in [`AGE_SAMPLE_EVERY`] L1 answers on this thread. Its own counter, not
/// `instrument::sampled`'s: a layer above that samples too (`Instrumented`) would share the tick, and
/// with a fixed number of samplings per request the age could land on the same residue every
/// time and never be measured.
fn age_sampled() -> bool {
    thread_local! {
        static TICK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    TICK.with(|tick| {
        let next = tick.get().wrapping_add(1);
        tick.set(next);
        next % AGE_SAMPLE_EVERY == 0
    })
}

/// A bounded L1 in front of a [`RedisCache`]; see the [module docs](self). `Clone` is a cheap
/// handle: clones share L1, the tracker and the connections.
#[derive(Clone)]
pub struct HybridCache {
    inner: Arc<Inner>,
}

struct Inner {
    l2: RedisCache,
    coherence: Arc<Coherence>,
    prefixes: Box<[String]>,
    max_ttl_millis: u64,
    staleness: Duration,
    metrics: Option<CacheMetrics>,
    /// The database's log, for the namespaces that follow it (see [`crate::coherent`]).
    follower: Option<Follower>,
    report: Arc<tracking::Report>,
    task: tokio::task::JoinHandle<()>,
    #[cfg(test)]
    gate: Arc<hold::FillGate>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for HybridCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridCache")
            .field("l2", &self.inner.l2)
            .field("prefixes", &self.inner.prefixes)
            .field("staleness", &self.inner.staleness)
            .field("status", &self.status())
            .finish()
    }
}

/// What a hybrid cache can say about its L1; see [`HybridCache::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HybridStatus {
    /// Whether L1 may serve right now.
    pub serving: bool,
    /// How long ago the probe that lets it serve was sent.
    pub proven_ago: Option<Duration>,
    /// Servers tracked now (the masters, on a cluster).
    pub tracked_nodes: usize,
    /// Tracking connections made so far (each one flushed L1 before it served).
    pub connections: u64,
    /// Times L1 was flushed (a new connection, `FLUSHALL`).
    pub flushes: u64,
    /// Keys Redis said had changed.
    pub invalidations: u64,
    /// Values read from Redis that were not put into L1 because their key changed meanwhile.
    pub fills_refused: u64,
    /// Entries in L1.
    pub l1_entries: u64,
}

impl HybridCache {
    /// Starts configuring a hybrid cache in front of `l2`.
    pub fn builder(l2: RedisCache) -> HybridCacheBuilder {
        HybridCacheBuilder::new(l2)
    }

    /// Redis, the L2.
    pub fn l2(&self) -> &RedisCache {
        &self.inner.l2
    }

    /// The staleness bound Δ.
    pub fn staleness(&self) -> Duration {
        self.inner.staleness
    }

    /// Whether L1 is serving, and what the tracker has seen.
    pub fn status(&self) -> HybridStatus {
        let c = &self.inner.coherence;
        HybridStatus {
            serving: c.serving(),
            proven_ago: c.proven_ago(),
            tracked_nodes: self.inner.report.nodes.load(Ordering::Relaxed),
            connections: self.inner.report.connections.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            fills_refused: c.fills_refused.load(Ordering::Relaxed),
            l1_entries: c.l1.entry_count(),
        }
    }

    /// Waits until L1 serves, at most `limit`; whether it does. For start-up and tests: a
    /// cache serves correctly (from Redis) before.
    pub async fn ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.inner.coherence.serving() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Drops `keys` from this instance's L1 now, and refuses fills of them already in flight:
    /// how the database's log reaches L1 when Redis cannot (see [`crate::coherent`]).
    pub fn invalidate_local(&self, keys: &[&str]) {
        self.invalidate(keys);
    }

    /// Empties this instance's L1 (a new epoch: fills in flight do not land either).
    pub fn flush_local(&self) {
        self.inner.coherence.flush();
    }

    /// The follower of the database's log, when coherent namespaces were declared.
    pub fn follower(&self) -> Option<&Follower> {
        self.inner.follower.as_ref()
    }

    /// The follower, when it covers `key`.
    #[inline]
    fn following(&self, key: &str) -> Option<&Follower> {
        self.inner.follower.as_ref().filter(|f| f.covers(key))
    }

    /// Whether L1 may answer `key` now: the log's proof for a coherent key, Redis' own for
    /// the others.
    #[inline]
    fn l1_may_answer(&self, key: &str) -> bool {
        match self.following(key) {
            Some(follower) => follower.proven(),
            None => self.inner.coherence.serving(),
        }
    }

    /// Whether Redis must not be asked for `key` now: a coherent key that the log does not
    /// prove, or whose invalidation has not reached Redis yet. It reads as absent.
    #[inline]
    fn l2_closed(&self, key: &str) -> bool {
        self.following(key)
            .is_some_and(|follower| !follower.shared_may_answer(key))
    }

    /// `keys` from Redis on the cache's own connection, closed keys read as absent.
    async fn l2_get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let closed: Vec<bool> = keys.iter().map(|k| self.l2_closed(k)).collect();
        if !closed.is_empty() && closed.iter().all(|c| *c) {
            return Ok(vec![None; keys.len()]);
        }
        let mut values = self.inner.l2.get_many(keys).await?;
        for (value, closed) in values.iter_mut().zip(closed) {
            if closed {
                *value = None;
            }
        }
        Ok(values)
    }

    /// Whether `key` is one L1 may hold.
    #[inline]
    fn tracked(&self, key: &str) -> bool {
        let prefixes = &self.inner.prefixes;
        prefixes.is_empty() || prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn record(&self, key: &str, event: Event) {
        if let Some(metrics) = &self.inner.metrics {
            metrics.record(key, event);
        }
    }

    /// L1's answer for `key`, if it may give one.
    #[inline]
    fn l1_answer(&self, key: &str) -> Option<Option<Bytes>> {
        if !self.tracked(key) {
            return None;
        }
        let coherence = &self.inner.coherence;
        if !self.l1_may_answer(key) {
            self.record(key, Event::L1Bypassed);
            return None;
        }
        let held = coherence.held(key)?;
        if let Some(metrics) = &self.inner.metrics {
            let ns = metrics.for_key(key);
            ns.record(Event::L1Hit);
            if let Held::Value(_, age) = &held
                && age_sampled()
            {
                ns.record_l1_age(*age);
            }
        }
        Some(match held {
            Held::Value(value, _) => Some(value),
            Held::Absent => None,
        })
    }

    /// Reads `key` from Redis — on the tracking connection of its server, then fills L1 —
    /// or on the cache's own connection when L1 may not serve or has no connection there.
    async fn read_through(&self, key: &str) -> Result<Option<Bytes>> {
        let l2 = &self.inner.l2;
        let link = if self.tracked(key) && self.inner.coherence.serving() {
            l2.limits().check_key(key)?;
            l2.node_label_of(key.as_bytes())
                .and_then(|label| self.inner.coherence.link(&label))
        } else {
            None
        };
        let Some(mut link) = link else {
            if self.l2_closed(key) {
                return Ok(None);
            }
            return l2.get(key).await;
        };
        let ticket = self.inner.coherence.ticket();
        // After the ticket: an invalidation the log makes pending after this check also
        // evicts the key after the ticket, so the fill is refused.
        if self.l2_closed(key) {
            return Ok(None);
        }
        match tokio::time::timeout(l2.timeout(), read::one(&mut link, key)).await {
            Ok(Ok((value, ttl))) => {
                if value.is_some() {
                    self.record(key, Event::L2Hit);
                }
                self.fill(key, ticket, value.as_ref(), ttl).await;
                Ok(value)
            }
            Ok(Err(e)) if read::retry_elsewhere(&e) => l2.get(key).await,
            Ok(Err(e)) => Err(crate::redis::convert_error(e).with_key(key)),
            Err(_) => Err(self.timed_out(key)),
        }
    }

    fn timed_out(&self, key: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "no answer from {} within {} ms",
                self.inner.l2.url(),
                self.inner.l2.timeout().as_millis()
            ),
        )
        .with_key(key)
    }

    /// Reads `keys` (all tracked) on the tracking connections, one transaction per slot, and
    /// fills L1 with them; `None` when a server has no tracking connection or a read must be
    /// redone on the cache's own connections.
    async fn read_many_linked(&self, keys: &[&str]) -> Option<Result<Vec<Option<Bytes>>>> {
        let l2 = &self.inner.l2;
        let coherence = &self.inner.coherence;
        if let Err(e) = keys.iter().try_for_each(|k| l2.limits().check_key(k)) {
            return Some(Err(e));
        }
        // Keys by server and slot: one transaction may not span slots on a cluster.
        let mut groups: Vec<(MultiplexedConnection, u16, Vec<usize>)> = Vec::new();
        for (at, key) in keys.iter().enumerate() {
            let slot = if l2.is_cluster() {
                crate::redis::slot_of(key.as_bytes())
            } else {
                0
            };
            match groups.iter_mut().find(|(_, s, _)| *s == slot) {
                Some((_, _, members)) => members.push(at),
                None => {
                    let link = l2
                        .node_label_of(key.as_bytes())
                        .and_then(|label| coherence.link(&label))?;
                    groups.push((link, slot, vec![at]));
                }
            }
        }
        let ticket = coherence.ticket();
        // After the ticket, as in `read_through`: closed keys are neither filled nor answered.
        let closed: Vec<bool> = keys.iter().map(|k| self.l2_closed(k)).collect();
        let reads = groups.into_iter().map(|(mut link, _, members)| async move {
            let wanted: Vec<&str> = members
                .iter()
                .filter_map(|&at| keys.get(at).copied())
                .collect();
            read::many(&mut link, &wanted)
                .await
                .map(|stamped| members.into_iter().zip(stamped).collect::<Vec<_>>())
        });
        let replies =
            match tokio::time::timeout(l2.timeout(), futures::future::try_join_all(reads)).await {
                Ok(Ok(replies)) => replies,
                Ok(Err(e)) if read::retry_elsewhere(&e) => return None,
                Ok(Err(e)) => return Some(Err(crate::redis::convert_error(e))),
                Err(_) => {
                    return Some(Err(
                        self.timed_out(keys.first().copied().unwrap_or_default())
                    ));
                }
            };
        let mut values: Vec<Option<Bytes>> = vec![None; keys.len()];
        for (at, (value, ttl)) in replies.into_iter().flatten() {
            let Some(key) = keys.get(at) else { continue };
            if closed.get(at).copied().unwrap_or(true) {
                continue;
            }
            if value.is_some() {
                self.record(key, Event::L2Hit);
            }
            self.fill(key, ticket, value.as_ref(), ttl).await;
            if let Some(slot) = values.get_mut(at) {
                *slot = value;
            }
        }
        Some(Ok(values))
    }

    /// Puts what Redis answered under `ticket` into L1, for as long as the key has left
    /// there (counted from when the read was sent) and no longer than L1's maximum.
    async fn fill(&self, key: &str, ticket: Ticket, value: Option<&Bytes>, redis_ttl: i64) {
        let max = self.inner.max_ttl_millis;
        let ttl = match (value, redis_ttl) {
            (None, -2) | (Some(_), -1) => max,
            (Some(_), left) if left > 0 => {
                let elapsed = self.inner.coherence.now().saturating_sub(ticket.sent);
                let elapsed_millis = elapsed.div_ceil(1_000_000);
                max.min(left.unsigned_abs().saturating_sub(elapsed_millis))
            }
            // Another type (GET fails on it, MGET reads it as nothing), or about to expire.
            _ => return,
        };
        if ttl == 0 {
            return;
        }
        // Tests hold fills here to put an invalidation between a read of Redis and its fill.
        #[cfg(test)]
        self.inner.gate.pass().await;
        self.inner.coherence.fill(key, ticket, value, ttl);
    }

    /// Drops `keys` from this instance's L1 (in one step) and refuses fills of them already
    /// in flight.
    fn invalidate(&self, keys: &[&str]) {
        self.inner.coherence.invalidate(keys);
    }
}

#[async_trait]
impl Cache for HybridCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if let Some(found) = self.l1_answer(key) {
            return Ok(found);
        }
        self.read_through(key).await
    }

    #[inline]
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.l1_answer(key).map(Ok)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let done = self.inner.l2.set(key, value, ttl).await;
        // Even after a failure: a write that timed out may still have been applied.
        self.invalidate(&[key]);
        done
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let done = self.inner.l2.set_if_absent(key, value, ttl).await;
        self.invalidate(&[key]);
        done
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        let done = self.inner.l2.take(key).await;
        self.invalidate(&[key]);
        done
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let done = self.inner.l2.delete(key).await;
        self.invalidate(&[key]);
        done
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let done = self.inner.l2.delete_many(keys).await;
        self.invalidate(keys);
        done
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.l1_answer(key) {
            Some(found) => Ok(found.is_some()),
            None if self.l2_closed(key) => Ok(false),
            None => self.inner.l2.exists(key).await,
        }
    }

    /// Everything from L1 when it holds every key; otherwise every key from Redis in one round
    /// trip (a batch is one snapshot either way).
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() || !keys.iter().all(|k| self.tracked(k)) {
            return self.l2_get_many(keys).await;
        }
        let coherence = &self.inner.coherence;
        if !keys.iter().all(|k| self.l1_may_answer(k)) {
            keys.iter().for_each(|k| self.record(k, Event::L1Bypassed));
            if !coherence.serving() {
                return self.l2_get_many(keys).await;
            }
            return match self.read_many_linked(keys).await {
                Some(all) => all,
                None => self.l2_get_many(keys).await,
            };
        }
        let held = coherence.held_many(keys);
        let mut values: Vec<Option<Bytes>> = Vec::with_capacity(keys.len());
        let mut missing: Vec<usize> = Vec::new();
        for (at, found) in held.into_iter().enumerate() {
            match found {
                Some(Held::Value(value, _)) => values.push(Some(value)),
                Some(Held::Absent) => values.push(None),
                None => {
                    values.push(None);
                    missing.push(at);
                }
            }
        }
        if missing.is_empty() {
            keys.iter().for_each(|k| self.record(k, Event::L1Hit));
            return Ok(values);
        }
        // A part from L1 and a part from Redis would not make one snapshot: with BCAST
        // tracking, Redis sends a write's invalidation at the end of the event-loop iteration
        // that ran it, so a read answered in that same iteration can arrive before it (seen:
        // a batch read with one key of a multi-key write new and the other old). Every key
        // comes from Redis then, in the same single round trip.
        if !coherence.serving() {
            // L1 answered on the log's proof (Redis' own has lapsed), but does not hold
            // every key: no tracking connection to read on.
            return self.l2_get_many(keys).await;
        }
        match self.read_many_linked(keys).await {
            Some(all) => all,
            None => self.l2_get_many(keys).await,
        }
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let done = self.inner.l2.set_many(entries, ttl).await;
        let keys: Vec<&str> = entries.iter().map(|(key, _)| *key).collect();
        self.invalidate(&keys);
        done
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        let done = self.inner.l2.increment(key, delta, ttl_on_create).await;
        self.invalidate(&[key]);
        done
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let done = self.inner.l2.expire(key, ttl).await;
        self.invalidate(&[key]);
        done
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        if self.l2_closed(key) {
            return Ok(KeyTtl::Missing);
        }
        self.inner.l2.ttl(key).await
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let done = self.inner.l2.delete_pattern(pattern).await;
        // Fills that read before the sweep must not land; then L1's own matches go.
        self.inner.coherence.raise_barrier();
        if let Err(e) = self.inner.coherence.l1.delete_pattern(pattern).await {
            // L1 cannot be trusted to have dropped them: drop everything.
            tracing::warn!(
                code = e.code(),
                "hybrid cache: L1 sweep failed; flushing L1"
            );
            self.inner.coherence.flush();
        }
        done
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        let done = self.inner.l2.set_add(key, members, ttl).await;
        self.invalidate(&[key]);
        done
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        let done = self.inner.l2.set_remove(key, members).await;
        self.invalidate(&[key]);
        done
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        if self.l2_closed(key) {
            return Ok(Vec::new());
        }
        self.inner.l2.set_members(key).await
    }

    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        let done = self.inner.l2.write_if(conditions, writes).await;
        let keys: Vec<&str> = writes.iter().map(Write::key).collect();
        self.invalidate(&keys);
        done
    }

    async fn ping(&self) -> Result<Duration> {
        self.inner.l2.ping().await
    }
}
