//! Refresh-ahead: a hit in the last fraction of its TTL is answered at once and starts a
//! refresh in the background, so a steadily read key never expires into a miss.
//!
//! One refresh per key per process at a time (a table of keys being refreshed); with
//! [`leases`](super::CacheAsideBuilder::leases), one across every process sharing the cache
//! (a refresh that cannot take the lease leaves it to the holder). A refresh is a fill like
//! any other: fenced, so an invalidation during it wins.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::decode;
use super::fence::fence_key;
use super::lease::Claim;
use super::{CacheAside, Inner, LoaderTimeout};
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
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<LoaderTimeout> + Clone + Send + Sync + 'static,
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

impl Inner {
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
            Some(config) => match self.claim(key, config).await {
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
