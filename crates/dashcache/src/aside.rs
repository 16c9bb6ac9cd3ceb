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
//! - a **loader timeout** (optional).
//!
//! Values are stored as JSON behind a 12-byte header (format tag and the instant the value
//! stops being fresh), so a stale window works the same on every backend. Keys written through
//! `CacheAside` belong to it: read them through it, not with `get_json`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::burst::BurstLog;
use crate::cache::{Cache, Ttl};
use crate::error::{Error, ErrorKind};
use crate::metrics::{CacheMetrics, Event};

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
    metrics: Option<CacheMetrics>,
    /// False when the cache is wrapped in `Instrumented` with the same metrics, which already
    /// counts hits, misses and operation errors.
    count_reads: bool,
    flights: Mutex<HashMap<String, Flight>>,
    next_flight: AtomicU64,
    warnings: BurstLog,
}

/// A load in progress: a weak handle to its shared future, so an abandoned load (every caller
/// gone) frees itself instead of pinning the loader in the table.
struct Flight {
    id: u64,
    weak: Box<dyn Any + Send + Sync>,
}

impl fmt::Debug for CacheAside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAside")
            .field("cache", &self.inner.cache)
            .field("jitter", &self.inner.jitter)
            .field("stale_for", &self.inner.stale_for)
            .field("negative_ttl", &self.inner.negative_ttl)
            .field("loader_timeout", &self.inner.loader_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`CacheAside`]; see [`CacheAside::builder`].
#[must_use]
pub struct CacheAsideBuilder {
    cache: Arc<dyn Cache>,
    jitter: f64,
    stale_for: Option<Duration>,
    negative_ttl: Option<Ttl>,
    loader_timeout: Option<Duration>,
    metrics: Option<CacheMetrics>,
    count_reads: bool,
}

impl fmt::Debug for CacheAsideBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAsideBuilder")
            .field("jitter", &self.jitter)
            .field("stale_for", &self.stale_for)
            .field("negative_ttl", &self.negative_ttl)
            .field("loader_timeout", &self.loader_timeout)
            .finish_non_exhaustive()
    }
}

impl CacheAsideBuilder {
    /// The TTL jitter, as a fraction of the TTL each way, clamped to 0.0–0.5 (default 0.1:
    /// ±10 %).
    ///
    /// ```
    /// # let cache = std::sync::Arc::new(dashcache::MemoryCache::new());
    /// let aside = dashcache::aside::CacheAside::builder(cache).jitter(0.0).build();
    /// # let _ = aside;
    /// ```
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Keeps values this long past their TTL, to serve when a refresh fails (default: none).
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.stale_for = Some(window).filter(|w| !w.is_zero());
        self
    }

    /// Caches "not found" (a loader's `Ok(None)`) for this long in the `_optional` and bulk
    /// forms (default: not cached).
    pub fn negative_ttl(mut self, ttl: Ttl) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Gives up on a loader after this long (default: none). The stale value is served if
    /// there is one; otherwise the caller gets `E::from(LoaderTimeout)`.
    pub fn loader_timeout(mut self, timeout: Duration) -> Self {
        self.loader_timeout = Some(timeout);
        self
    }

    /// Counts every outcome into `metrics`: hits, misses, stale, bypassed, and cache errors.
    pub fn metrics(mut self, metrics: CacheMetrics) -> Self {
        self.metrics = Some(metrics);
        self.count_reads = true;
        self
    }

    /// For a cache wrapped in [`Instrumented`](crate::Instrumented) with these same `metrics`,
    /// which already counts hits, misses and failed operations: counts only what it cannot
    /// see (stale, bypassed, and undecodable values), so nothing is counted twice.
    ///
    /// The instrumented counts are of cache reads, not lookups: the leader of a single-flight
    /// reads the key once more before calling the loader (so a load that just finished is not
    /// repeated), and that read is counted too.
    pub fn metrics_over_instrumented(mut self, metrics: CacheMetrics) -> Self {
        self.metrics = Some(metrics);
        self.count_reads = false;
        self
    }

    /// Builds it.
    pub fn build(self) -> CacheAside {
        CacheAside {
            inner: Arc::new(Inner {
                cache: self.cache,
                jitter: self.jitter,
                stale_for: self.stale_for,
                negative_ttl: self.negative_ttl,
                loader_timeout: self.loader_timeout,
                metrics: self.metrics,
                count_reads: self.count_reads,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
                warnings: BurstLog::new(),
            }),
        }
    }
}

