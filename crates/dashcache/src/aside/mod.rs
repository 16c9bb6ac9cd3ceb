//! Cache-aside done right: [`CacheAside::get_or_load`] and its bulk form.
//!
//! The caller gets the loader's own `Result`; a cache failure never reaches it:
//!
//! - **single-flight**: concurrent misses of one key in this process run the loader once; the
//!   others wait for its result (its error too);
//! - **fail-open**: an unreachable, slow or breaker-shed cache, or a corrupt cached value, sends
//!   the lookup to the loader; the failure is logged once per burst and counted;
//! - **TTL jitter** (±10 % by default), so keys written together do not expire together;
//! - **serve-stale** (optional): a value outlives its TTL by a window; past the TTL it is
//!   refreshed, and when the refresh fails (error or loader timeout) the stale value is served;
//! - **negative caching** (optional) of "not found", with its own TTL;
//! - a **loader timeout** (optional);
//! - **fenced fills** (on by default): an [`invalidate`](CacheAside::invalidate) defeats every
//!   fill whose load began before it, on every backend — *at most one committed fill per
//!   generation, and a fill older than the latest invalidation is never committed*. A refused
//!   fill still answers its caller and is counted (`fills_rejected`). How: the `fence` module.
//! - **single-flight across processes** (optional, [`leases`](CacheAsideBuilder::leases)): one
//!   process loads a missing key, the others wait for its value, up to a bound;
//! - **refresh-ahead** (optional, [`refresh_ahead`](CacheAsideBuilder::refresh_ahead)): a hit
//!   near the end of its TTL reloads the key in the background;
//! - **tags** ([`get_or_load_tagged`](CacheAside::get_or_load_tagged),
//!   [`invalidate_tag`](CacheAside::invalidate_tag)): invalidate every value of a tag in one
//!   write;
//! - **warming** ([`warm`](CacheAside::warm)): load a set of keys ahead of traffic, in batches,
//!   under the same TTLs and fences.
//!
//! Values are stored as JSON behind a 12-byte header (format tag and the instant the value
//! stops being fresh), so a stale window works the same on every backend. Keys written through
//! `CacheAside` belong to it: read them through it, not with `get_json`.

mod builder;
mod bulk;
mod envelope;
pub(crate) mod fence;
mod flight;
mod lease;
mod refresh;
mod tags;
mod warm;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::CacheAsideBuilder;
use envelope::{decode, encode};
use fence::{Seen, fence_key, new_generation};
use flight::{Flight, Source};
pub use warm::WarmReport;

use crate::cache::{Cache, Condition, Ttl, Write};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind};
use crate::fallback::BurstLog;
use crate::metrics::{CacheMetrics, Event};
use crate::vars;

/// How one lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A fresh value (or a cached "not found") came from the cache.
    Hit,
    /// The cache had nothing usable; the loader answered.
    Miss,
    /// The refresh of an expired value failed; the stale value was served.
    Stale,
    /// The cache failed; the loader answered and nothing was written.
    Bypassed,
}

/// The answer of one lookup and how it was reached.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lookup<T, E> {
    /// The loader's result, or the cached value.
    pub result: Result<T, E>,
    /// Where it came from.
    pub outcome: Outcome,
}

/// The loader did not finish within the configured timeout. Loader error types implement
/// `From<LoaderTimeout>` so a timed-out load can be reported in their own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderTimeout(pub Duration);

impl fmt::Display for LoaderTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the loader did not finish within {:?}", self.0)
    }
}

impl std::error::Error for LoaderTimeout {}

/// What a cached value must be: JSON both ways, `Clone` (every waiter of a single-flight gets
/// its own copy) and shareable across tasks. Implemented for every such type.
pub trait CachedValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> CachedValue for T {}

/// What a single-flighted loader's error must be: a timed-out load can be reported in its
/// terms, and every waiter gets its own copy. Implemented for every such type.
pub trait LoadError: From<LoaderTimeout> + Clone + Send + Sync + 'static {}

