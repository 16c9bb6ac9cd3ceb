//! Warming: a set of keys loaded into the cache ahead of traffic, in batches, through the same
//! loader, TTLs and fences as lookups.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;

use super::{CacheAside, CachedValue, LoaderTimeout};
use crate::cache::Ttl;

/// What one [`CacheAside::warm`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmReport {
    /// Keys asked for.
    pub keys: usize,
    /// Keys already cached and fresh: left as they were (their TTL untouched).
    pub cached: usize,
    /// Keys the loader returned, written to the cache (unless a fence refused a fill that an
    /// invalidation overtook: the newer state wins).
    pub loaded: usize,
    /// Keys the loader did not return: "not found" (negatively cached when configured).
    pub not_found: usize,
    /// Keys of batches whose loader failed; nothing was written for them.
    pub failed: usize,
    /// Loader calls made.
    pub batches: usize,
}

impl WarmReport {
    /// Adds `other`'s counts to this report, for warming done in several calls.
    pub fn merge(&mut self, other: &WarmReport) {
        self.keys += other.keys;
        self.cached += other.cached;
        self.loaded += other.loaded;
        self.not_found += other.not_found;
        self.failed += other.failed;
        self.batches += other.batches;
    }
}

impl CacheAside {
    /// Loads `keys` into the cache ahead of traffic, `batch` keys per round trip and per
    /// `loader` call (at least 1). Keys that are cached and fresh are left alone, so warming
    /// twice costs one read per batch; the others are loaded and written with `ttl` (jittered
    /// as every fill) under their fence, so a warm that races an invalidation never writes
    /// back the older value. A failed batch is counted and warming goes on: it is only ever an
    /// optimisation. The loader has the bulk form of
    /// [`get_many_or_load`](CacheAside::get_many_or_load).
    ///
    /// Batches run one after another; pace them (e.g. to spare a database at deploy time) by
    /// calling `warm` per slice of keys and merging the [`WarmReport`]s.
    pub async fn warm<T, E, F, Fut>(
        &self,
        keys: &[&str],
        ttl: Ttl,
        batch: usize,
        mut loader: F,
    ) -> WarmReport
    where
        T: CachedValue,
        E: From<LoaderTimeout>,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>, E>>,
    {
        let mut report = WarmReport {
            keys: keys.len(),
            ..WarmReport::default()
        };
        for chunk in keys.chunks(batch.max(1)) {
            let asked = Cell::new(0usize);
            let returned = Cell::new(0usize);
            let loader_failed = Cell::new(false);
            let result = self
                .bulk::<T, E, _, _>(
                    chunk,
                    ttl,
                    |missing| {
                        asked.set(missing.len());
                        let load = loader(missing);
                        let (returned, loader_failed) = (&returned, &loader_failed);
                        async move {
                            let result = load.await;
                            match &result {
                                Ok(found) => returned.set(found.len()),
                                Err(_) => loader_failed.set(true),
                            }
                            result
                        }
                    },
                    &mut Vec::new(),
                )
                .await;
            if asked.get() > 0 {
                report.batches += 1;
            }
            report.cached += chunk.len() - asked.get();
            // A failed loader whose keys all had stale values still answers `Ok`: warming
            // wrote nothing for them either way.
            if result.is_err() || loader_failed.get() {
                report.failed += asked.get();
            } else {
                let loaded = returned.get().min(asked.get());
                report.loaded += loaded;
                report.not_found += asked.get() - loaded;
            }
        }
        report
    }
}