/// Where a single-flight's value came from.
#[derive(Clone, Copy)]
enum Source {
    Loaded,
    /// Another process (or a flight that just finished) had already written it.
    Cached,
}

type FlightResult<V, E> = Result<(V, Source), E>;
type SharedFlight<V, E> = Shared<BoxFuture<'static, FlightResult<V, E>>>;

impl CacheAside {
    /// Starts configuring cache-aside over `cache`.
    pub fn builder(cache: Arc<dyn Cache>) -> CacheAsideBuilder {
        CacheAsideBuilder {
            cache,
            jitter: 0.1,
            stale_for: None,
            negative_ttl: None,
            loader_timeout: None,
            metrics: None,
            count_reads: true,
        }
    }

    /// The value at `key`, or the loader's, cached for `ttl` (jittered). Never a cache error.
    ///
    /// # Errors
    /// The loader's error when it fails and no stale value can stand in.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, ttl: Ttl, loader: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.load(key, ttl, loader).await.result
    }

    /// As [`get_or_load`](Self::get_or_load), with the outcome.
    pub async fn load<T, E, F, Fut>(&self, key: &str, ttl: Ttl, loader: F) -> Lookup<T, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.lookup(key, move |_: &T| Some(ttl), loader).await
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
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
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
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    {
        let negative = self.inner.negative_ttl;
        let ttl_for = move |v: &Option<T>| if v.is_some() { Some(ttl) } else { negative };
        self.lookup(key, ttl_for, loader).await
    }

    /// The bulk form: one round trip looks every key up; the loader is called once, with only
    /// the keys that were missing (or stale, or corrupt), and returns what it found by key.
    /// Keys it does not return are "not found" (`None`, negatively cached when configured).
    /// Values come back in the order of `keys`.
    ///
    /// Bulk loads are not single-flighted; a failed refresh serves stale values only when every
    /// missing key has one.
    ///
    /// # Errors
    /// The loader's error when it fails and stale values cannot stand in for all of it.
    pub async fn get_many_or_load<T, E, F, Fut>(
        &self,
        keys: &[&str],
        ttl: Ttl,
        loader: F,
    ) -> Result<Vec<Option<T>>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout>,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>, E>>,
    {
        let inner = &self.inner;
        let now = unix_millis();
        let mut found: Vec<Option<Option<T>>> = vec![None; keys.len()];
        let mut stale: Vec<Option<Option<T>>> = vec![None; keys.len()];
        let bypassed = match inner.cache.get_many(keys).await {
            Ok(values) => {
                for (i, (key, value)) in keys.iter().zip(values).enumerate() {
                    let Some(bytes) = value else { continue };
                    match decode::<Option<T>>(key, &bytes) {
                        Ok(env) if env.fresh_at(now) => found[i] = Some(env.value),
                        Ok(env) => stale[i] = Some(env.value),
                        Err(e) => inner.cache_failed(key, &e, false),
                    }
                }
                false
            }
            Err(e) => {
                inner.cache_failed(keys.first().copied().unwrap_or_default(), &e, true);
                true
            }
        };
        let missing: Vec<String> = keys
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(k, _)| (*k).to_owned())
            .collect();
        for (key, f) in keys.iter().zip(&found) {
            if f.is_some() {
                inner.count(key, Event::Hit, true);
            }
        }
        if missing.is_empty() {
            return Ok(found.into_iter().map(Option::flatten).collect());
        }
        let loaded = match inner.loader_timeout {
            Some(limit) => match tokio::time::timeout(limit, loader(missing.clone())).await {
                Ok(result) => result,
                Err(_) => Err(E::from(LoaderTimeout(limit))),
            },
            None => loader(missing.clone()).await,
        };
        let mut loaded = match loaded {
            Ok(map) => map,
            Err(e) => {
                let all_stale = keys
                    .iter()
                    .enumerate()
                    .all(|(i, _)| found[i].is_some() || stale[i].is_some());
                if !all_stale {
                    return Err(e);
                }
                for (i, key) in keys.iter().enumerate() {
                    if found[i].is_none() {
                        inner.count(key, Event::Stale, false);
                        found[i] = stale[i].take();
                    }
                }
                return Ok(found.into_iter().map(Option::flatten).collect());
            }
        };
        let mut fresh = vec![false; keys.len()];
        for (i, key) in keys.iter().enumerate() {
            if found[i].is_none() {
                found[i] = Some(loaded.remove(*key));
                fresh[i] = true;
                let event = if bypassed {
                    Event::Bypassed
                } else {
                    Event::Miss
                };
                inner.count(key, event, !bypassed);
            }
        }
        if !bypassed {
            // One write per key, concurrently (pipelined on Redis), so each gets its own jitter.
            let writes = keys
                .iter()
                .zip(&found)
                .zip(&fresh)
                .filter_map(|((key, value), fresh)| {
                    let value = value.as_ref().filter(|_| *fresh)?;
                    let ttl = if value.is_some() {
                        Some(ttl)
                    } else {
                        inner.negative_ttl
                    }?;
                    Some(inner.write(key, value, ttl))
                });
            futures::future::join_all(writes).await;
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    /// Deletes `key`, so the next lookup loads afresh (after a write to the source of truth).
    ///
    /// # Errors
    /// The cache's error: an invalidation that did not happen leaves the old value in place
    /// until its TTL, which the caller may want to log or retry.
    pub async fn invalidate(&self, key: &str) -> crate::Result<bool> {
        let result = self.inner.cache.delete(key).await;
        if let Err(e) = &result {
            self.inner.cache_failed(key, e, false);
        }
        result
    }

    /// The cache underneath.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.inner.cache
    }

    /// One lookup. `ttl_for` gives the TTL to store a loaded value with, or `None` to not store
    /// it (an uncached "not found").
    async fn lookup<V, E, P, F, Fut>(&self, key: &str, ttl_for: P, loader: F) -> Lookup<V, E>
    where
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
        P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let inner = &self.inner;
        let mut stale = None;
        let mut bypassed = false;
        match inner.cache.get(key).await {
            Ok(Some(bytes)) => match decode::<V>(key, &bytes) {
                Ok(env) if env.fresh_at(unix_millis()) => {
                    inner.count(key, Event::Hit, true);
                    return Lookup {
                        result: Ok(env.value),
                        outcome: Outcome::Hit,
                    };
                }
                Ok(env) => stale = Some(env.value),
                // The fresh value will overwrite the corrupt one.
                Err(e) => inner.cache_failed(key, &e, false),
            },
            Ok(None) => {}
            Err(e) => {
                inner.cache_failed(key, &e, true);
                bypassed = true;
            }
        }
        match self.flight(key, bypassed, ttl_for, loader).await {
            Ok((value, Source::Cached)) => {
                inner.count(key, Event::Hit, true);
                Lookup {
                    result: Ok(value),
                    outcome: Outcome::Hit,
                }
            }
            Ok((value, Source::Loaded)) if bypassed => {
                inner.count(key, Event::Bypassed, false);
                Lookup {
                    result: Ok(value),
                    outcome: Outcome::Bypassed,
                }
            }
            Ok((value, Source::Loaded)) => {
                inner.count(key, Event::Miss, true);
                Lookup {
                    result: Ok(value),
                    outcome: Outcome::Miss,
                }
            }
            Err(e) => match stale {
                Some(value) => {
                    inner.count(key, Event::Stale, false);
                    Lookup {
                        result: Ok(value),
                        outcome: Outcome::Stale,
                    }
                }
                None if bypassed => {
                    inner.count(key, Event::Bypassed, false);
                    Lookup {
                        result: Err(e),
                        outcome: Outcome::Bypassed,
                    }
                }
                None => {
                    inner.count(key, Event::Miss, true);
                    Lookup {
                        result: Err(e),
                        outcome: Outcome::Miss,
                    }
                }
            },
        }
    }

    /// Joins the load of `key` in progress, or starts one.
    async fn flight<V, E, P, F, Fut>(
        &self,
        key: &str,
        bypassed: bool,
        ttl_for: P,
        loader: F,
    ) -> FlightResult<V, E>
    where
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
        P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let shared = {
            let mut flights = self.inner.flights();
            let joined = flights.get(key).and_then(|f| {
                f.weak
                    .downcast_ref::<WeakShared<BoxFuture<'static, FlightResult<V, E>>>>()
                    .and_then(WeakShared::upgrade)
            });
            match joined {
                Some(shared) => shared,
                None => {
                    let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
                    let shared: SharedFlight<V, E> = run_flight(
                        Arc::clone(&self.inner),
                        key.to_owned(),
                        id,
                        bypassed,
                        ttl_for,
                        loader,
                    )
                    .boxed()
                    .shared();
                    if let Some(weak) = shared.downgrade() {
                        if flights.len() >= 1024 {
                            // Drop entries of abandoned loads before the table grows.
                            flights.retain(|_, f| !f.is_abandoned::<V, E>());
                        }
                        flights.insert(
                            key.to_owned(),
                            Flight {
                                id,
                                weak: Box::new(weak),
                            },
                        );
                    }
                    shared
                }
            }
        };
        shared.await
    }
}

