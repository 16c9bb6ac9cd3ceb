//! Refresh-ahead: a hit in the last fraction of its TTL is answered at once and starts a
//! refresh in the background, so a steadily read key never expires into a miss.
//!
//! One refresh per key per process at a time (a table of keys being refreshed); with
//! [`leases`](super::CacheAsideBuilder::leases), one across every process sharing the cache
//! (a refresh that cannot take the lease leaves it to the holder). A refresh is a fill like
//! any other: fenced, so an invalidation during it wins.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::decode;
use super::fence::fence_key;
use super::lease::Claim;
use super::{CacheAside, CachedValue, Inner, LoadError, LoaderTimeout};
use crate::cache::Ttl;
use crate::metrics::Event;

impl CacheAside {
    /// Whether a value fresh until `fresh_until` (unix ms), stored for `ttl`, is in the last
    /// refresh-ahead fraction of its life.
    pub(super) fn near_expiry(&self, fresh_until: u64, ttl: Ttl) -> bool {
        let Some(fraction) = self.inner.refresh_ahead else {
            return false;
        };
        let Ok(Some(ttl_ms)) = ttl.to_millis() else {
            return false;
        };
        let left = fresh_until.saturating_sub(self.inner.clock.unix_millis());
        (left as f64) < ttl_ms as f64 * fraction
    }

    /// Starts refreshing `key` in the background unless this process already is. `seen_until`
    /// is the freshness of the value the caller was just given.
    pub(super) fn refresh_in_background<V, E, P, F, Fut>(
        &self,
        key: &str,
        seen_until: u64,
        ttl_for: P,
        loader: F,
    ) where
        V: CachedValue,
        E: LoadError,
        P: Fn(&V) -> Option<Ttl> + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.inner.refreshing().insert(key.to_owned()) {
            return;
        }
        let done = RefreshDone {
            inner: Arc::clone(&self.inner),
            key: key.to_owned(),
        };
        runtime.spawn(async move {
            done.inner
                .refresh::<V, E, P, F, Fut>(&done.key, seen_until, ttl_for, loader)
                .await;
        });
    }
}

impl CacheAside {
    /// Starts refreshing the `near` keys (with the freshness they were found with) in the
    /// background, in one loader call, skipping those this process is already refreshing.
    pub(super) fn refresh_many_in_background<T, E, F, Fut>(
        &self,
        near: Vec<(String, u64)>,
        ttl: Ttl,
        loader: F,
    ) where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: From<LoaderTimeout> + Send + 'static,
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, T>, E>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mine: Vec<(String, u64)> = {
            let mut refreshing = self.inner.refreshing();
            near.into_iter()
                .filter(|(key, _)| refreshing.insert(key.clone()))
                .collect()
        };
        if mine.is_empty() {
            return;
        }
        let done = RefreshManyDone {
            inner: Arc::clone(&self.inner),
            keys: mine.iter().map(|(key, _)| key.clone()).collect(),
        };
        runtime.spawn(async move {
            done.inner
                .refresh_many::<T, E, F, Fut>(&mine, ttl, loader)
                .await;
        });
    }
}

