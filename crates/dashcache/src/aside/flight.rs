//! Single-flight: concurrent misses of one key in this process run the loader once; the others
//! wait for its result (its error too).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::fence::fence_key;
use super::lease::{Claim, LeaseConfig, Waited};
use super::tags;
use super::{CacheAside, CachedValue, Fill, Found, Inner, LoadError, LoaderTimeout};
use crate::cache::Ttl;
use crate::metrics::Event;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};

/// A load in progress: a weak handle to its shared future, so an abandoned load (every caller
/// gone) frees itself instead of pinning the loader in the table.
pub(super) struct Flight {
    id: u64,
    weak: Box<dyn Any + Send + Sync>,
    /// The version keys of its tags (an invalidation of one of them detaches it).
    pub(super) tags: Arc<[String]>,
}

/// Where a single-flight's value came from.
#[derive(Clone, Copy)]
pub(super) enum Source {
    Loaded,
    /// Another process (or a flight that just finished) had already written it.
    Cached,
}

type FlightResult<V, E> = Result<(V, Source), E>;
type SharedFlight<V, E> = Shared<BoxFuture<'static, FlightResult<V, E>>>;

impl CacheAside {
    /// Joins the load of `key` in progress, or starts one.
    pub(super) async fn flight<V, E, P, F, Fut>(
        &self,
        key: &str,
        tags: &[String],
        bypassed: bool,
        ttl_for: P,
        loader: F,
    ) -> FlightResult<V, E>
    where
        V: CachedValue,
        E: LoadError,
        P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let shared = {
            let mut flights = self.inner.flights();
            let joined = flights.get(key).filter(|f| *f.tags == *tags).and_then(|f| {
                f.weak
                    .downcast_ref::<WeakShared<BoxFuture<'static, FlightResult<V, E>>>>()
                    .and_then(WeakShared::upgrade)
            });
            match joined {
                Some(shared) => shared,
                None => {
                    let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
                    let tags: Arc<[String]> = Arc::from(tags);
                    let shared: SharedFlight<V, E> = run_flight(
                        Arc::clone(&self.inner),
                        key.to_owned(),
                        Arc::clone(&tags),
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
                                tags,
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

/// One load: check the cache once more (a flight that just finished may have filled it) and
/// read the key's generation in the same round trip; with leases, take the key's lease or wait
/// for its holder's value; call the loader; commit the value. Removes itself from the table
/// when done or dropped.
async fn run_flight<V, E, P, F, Fut>(
    inner: Arc<Inner>,
    key: String,
    tags: Arc<[String]>,
    id: u64,
    bypassed: bool,
    ttl_for: P,
    loader: F,
) -> FlightResult<V, E>
where
    V: CachedValue,
    E: LoadError,
    P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    let _done = FlightDone {
        inner: Arc::clone(&inner),
        key: key.clone(),
        id,
    };
    let (fill, lease, versions) = if bypassed {
        (Fill::Plain, None, Vec::new())
    } else {
        match inner.before_load::<V>(&key, &tags).await {
            Ok(value) => return Ok((value, Source::Cached)),
            Err((fill, versions)) => match inner.lease {
                Some(config) => match inner
                    .lease_or_wait::<V>(&key, fill, &versions, config)
                    .await
                {
                    Ok(value) => return Ok((value, Source::Cached)),
                    Err((fill, lease)) => (fill, lease, versions),
                },
                None => (fill, None, versions),
            },
        }
    };
    let loaded = match inner.loader_timeout {
        Some(limit) => match tokio::time::timeout(limit, loader()).await {
            Ok(result) => result,
            Err(_) => Err(E::from(LoaderTimeout(limit))),
        },
        None => loader().await,
    };
    let value = match loaded {
        Ok(value) => value,
        Err(e) => {
            if let Some(token) = lease {
                inner.release(&key, token).await;
            }
            return Err(e);
        }
    };
    let released = match ttl_for(&value) {
        Some(ttl) if !bypassed => {
            inner
                .commit(&key, &value, ttl, fill, lease, &versions)
                .await
        }
        _ => false,
    };
    if let Some(token) = lease
        && !released
    {
        inner.release(&key, token).await;
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
    /// The fresh value a flight that just finished wrote, or how to commit a new one: the
    /// key's generation (and its tags' versions, created if missing) is read in the same
    /// round trip, before the loader runs.
    pub(super) async fn before_load<V: CachedValue>(
        &self,
        key: &str,
        tags: &[String],
    ) -> Result<V, (Fill, Vec<i64>)> {
        if self.fence.is_none() && tags.is_empty() {
            if let Ok(Some(bytes)) = self.cache.get(key).await
                && let Some(value) = self.fresh(key, &bytes)
            {
                return Ok(value);
            }
            return Err((Fill::Plain, Vec::new()));
        }
        let fence = fence_key(key);
        let mut batch: Vec<&str> = Vec::with_capacity(tags.len() + 2);
        batch.extend([key, fence.as_str()]);
        batch.extend(tags.iter().map(String::as_str));
        let Ok(found) = self.cache.get_many(&batch).await else {
            return Err((Fill::Unfenceable, Vec::new()));
        };
        let (head, tag_found) = found.split_at(2.min(found.len()));
        let current = tags::current_versions(tag_found);
        let versions = (!tags.is_empty()).then_some(&current);
        if let Some(Some(bytes)) = head.first()
            && let Ok(Found::Fresh(env)) = self.judge::<V>(key, bytes, versions)
        {
            return Ok(env.value);
        }
        let fill = self.fill_from(head.get(1).and_then(Option::as_ref));
        if tags.is_empty() {
            return Err((fill, Vec::new()));
        }
        match current {
            Some(versions) => Err((fill, versions)),
            None => match self.tag_versions(tags, tag_found).await {
                Some(versions) => Err((fill, versions)),
                // Without the versions a value could not be checked: do not write it.
                None => Err((Fill::Unfenceable, Vec::new())),
            },
        }
    }

    /// Takes `key`'s lease (the value and how to commit it) or waits for the holder's value;
    /// a wait that ends without one takes the lease in turn, or loads unleased at the bound.
    async fn lease_or_wait<V: CachedValue>(
        &self,
        key: &str,
        mut fill: Fill,
        tags: &[i64],
        config: LeaseConfig,
    ) -> Result<V, (Fill, Option<i64>)> {
        let deadline = tokio::time::Instant::now() + config.wait;
        loop {
            match self.claim(key, config, fill).await {
                Claim::Won(token) => return Err((fill, Some(token))),
                Claim::Failed => return Err((fill, None)),
                Claim::Held => match self.wait_for::<V>(key, fill, tags, deadline).await {
                    Waited::Value(value) => {
                        self.count(key, Event::WaitSatisfied, false);
                        return Ok(value);
                    }
                    Waited::Released(seen) => fill = seen,
                    Waited::TimedOut(seen) => {
                        self.count(key, Event::WaitTimedOut, false);
                        return Err((seen, None));
                    }
                },
            }
        }
    }

    pub(super) fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        // The table holds only weak handles; a panic elsewhere cannot leave it inconsistent.
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