impl Flight {
    /// True when every caller of this load has gone. Entries of other value types cannot be
    /// checked from here and are kept (they remove themselves when they finish).
    fn is_abandoned<V, E>(&self) -> bool
    where
        V: Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        self.weak
            .downcast_ref::<WeakShared<BoxFuture<'static, FlightResult<V, E>>>>()
            .is_some_and(|w| w.upgrade().is_none())
    }
}

/// One load: check the cache once more (a flight that just finished may have filled it), call
/// the loader, write the value back. Removes itself from the table when done or dropped.
async fn run_flight<V, E, P, F, Fut>(
    inner: Arc<Inner>,
    key: String,
    id: u64,
    bypassed: bool,
    ttl_for: P,
    loader: F,
) -> FlightResult<V, E>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
    P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    let _done = FlightDone {
        inner: Arc::clone(&inner),
        key: key.clone(),
        id,
    };
    if !bypassed
        && let Ok(Some(bytes)) = inner.cache.get(&key).await
        && let Ok(env) = decode::<V>(&key, &bytes)
        && env.fresh_at(unix_millis())
    {
        return Ok((env.value, Source::Cached));
    }
    let value = match inner.loader_timeout {
        Some(limit) => match tokio::time::timeout(limit, loader()).await {
            Ok(result) => result?,
            Err(_) => return Err(E::from(LoaderTimeout(limit))),
        },
        None => loader().await?,
    };
    if !bypassed && let Some(ttl) = ttl_for(&value) {
        inner.write(&key, &value, ttl).await;
    }
    Ok((value, Source::Loaded))
}