impl<E: From<LoaderTimeout> + Clone + Send + Sync + 'static> LoadError for E {}

/// Cache-aside over any [`Cache`]. Cheap to clone: clones share the single-flight table.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::{sync::Arc, time::Duration};
/// use dashcache::{MemoryCache, Ttl, aside::{CacheAside, LoaderTimeout}};
///
/// #[derive(Debug, Clone)]
/// struct DbError(String);
/// impl From<LoaderTimeout> for DbError {
///     fn from(t: LoaderTimeout) -> Self { DbError(t.to_string()) }
/// }
///
/// let aside = CacheAside::builder(Arc::new(MemoryCache::new()))
///     .stale_for(Duration::from_secs(60))
///     .build();
/// let name: Result<String, DbError> = aside
///     .get_or_load("app:user:1", Ttl::secs(300), || async { Ok("Ada".to_owned()) })
///     .await;
/// assert_eq!(name.unwrap(), "Ada");
/// # }
/// ```
#[derive(Clone)]
pub struct CacheAside {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Arc<dyn Cache>,
    jitter: f64,
    stale_for: Option<Duration>,
    negative_ttl: Option<Ttl>,
    loader_timeout: Option<Duration>,
    /// Fence window; `None`: fills are not fenced.
    fence: Option<Duration>,
    /// Single-flight across processes; `None`: in this process only.
    lease: Option<lease::LeaseConfig>,
    /// Refresh-ahead fraction of the TTL; `None`: off.
    refresh_ahead: Option<f64>,
    /// What tag version keys start with.
    tag_prefix: String,
    /// How long a tag's version lives after its last change.
    tag_ttl: Duration,
    metrics: Option<CacheMetrics>,
    /// False when the cache is wrapped in `Instrumented` with the same metrics, which already
    /// counts hits, misses and operation errors.
    count_reads: bool,
    clock: Clock,
    flights: Mutex<HashMap<String, Flight>>,
    /// Keys this process is refreshing ahead.
    refreshing: Mutex<HashSet<String>>,
    next_flight: AtomicU64,
    warnings: BurstLog,
}

impl fmt::Debug for CacheAside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAside")
            .field("cache", &self.inner.cache)
            .field("jitter", &self.inner.jitter)
            .field("stale_for", &self.inner.stale_for)
            .field("negative_ttl", &self.inner.negative_ttl)
            .field("loader_timeout", &self.inner.loader_timeout)
            .field("fence", &self.inner.fence)
            .field("lease", &self.inner.lease)
            .field("refresh_ahead", &self.inner.refresh_ahead)
            .finish_non_exhaustive()
    }
}

impl CacheAside {
    /// Starts configuring cache-aside over `cache`.
    pub fn builder(cache: Arc<dyn Cache>) -> CacheAsideBuilder {
        CacheAsideBuilder {
            cache,
            jitter: vars::CACHE_TTL_JITTER_PERCENT.default as f64 / 100.0,
            stale_for: None,
            negative_ttl: None,
            loader_timeout: None,
            fence: Some(fence::DEFAULT_WINDOW),
            lease: None,
            refresh_ahead: None,
            tag_prefix: "dashcache".to_owned(),
            tag_ttl: tags::DEFAULT_TAG_TTL,
            metrics: None,
            count_reads: true,
            clock: Clock::system(),
        }
    }