impl Inner {
    /// Reloads `near` in one loader call: the keys nobody refreshed meanwhile and, with
    /// leases, whose lease this process takes; each committed as a fenced fill.
    async fn refresh_many<T, E, F, Fut>(&self, near: &[(String, u64)], ttl: Ttl, loader: F)
    where
        T: Serialize + DeserializeOwned,
        E: From<LoaderTimeout>,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>, E>>,
    {
        let fences: Vec<String> = near.iter().map(|(key, _)| fence_key(key)).collect();
        let batch: Vec<&str> = near
            .iter()
            .map(|(key, _)| key.as_str())
            .chain(fences.iter().map(String::as_str))
            .collect();
        let Ok(found) = self.cache.get_many(&batch).await else {
            return;
        };
        let mut due = Vec::new();
        for (i, (key, seen_until)) in near.iter().enumerate() {
            if let Some(Some(bytes)) = found.get(i)
                && decode::<Option<T>>(key, bytes).is_ok_and(|env| env.fresh_until > *seen_until)
            {
                continue;
            }
            let fill = self.fill_from(found.get(near.len() + i).and_then(Option::as_ref));
            due.push((key.as_str(), fill, None));
        }
        if let Some(config) = self.lease {
            let claims = futures::future::join_all(
                due.iter()
                    .map(|(key, fill, _)| self.claim(key, config, *fill)),
            )
            .await;
            due = due
                .into_iter()
                .zip(claims)
                .filter_map(|((key, fill, _), claim)| match claim {
                    Claim::Won(token) => Some((key, fill, Some(token))),
                    Claim::Held | Claim::Failed => None,
                })
                .collect();
        }
        if due.is_empty() {
            return;
        }
        for (key, _, _) in &due {
            self.count(key, Event::RefreshedAhead, false);
        }
        let names: Vec<String> = due.iter().map(|(key, _, _)| (*key).to_owned()).collect();
        let loaded = match self.loader_timeout {
            Some(limit) => tokio::time::timeout(limit, loader(names))
                .await
                .unwrap_or_else(|_| Err(E::from(LoaderTimeout(limit)))),
            None => loader(names).await,
        };
        // A failed refresh, or a key the loader no longer finds, leaves the cached value to
        // its TTL.
        let mut loaded = loaded.unwrap_or_default();
        let commits = due.into_iter().map(|(key, fill, lease)| {
            let value = loaded.remove(key);
            async move {
                let released = match value {
                    Some(value) => self.commit(key, &Some(value), ttl, fill, lease, &[]).await,
                    None => false,
                };
                if let Some(token) = lease
                    && !released
                {
                    self.release(key, token).await;
                }
            }
        });
        futures::future::join_all(commits).await;
    }

    async fn refresh<V, E, P, F, Fut>(&self, key: &str, seen_until: u64, ttl_for: P, loader: F)
    where
        V: Serialize + DeserializeOwned,
        E: From<LoaderTimeout>,
        P: Fn(&V) -> Option<Ttl>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let fence = fence_key(key);
        let Ok(mut found) = self.cache.get_many(&[key, &fence]).await else {
            return;
        };
        let generation = found.pop().flatten();
        if let Some(Some(bytes)) = found.pop()
            && decode::<V>(key, &bytes).is_ok_and(|env| env.fresh_until > seen_until)
        {
            // Another process refreshed it meanwhile.
            return;
        }
        let fill = self.fill_from(generation.as_ref());
        let lease = match self.lease {
            Some(config) => match self.claim(key, config, fill).await {
                Claim::Won(token) => Some(token),
                // Another process is loading it (or the cache fails): nothing to do here.
                Claim::Held | Claim::Failed => return,
            },
            None => None,
        };
        self.count(key, Event::RefreshedAhead, false);
        let loaded = match self.loader_timeout {
            Some(limit) => tokio::time::timeout(limit, loader())
                .await
                .unwrap_or_else(|_| Err(E::from(LoaderTimeout(limit)))),
            None => loader().await,
        };
        // A failed refresh leaves the cached value to its TTL (and its stale window).
        let released = match loaded {
            Ok(value) => match ttl_for(&value) {
                Some(ttl) => self.commit(key, &value, ttl, fill, lease, &[]).await,
                None => false,
            },
            Err(_) => false,
        };
        if let Some(token) = lease
            && !released
        {
            self.release(key, token).await;
        }
    }

    fn refreshing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set of keys only; a panic elsewhere cannot leave it inconsistent.
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a batch's keys out of the table of refreshes when its refresh ends (or is dropped).
struct RefreshManyDone {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl Drop for RefreshManyDone {
    fn drop(&mut self) {
        let mut refreshing = self.inner.refreshing();
        for key in &self.keys {
            refreshing.remove(key);
        }
    }
}

/// Takes a key out of the table of refreshes when its refresh ends (or is dropped).
struct RefreshDone {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for RefreshDone {
    fn drop(&mut self) {
        self.inner.refreshing().remove(&self.key);
    }
}