/// Removes a finished (or abandoned) flight from the table, unless a newer one took its place.
struct FlightDone {
    inner: Arc<Inner>,
    key: String,
    id: u64,
}

impl Drop for FlightDone {
    fn drop(&mut self) {
        let mut flights = self.inner.flights();
        if flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            flights.remove(&self.key);
        }
    }
}

impl Inner {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        // The table holds only weak handles; a panic elsewhere cannot leave it inconsistent.
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
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
            tracing::warn!(
                key,
                code = error.code(),
                error = %error,
                suppressed,
                "cache-aside {}: serving from the source of truth",
                if bypass { "bypassed a failing cache" } else { "ignored a cached value" }
            );
        }
    }

    /// Writes `value` with a jittered `ttl` plus the stale window; failures are logged and
    /// counted, never returned.
    async fn write<V: Serialize>(&self, key: &str, value: &V, ttl: Ttl) {
        let (fresh_until, store_ttl) = match ttl.to_millis() {
            Ok(Some(ms)) => {
                let ms = jittered(ms, self.jitter);
                let window = self.stale_for.map_or(0, |w| w.as_millis() as u64);
                (
                    unix_millis().saturating_add(ms),
                    Ttl::millis(ms.saturating_add(window)),
                )
            }
            Ok(None) => (u64::MAX, Ttl::Persist),
            Err(e) => return self.cache_failed(key, &e, false),
        };
        let result = match encode(key, value, fresh_until) {
            Ok(bytes) => self.cache.set(key, bytes, store_ttl).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.cache_failed(key, &e, false);
        }
    }
}