    /// The value at `key`, or the loader's, cached for `ttl` (jittered). Never a cache error.
    ///
    /// # Errors
    /// The loader's error when it fails and no stale value can stand in.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, ttl: Ttl, loader: F) -> Result<T, E>
    where
        T: CachedValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.load(key, ttl, loader).await.result
    }

    /// As [`get_or_load`](Self::get_or_load), with the outcome.
    pub async fn load<T, E, F, Fut>(&self, key: &str, ttl: Ttl, loader: F) -> Lookup<T, E>
    where
        T: CachedValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.lookup(key, &[], move |_: &T| Some(ttl), loader).await
    }

    /// As [`get_or_load`](Self::get_or_load), for a value written with `tags` (at most 32):
    /// [`invalidate_tag`](Self::invalidate_tag) of any of them invalidates it, in one write
    /// whatever the number of values under the tag. The tags' versions are read in the same
    /// round trip as the value. Read a tagged key always with the same tags, in the same
    /// order (other tags, or none, miss and reload it). Tagged lookups do not refresh ahead.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load). An invalid tag (empty) is a cache error like any
    /// other: logged and counted, and the loader answers.
    pub async fn get_or_load_tagged<T, E, F, Fut>(
        &self,
        key: &str,
        tags: &[&str],
        ttl: Ttl,
        loader: F,
    ) -> Result<T, E>
    where
        T: CachedValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.load_tagged(key, tags, ttl, loader).await.result
    }

    /// As [`get_or_load_tagged`](Self::get_or_load_tagged), with the outcome.
    pub async fn load_tagged<T, E, F, Fut>(
        &self,
        key: &str,
        tags: &[&str],
        ttl: Ttl,
        loader: F,
    ) -> Lookup<T, E>
    where
        T: CachedValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let tag_keys = match self.tag_keys(tags) {
            Ok(keys) => keys,
            Err(e) => {
                self.inner.cache_failed(key, &e, true);
                let ending = Ending::Loaded {
                    result: loader().await,
                    stale: None,
                    bypassed: true,
                };
                return self.inner.settle(key, ending);
            }
        };
        self.lookup(key, &tag_keys, move |_: &T| Some(ttl), loader)
            .await
    }

    /// For lookups that may find nothing: a loader's `Ok(None)` is cached for the
    /// [`negative_ttl`](CacheAsideBuilder::negative_ttl) when one is set, so repeated lookups of
    /// a missing id do not reach the database.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_optional<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        loader: F,
    ) -> Result<Option<T>, E>
    where
        T: CachedValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    {
        self.load_optional(key, ttl, loader).await.result
    }

    /// As [`get_or_load_optional`](Self::get_or_load_optional), with the outcome.
    pub async fn load_optional<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        loader: F,
    ) -> Lookup<Option<T>, E>
    where
        T: CachedValue,
        E: LoadError,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    {
        let negative = self.inner.negative_ttl;
        let ttl_for = move |v: &Option<T>| if v.is_some() { Some(ttl) } else { negative };
        self.lookup(key, &[], ttl_for, loader).await
    }

    /// Deletes `key`, so the next lookup loads afresh (after a write to the source of truth),
    /// and — with fenced fills, the default — changes its generation in the same atomic step,
    /// so no fill whose load began before this call can commit afterwards. Returns whether a
    /// cached value was removed.
    ///
    /// # Errors
    /// The cache's error: an invalidation that did not happen leaves the old value in place
    /// until its TTL, which the caller may want to log or retry.
    pub async fn invalidate(&self, key: &str) -> crate::Result<bool> {
        let result = self.inner.invalidate(key).await;
        if let Err(e) = &result {
            self.inner.cache_failed(key, e, false);
        }
        result
    }

    /// Lets no lookup from now on join a load of `keys` that began before (every key, when
    /// `keys` is empty): the source changed, and those loads may have read the old state. They
    /// go on for the callers they have, and their fills are fenced as ever. What
    /// [`invalidate`](Self::invalidate) does in this process, for invalidations that arrive
    /// some other way (the database's log: see [`crate::coherent`]).
    pub fn detach(&self, keys: &[&str]) {
        let mut flights = self.inner.flights();
        if keys.is_empty() {
            flights.clear();
        } else {
            for key in keys {
                flights.remove(*key);
            }
        }
    }

    /// The cache underneath.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.inner.cache
    }

    /// One lookup. `ttl_for` gives the TTL to store a loaded value with, or `None` to not store
    /// it (an uncached "not found").
    async fn lookup<V, E, P, F, Fut>(
        &self,
        key: &str,
        tags: &[String],
        ttl_for: P,
        loader: F,
    ) -> Lookup<V, E>
    where
        V: CachedValue,
        E: LoadError,
        P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let inner = &self.inner;
        // The tags' current versions, read with the value; `None`: untagged.
        let mut versions = None;
        let cached = if tags.is_empty() {
            match inner.cache.get_now(key) {
                Some(answer) => answer,
                None => inner.cache.get(key).await,
            }
        } else {
            let mut batch: Vec<&str> = Vec::with_capacity(tags.len() + 1);
            batch.push(key);
            batch.extend(tags.iter().map(String::as_str));
            inner.cache.get_many(&batch).await.map(|found| {
                versions = Some(tags::current_versions(found.get(1..).unwrap_or_default()));
                found.into_iter().next().flatten()
            })
        };
        let (stale, bypassed) = match inner.classify::<V>(key, cached, versions.as_ref()) {
            Found::Fresh(env) => {
                if inner.refresh_ahead.is_some()
                    && tags.is_empty()
                    && let Some(ttl) = ttl_for(&env.value)
                    && self.near_expiry(env.fresh_until, ttl)
                {
                    self.refresh_in_background(key, env.fresh_until, ttl_for, loader);
                }
                return inner.settle(key, Ending::<V, E>::Cached(env.value));
            }
            Found::Stale(value) => (Some(value), false),
            Found::Absent => (None, false),
            Found::Failed => (None, true),
        };
        let ending = match self.flight(key, tags, bypassed, ttl_for, loader).await {
            Ok((value, Source::Cached)) => Ending::Cached(value),
            Ok((value, Source::Loaded)) => Ending::Loaded {
                result: Ok(value),
                stale,
                bypassed,
            },
            Err(e) => Ending::Loaded {
                result: Err(e),
                stale,
                bypassed,
            },
        };
        inner.settle(key, ending)
    }
}

