//! The bulk form of cache-aside: one round trip looks a batch up, one loader call fills the
//! gaps.

use std::collections::HashMap;
use std::future::Future;

use super::fence::fence_key;
use super::{CacheAside, CachedValue, Ending, Fill, Found, LoaderTimeout};
use crate::cache::Ttl;

impl CacheAside {
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
        T: CachedValue,
        E: From<LoaderTimeout>,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>, E>>,
    {
        self.bulk(keys, ttl, loader, &mut Vec::new()).await
    }

    /// As [`get_many_or_load`](Self::get_many_or_load), with
    /// [refresh-ahead](super::CacheAsideBuilder::refresh_ahead): the keys found in the last
    /// fraction of their TTL are answered from the cache at once and reloaded in the
    /// background, together, in one more call of `loader` (once per key per process; with
    /// [leases](super::CacheAsideBuilder::leases), only the keys whose lease it takes, so
    /// once across processes). Without refresh-ahead configured it is `get_many_or_load`.
    ///
    /// # Errors
    /// As [`get_many_or_load`](Self::get_many_or_load).
    pub async fn get_many_or_load_refreshing<T, E, F, Fut>(
        &self,
        keys: &[&str],
        ttl: Ttl,
        loader: F,
    ) -> Result<Vec<Option<T>>, E>
    where
        T: CachedValue,
        E: From<LoaderTimeout> + Send + 'static,
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<String, T>, E>> + Send + 'static,
    {
        let loader = std::sync::Arc::new(loader);
        let mut near = Vec::new();
        let foreground = std::sync::Arc::clone(&loader);
        let result = self
            .bulk(keys, ttl, move |missing| foreground(missing), &mut near)
            .await;
        if !near.is_empty() {
            self.refresh_many_in_background::<T, E, _, _>(near, ttl, move |keys| loader(keys));
        }
        result
    }

    /// The bulk lookup; `near` receives the keys answered from the cache that are due for a
    /// refresh ahead, with the freshness they were found with.
    pub(super) async fn bulk<T, E, F, Fut>(
        &self,
        keys: &[&str],
        ttl: Ttl,
        loader: F,
        near: &mut Vec<(String, u64)>,
    ) -> Result<Vec<Option<T>>, E>
    where
        T: CachedValue,
        E: From<LoaderTimeout>,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>, E>>,
    {
        let inner = &self.inner;
        let mut found: Vec<Option<Option<T>>> = vec![None; keys.len()];
        let mut stale: Vec<Option<Option<T>>> = vec![None; keys.len()];
        let (reads, bypassed) = match inner.cache.get_many(keys).await {
            Ok(values) => (values.into_iter().map(Ok).collect::<Vec<_>>(), false),
            // One failure for the batch, logged and counted once; every key is then bypassed.
            Err(e) => {
                let first = keys.first().copied().unwrap_or_default();
                inner.cache_failed(first, &e, true);
                (Vec::new(), true)
            }
        };
        for (i, (key, read)) in keys.iter().zip(reads).enumerate() {
            match inner.classify::<Option<T>>(key, read, None) {
                Found::Fresh(env) => {
                    if env.value.is_some() && self.near_expiry(env.fresh_until, ttl) {
                        near.push(((*key).to_owned(), env.fresh_until));
                    }
                    found[i] = inner
                        .settle::<_, ()>(key, Ending::Cached(env.value))
                        .result
                        .ok();
                }
                Found::Stale(value) => stale[i] = Some(value),
                Found::Absent | Found::Failed => {}
            }
        }
        let missing: Vec<String> = keys
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(k, _)| (*k).to_owned())
            .collect();
        if missing.is_empty() {
            return Ok(found.into_iter().map(Option::flatten).collect());
        }
        // The generations of the keys to load, read before the loader runs (one round trip).
        let mut fills: HashMap<&str, Fill> = HashMap::new();
        if !bypassed && inner.fence.is_some() {
            let fences: Vec<String> = missing.iter().map(|k| fence_key(k)).collect();
            let refs: Vec<&str> = fences.iter().map(String::as_str).collect();
            let seen = inner.cache.get_many(&refs).await.ok();
            for (i, key) in missing.iter().enumerate() {
                let fill = match &seen {
                    Some(seen) => inner.fill_from(seen.get(i).and_then(Option::as_ref)),
                    None => Fill::Unfenceable,
                };
                fills.insert(key.as_str(), fill);
            }
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
            // Stale values stand in only when every missing key has one.
            Err(e) if (0..keys.len()).any(|i| found[i].is_none() && stale[i].is_none()) => {
                return Err(e);
            }
            Err(_) => {
                for (i, key) in keys.iter().enumerate() {
                    if found[i].is_none() {
                        let ending = Ending::<_, ()>::Loaded {
                            result: Err(()),
                            stale: stale[i].take(),
                            bypassed,
                        };
                        found[i] = inner.settle(key, ending).result.ok();
                    }
                }
                return Ok(found.into_iter().map(Option::flatten).collect());
            }
        };
        let mut fresh = vec![false; keys.len()];
        for (i, key) in keys.iter().enumerate() {
            if found[i].is_none() {
                let ending = Ending::<_, ()>::Loaded {
                    result: Ok(loaded.remove(*key)),
                    stale: None,
                    bypassed,
                };
                found[i] = inner.settle(key, ending).result.ok();
                fresh[i] = true;
            }
        }
        if !bypassed {
            // One write per key, concurrently (pipelined on Redis), so each gets its own jitter
            // and its own fence.
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
                    let fill = fills.get(*key).copied().unwrap_or(Fill::Plain);
                    Some(inner.commit(key, value, ttl, fill, None, &[]))
                });
            futures::future::join_all(writes).await;
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }
}