/// `ttl_ms` scaled by a uniform factor in `1 ± fraction`, at least 1 ms.
fn jittered(ttl_ms: u64, fraction: f64) -> u64 {
    if fraction <= 0.0 {
        return ttl_ms;
    }
    let factor = 1.0 + rand::rng().random_range(-fraction..=fraction);
    ((ttl_ms as f64 * factor).round() as u64).max(1)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Format tag of a stored entry: "dc" and version 1.
const TAG: [u8; 4] = *b"dc\x01\x00";

struct Envelope<V> {
    value: V,
    fresh_until: u64,
}

impl<V> Envelope<V> {
    fn fresh_at(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until
    }
}

fn encode<V: Serialize>(key: &str, value: &V, fresh_until: u64) -> crate::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_slice(&TAG);
    buf.put_u64(fresh_until);
    let mut writer = buf.writer();
    serde_json::to_writer(&mut writer, value).map_err(|e| {
        Error::new(ErrorKind::Serialize, "the value cannot be encoded as JSON")
            .with_key(key)
            .with_source(e)
    })?;
    Ok(writer.into_inner().freeze())
}

fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> crate::Result<Envelope<V>> {
    let corrupt = || {
        Error::new(
            ErrorKind::Deserialize,
            "the cached entry is not a cache-aside entry",
        )
        .with_key(key)
    };
    let (tag, rest) = bytes.split_at_checked(TAG.len()).ok_or_else(corrupt)?;
    if tag != TAG {
        return Err(corrupt());
    }
    let (when, json) = rest.split_at_checked(8).ok_or_else(corrupt)?;
    let fresh_until = u64::from_be_bytes(when.try_into().map_err(|_| corrupt())?);
    let value = crate::ext::decode_json(key, json)?;
    Ok(Envelope { value, fresh_until })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_foreign_bytes() {
        let bytes = encode("k", &vec![1, 2, 3], 42).unwrap_or_default();
        let env = decode::<Vec<i32>>("k", &bytes).ok();
        assert_eq!(env.as_ref().map(|e| e.value.clone()), Some(vec![1, 2, 3]));
        assert_eq!(env.map(|e| e.fresh_until), Some(42));
        for foreign in [&b""[..], b"dc", b"[1,2,3]", b"dc\x01\x00\x00\x00"] {
            let err = decode::<Vec<i32>>("k", foreign).err();
            assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Deserialize));
        }
        let mut wrong_type = TAG.to_vec();
        wrong_type.extend_from_slice(&u64::MAX.to_be_bytes());
        wrong_type.extend_from_slice(b"\"text\"");
        assert!(decode::<Vec<i32>>("k", &wrong_type).is_err());
    }

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
