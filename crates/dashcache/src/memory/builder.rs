//! [`MemoryCacheBuilder`]: bounds, limits and clock of a [`MemoryCache`].

use std::sync::Arc;

use super::entry::{Entry, PerEntryExpiry};
use super::stripes::Stripes;
use super::{Inner, MemoryCache};
use crate::cache::Limits;
use crate::clock::Clock;
use crate::vars;

/// Configures a [`MemoryCache`]; see [`MemoryCache::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryCacheBuilder {
    pub(super) max_entries: Option<u64>,
    pub(super) max_bytes: Option<u64>,
    pub(super) limits: Limits,
    pub(super) clock: Clock,
}

impl MemoryCacheBuilder {
    /// Bounds the number of entries. With [`max_bytes`](Self::max_bytes) too, both bounds hold.
    ///
    /// ```
    /// let cache = dashcache::MemoryCache::builder().max_entries(1_000).build();
    /// # let _ = cache;
    /// ```
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = Some(entries.max(1));
        self
    }

    /// Bounds the bytes held (keys plus values). The default bound is 128 MiB and 1 000 000
    /// entries, whichever is reached first.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes.max(1));
        self
    }

    /// The key and value size limits (default 1 KiB keys, 8 MiB values, as on Redis).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The clock TTLs are measured on (default: the system's). With a manual clock a test
    /// advances time instead of sleeping.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = dashcache::Clock::manual();
    /// let cache = dashcache::MemoryCache::builder().clock(clock.clone()).build();
    /// clock.advance(Duration::from_secs(61)); // a 60 s entry has now expired
    /// # let _ = cache;
    /// ```
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the cache.
    pub fn build(self) -> MemoryCache {
        let (max_entries, max_bytes) = match (self.max_entries, self.max_bytes) {
            (None, None) => (
                Some(vars::CACHE_MEMORY_MAX_ENTRIES.default),
                Some(vars::CACHE_MEMORY_MAX_BYTES.default),
            ),
            other => other,
        };
        // moka has one weighted capacity. Both bounds hold at once when each entry weighs at
        // least bytes / entries: then total weight ≤ max_bytes implies count ≤ max_entries.
        let (capacity, floor) = match (max_entries, max_bytes) {
            (Some(n), Some(b)) => (b, b.div_ceil(n)),
            (Some(n), None) => (n, 0),
            (None, Some(b)) => (b, 1),
            (None, None) => (u64::MAX, 1),
        };
        let count_only = max_bytes.is_none();
        let store = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(move |key: &String, entry: &Entry| -> u32 {
                if count_only {
                    return 1;
                }
                let bytes = (key.len() + entry.size()) as u64;
                u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryExpiry {
                manual_clock: self.clock.is_manual(),
            })
            .build();
        MemoryCache {
            inner: Arc::new(Inner {
                store,
                stripes: Stripes::new(64),
                limits: self.limits,
                max_entries,
                max_bytes,
                manual_clock: self.clock.is_manual(),
                clock: self.clock,
            }),
        }
    }
}