/// What the cache said about one key: decided in one place ([`Inner::classify`]) for the
/// single and the bulk lookups.
enum Found<V> {
    /// A fresh value, current under its tags: the answer.
    Fresh(envelope::Envelope<V>),
    /// A value past its freshness: load, and serve it if the load fails.
    Stale(V),
    /// Nothing usable (missing, corrupt, or written before one of its tags changed): load.
    Absent,
    /// The cache failed: load, and write nothing back.
    Failed,
}

/// How one lookup ended, before it is counted.
enum Ending<V, E> {
    /// From the cache (read now, or filled by another process or flight meanwhile).
    Cached(V),
    /// From the loader; `stale` stands in for a failed load; `bypassed`: the cache failed.
    Loaded {
        result: Result<V, E>,
        stale: Option<V>,
        bypassed: bool,
    },
}

impl Inner {
    /// What `read` (the cache's answer for `key`) means for a lookup. `versions` are the
    /// tags' current versions for a tagged lookup (`Some(None)`: they could not be read, so
    /// no tagged value is current). A corrupt value and a failed read are logged and counted
    /// here.
    fn classify<V: CachedValue>(
        &self,
        key: &str,
        read: crate::Result<Option<Bytes>>,
        versions: Option<&Option<Vec<i64>>>,
    ) -> Found<V> {
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Found::Absent,
            Err(e) => {
                self.cache_failed(key, &e, true);
                return Found::Failed;
            }
        };
        match self.judge(key, &bytes, versions) {
            Ok(found) => found,
            // The fresh value will overwrite the corrupt one.
            Err(e) => {
                self.cache_failed(key, &e, false);
                Found::Absent
            }
        }
    }

    /// What the stored `bytes` of `key` are worth, quietly (the caller reports a corrupt
    /// value): fresh, stale, or nothing when a tag changed since the value's load began.
    fn judge<V: CachedValue>(
        &self,
        key: &str,
        bytes: &[u8],
        versions: Option<&Option<Vec<i64>>>,
    ) -> crate::Result<Found<V>> {
        let env = decode::<V>(key, bytes)?;
        Ok(
            if versions.is_some_and(|now| now.as_ref() != Some(&env.tags)) {
                Found::Absent
            } else if env.fresh_at(self.clock.unix_millis()) {
                Found::Fresh(env)
            } else {
                Found::Stale(env.value)
            },
        )
    }

    /// The lookup's answer and outcome, counted: the one place that decides between hit,
    /// miss, stale and bypassed.
    fn settle<V, E>(&self, key: &str, ending: Ending<V, E>) -> Lookup<V, E> {
        let (result, outcome) = match ending {
            Ending::Cached(value) => (Ok(value), Outcome::Hit),
            Ending::Loaded {
                result: Err(_),
                stale: Some(value),
                ..
            } => (Ok(value), Outcome::Stale),
            Ending::Loaded {
                result, bypassed, ..
            } => (
                result,
                if bypassed {
                    Outcome::Bypassed
                } else {
                    Outcome::Miss
                },
            ),
        };
        // Hits and misses are reads an `Instrumented` layer sees too; the others are not.
        let (event, instrumented_sees_it) = match outcome {
            Outcome::Hit => (Event::Hit, true),
            Outcome::Miss => (Event::Miss, true),
            Outcome::Stale => (Event::Stale, false),
            Outcome::Bypassed => (Event::Bypassed, false),
        };
        self.count(key, event, instrumented_sees_it);
        Lookup { result, outcome }
    }

    /// Counts an event; one an `Instrumented` layer also sees (a read's hit or miss, a failed
    /// operation) only when no such layer counts into the same metrics.
    fn count(&self, key: &str, event: Event, instrumented_sees_it: bool) {
        if let Some(metrics) = &self.metrics
            && (self.count_reads || !instrumented_sees_it)
        {
            metrics.record(key, event);
        }
    }

    /// Logs (once per burst) and counts a cache failure the caller will not see.
    fn cache_failed(&self, key: &str, error: &Error, bypass: bool) {
        // Transport errors are already counted by an Instrumented layer; a value that does not
        // decode is only ever seen here.
        let seen_below = error.kind() != ErrorKind::Deserialize;
        self.count(key, Event::Error, seen_below);
        if let Some(suppressed) = self.warnings.should_log() {
            // The key's shape, not its id: an id may be a secret.
            tracing::warn!(
                key = ?crate::error::KeyShape(key),
                code = error.code(),
                error = %error,
                suppressed,
                "cache-aside {}: serving from the source of truth",
                if bypass { "bypassed a failing cache" } else { "ignored a cached value" }
            );
        }
    }

    /// Removes `key` and, when fenced, replaces its generation, in one atomic step each time.
    async fn invalidate(&self, key: &str) -> crate::Result<bool> {
        // A lookup from now on must not join a load that began before the source changed:
        // it would get that load's value, which the fence keeps out of the cache but not out
        // of its waiters. The load carries on for the callers it has.
        self.flights().remove(key);
        let Some(window) = self.fence else {
            return self.cache.delete(key).await;
        };
        let fence = fence_key(key);
        // Two guarded attempts tell whether a value was there; a fill committing between them
        // fails the second guard, and the next round removes its value too.
        for _ in 0..4 {
            let generation = Write::SetInt(&fence, new_generation(), Ttl::from(window));
            let removed = self
                .cache
                .write_if(
                    &[Condition::Exists(key)],
                    &[generation.clone(), Write::Delete(key)],
                )
                .await?;
            if removed {
                return Ok(true);
            }
            if self
                .cache
                .write_if(&[Condition::Absent(key)], &[generation])
                .await?
            {
                return Ok(false);
            }
        }
        let generation = Write::SetInt(&fence, new_generation(), Ttl::from(window));
        self.cache
            .write_if(&[], &[generation, Write::Delete(key)])
            .await?;
        Ok(true)
    }

    /// Encodes `value` with a jittered `ttl` plus the stale window: the bytes and the TTL to
    /// store them with. Failures are logged and counted.
    fn stored<V: Serialize>(
        &self,
        key: &str,
        value: &V,
        ttl: Ttl,
        tags: &[i64],
    ) -> Option<(Bytes, Ttl)> {
        let (fresh_until, store_ttl) = match ttl.to_millis() {
            Ok(Some(ms)) => {
                let ms = jittered(ms, self.jitter);
                let window = self.stale_for.map_or(0, |w| w.as_millis() as u64);
                (
                    self.clock.unix_millis().saturating_add(ms),
                    Ttl::millis(ms.saturating_add(window)),
                )
            }
            Ok(None) => (u64::MAX, Ttl::Persist),
            Err(e) => {
                self.cache_failed(key, &e, false);
                return None;
            }
        };
        match encode(key, value, fresh_until, tags) {
            Ok(bytes) => Some((bytes, store_ttl)),
            Err(e) => {
                self.cache_failed(key, &e, false);
                None
            }
        }
    }

    /// Writes a loaded value back: fenced when a generation was seen before the load (and the
    /// load is young enough), plain when fills are not fenced. Failures and refusals are
    /// logged and counted, never returned. A fenced commit of a leased load removes the lease
    /// in the same step (whoever holds it by then: the value it would load is here); returns
    /// whether it did.
    async fn commit<V: Serialize>(
        &self,
        key: &str,
        value: &V,
        ttl: Ttl,
        seen: Fill,
        lease: Option<i64>,
        tags: &[i64],
    ) -> bool {
        let Some((bytes, store_ttl)) = self.stored(key, value, ttl, tags) else {
            return false;
        };
        let (seen, window) = match (seen, self.fence) {
            (Fill::Plain, _) | (_, None) => {
                if let Err(e) = self.cache.set(key, bytes, store_ttl).await {
                    self.cache_failed(key, &e, false);
                }
                return false;
            }
            // The generation could not be read: committing could overwrite a newer value.
            (Fill::Unfenceable, Some(_)) => return false,
            (Fill::Fenced(seen), Some(window)) => (seen, window),
        };
        if !seen.young(&self.clock, window) {
            self.count(key, Event::FillRejected, false);
            return false;
        }
        let fence = fence_key(key);
        let lease_key = lease.map(|_| fence::lease_key(key));
        let condition = match seen.generation {
            Some(generation) => Condition::IntEquals(&fence, generation),
            None => Condition::Absent(&fence),
        };
        let mut writes = vec![
            Write::Set(key, bytes, store_ttl),
            Write::SetInt(&fence, new_generation(), Ttl::from(window)),
        ];
        if let Some(lease_key) = &lease_key {
            writes.push(Write::Delete(lease_key));
        }
        match self.cache.write_if(&[condition], &writes).await {
            Ok(true) => {
                self.count(key, Event::FillCommitted, false);
                lease_key.is_some()
            }
            Ok(false) => {
                self.count(key, Event::FillRejected, false);
                false
            }
            Err(e) => {
                self.cache_failed(key, &e, false);
                false
            }
        }
    }
}

/// How a loaded value may be written back.
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Fills are not fenced: a plain `set`.
    Plain,
    /// Committed only if the generation is still the one seen.
    Fenced(Seen),
    /// The generation could not be read: not written.
    Unfenceable,
}

/// `ttl_ms` scaled by a uniform factor in `1 ± fraction`, at least 1 ms.
fn jittered(ttl_ms: u64, fraction: f64) -> u64 {
    if fraction <= 0.0 {
        return ttl_ms;
    }
    let factor = 1.0 + rand::rng().random_range(-fraction..=fraction);
    ((ttl_ms as f64 * factor).round() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_band() {
        for _ in 0..1000 {
            let ms = jittered(10_000, 0.1);
            assert!((9_000..=11_000).contains(&ms), "{ms}");
        }
        assert_eq!(jittered(10_000, 0.0), 10_000);
        assert_eq!(jittered(1, 0.5).max(1), jittered(1, 0.5).max(1));
    }
}
