//! [`MemoryCache`]: the embedded default backend, on `moka`.
//!
//! It behaves like Redis for every method of [`Cache`] — types (`WrongType` for a string read
//! as a set), integer parsing, TTL semantics, glob matching, and atomicity: a multi-key write
//! (`write_if`, `set_many`, `delete_many`) is never seen half done, by writers or readers (see
//! `stripes`). The conformance suite proves the behaviour against a real `redis-server`.

mod builder;
mod entry;
mod stripes;
mod write_if;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

pub use builder::MemoryCacheBuilder;
use entry::{Entry, Value, deadline, parse_integer};
use stripes::Stripes;

use crate::cache::{Cache, Condition, KeyTtl, Limits, Ttl, Write};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::glob;

/// The embedded cache: bounded, per-entry TTL, safe to share (`Clone` is a cheap handle).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use dashcache::{Cache, MemoryCache, Ttl};
///
/// let cache = MemoryCache::builder().max_entries(10_000).build();
/// cache.set("app:user:1", "Ada".into(), Ttl::secs(60)).await?;
/// assert_eq!(cache.get("app:user:1").await?.as_deref(), Some(&b"Ada"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: moka::sync::Cache<String, Entry>,
    /// Every write to a key holds its stripe; see `stripes` for how reads stay consistent.
    stripes: Stripes,
    limits: Limits,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    clock: Clock,
    /// Whether deadlines are on a manual clock, which moka does not know: reads check them.
    manual_clock: bool,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.inner.store.entry_count())
            .field("max_entries", &self.inner.max_entries)
            .field("max_bytes", &self.inner.max_bytes)
            .field("limits", &self.inner.limits)
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCache {
    /// A cache with the default bounds (128 MiB, 1 000 000 entries) and limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a cache.
    pub fn builder() -> MemoryCacheBuilder {
        MemoryCacheBuilder {
            max_entries: None,
            max_bytes: None,
            limits: Limits::default(),
            clock: Clock::system(),
        }
    }

    /// The number of entries held (approximate while writes are in flight).
    pub fn entry_count(&self) -> u64 {
        self.inner.store.run_pending_tasks();
        self.inner.store.entry_count()
    }

    /// Stores `value` at `key` for `ttl_millis`, synchronously and without the limits: for
    /// the hybrid cache's L1, whose keys and values the L2 already checked.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn store_now(&self, key: &str, value: Bytes, ttl_millis: Option<u64>) {
        let _guard = self.inner.stripes.lock(key);
        let now = self.inner.clock.now();
        self.put(key, Entry::new(Value::Bytes(value), ttl_millis, now));
    }

    /// Removes `keys` in one step: a [`get_many_now`](Self::get_many_now) sees all of them or
    /// none gone. For the hybrid cache's L1.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn remove_many_now(&self, keys: &[&str]) {
        let _exclusive = self.inner.stripes.exclusive(keys.iter().copied());
        for key in keys {
            self.inner.store.invalidate(*key);
        }
    }

    /// The values at `keys` as of one instant (never part of a multi-key write), synchronously;
    /// a key of another type reads as `None`. For the hybrid cache's L1.
    pub(crate) fn get_many_now(&self, keys: &[&str]) -> Vec<Option<Bytes>> {
        let read_all = || {
            keys.iter()
                .map(|key| match self.live(key) {
                    Some(Entry {
                        value: Value::Bytes(b),
                        ..
                    }) => Some(b),
                    _ => None,
                })
                .collect()
        };
        self.inner.stripes.read(keys.iter().copied(), read_all)
    }

    /// Forgets every entry (moka drops them lazily; none is readable afterwards).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn clear(&self) {
        self.inner.store.invalidate_all();
    }

    /// The live entry at `key`, for a writer that holds its stripe. moka checks each entry's
    /// own deadline on every read and never returns an expired entry, so on the system clock
    /// no clock read is needed here (it would cost a fifth of a hit).
    #[inline]
    fn live(&self, key: &str) -> Option<Entry> {
        let entry = self.inner.store.get(key)?;
        if self.inner.manual_clock && !entry.is_live(self.inner.clock.now()) {
            return None;
        }
        Some(entry)
    }

    /// The live entry at `key`, for a reader: never part of an exclusive write.
    #[inline]
    fn read(&self, key: &str) -> Option<Entry> {
        self.inner
            .stripes
            .read(std::iter::once(key), || self.live(key))
    }

    /// Removes the entry at `key`; whether a live one was there.
    fn remove(&self, key: &str) -> bool {
        let now = self.inner.clock.now();
        self.inner.store.remove(key).is_some_and(|e| e.is_live(now))
    }

    fn put(&self, key: &str, entry: Entry) {
        self.inner.store.insert(key.to_owned(), entry);
    }

    /// Changes the set at `key` in place (taken out of the store, so no copy is made) and
    /// stores it back, or removes the key when it ends up empty; `change` also sees the
    /// deadline, `None` for a new set. The caller holds the key's stripe exclusively.
    fn update_set<R>(
        &self,
        key: &str,
        change: impl FnOnce(&mut HashSet<Bytes>, &mut Option<Instant>) -> R,
    ) -> Result<R> {
        let now = self.inner.clock.now();
        // Whether a set is there, without keeping a handle on it: the one taken out of the
        // store must be the only one for the change to happen in place.
        let is_set = self.live(key).map(|e| matches!(e.value, Value::Set(_)));
        let (mut set, mut expires_at) = match is_set {
            None => (HashSet::new(), None),
            Some(false) => return Err(Error::wrong_type(key)),
            Some(true) => match self.inner.store.remove(key) {
                Some(Entry {
                    value: Value::Set(set),
                    expires_at,
                }) if expires_at.is_none_or(|at| at > now) => {
                    (Arc::unwrap_or_clone(set), expires_at)
                }
                _ => (HashSet::new(), None),
            },
        };
        let result = change(&mut set, &mut expires_at);
        if !set.is_empty() {
            let value = Value::Set(Arc::new(set));
            self.put(key, Entry { value, expires_at });
        }
        Ok(result)
    }

    /// Deletes the keys matching `pattern`, walking the whole store: a blocking job.
    fn sweep(&self, pattern: &str) -> u64 {
        let now = self.inner.clock.now();
        let matching: Vec<Arc<String>> = self
            .inner
            .store
            .iter()
            .filter(|(key, entry)| entry.is_live(now) && glob::matches(pattern, key))
            .map(|(key, _)| key)
            .collect();
        let mut deleted = 0;
        for key in matching {
            let _guard = self.inner.stripes.lock(&key);
            if self.remove(&key) {
                deleted += 1;
            }
        }
        deleted
    }

    /// `get`, which never waits.
    #[inline]
    fn read_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        match self.read(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b)),
            Some(_) => Err(Error::wrong_type(key)),
        }
    }

    fn check_write(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.limits.check_key(key)?;
        self.inner.limits.check_value(key, value)
    }

    fn check_keys(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|k| self.inner.limits.check_key(k))
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.read_bytes(key)
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        Some(self.read_bytes(key))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.check_write(key, &value)?;
        let ttl = ttl.to_millis()?;
        let _guard = self.inner.stripes.lock(key);
        let now = self.inner.clock.now();
        self.put(key, Entry::new(Value::Bytes(value), ttl, now));
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.check_write(key, &value)?;
        let ttl = ttl.to_millis()?;
        let _guard = self.inner.stripes.lock(key);
        if self.live(key).is_some() {
            return Ok(false);
        }
        let now = self.inner.clock.now();
        self.put(key, Entry::new(Value::Bytes(value), ttl, now));
        Ok(true)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        let _guard = self.inner.stripes.lock(key);
        match self.live(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => {
                self.inner.store.invalidate(key);
                Ok(Some(b))
            }
            Some(_) => Err(Error::wrong_type(key)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let _guard = self.inner.stripes.lock(key);
        Ok(self.remove(key))
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.check_keys(keys)?;
        let _exclusive = self.inner.stripes.exclusive(keys.iter().copied());
        Ok(keys.iter().filter(|key| self.remove(key)).count() as u64)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        Ok(self.read(key).is_some())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.check_keys(keys)?;
        // As MGET: a key of another type reads as a miss.
        Ok(self.get_many_now(keys))
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        // Everything is checked before anything is written: all or nothing.
        for (key, value) in entries {
            self.check_write(key, value)?;
        }
        let ttl = ttl.to_millis()?;
        let _exclusive = self
            .inner
            .stripes
            .exclusive(entries.iter().map(|(k, _)| *k));
        let now = self.inner.clock.now();
        for (key, value) in entries {
            self.put(key, Entry::new(Value::Bytes(value.clone()), ttl, now));
        }
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.inner.limits.check_key(key)?;
        let ttl = ttl_on_create.map_or(Ok(None), Ttl::to_millis)?;
        let _guard = self.inner.stripes.lock(key);
        let (current, expires_at) = match self.live(key) {
            None => (0, None),
            Some(Entry {
                value: Value::Bytes(b),
                expires_at,
            }) => match parse_integer(&b) {
                Some(n) => (n, expires_at),
                None => {
                    return Err(
                        Error::new(ErrorKind::WrongType, "the value is not an integer")
                            .with_key(key),
                    );
                }
            },
            Some(_) => return Err(Error::wrong_type(key)),
        };
        let Some(next) = current.checked_add(delta) else {
            return Err(Error::invalid_argument("the increment would overflow i64").with_key(key));
        };
        // EXPIRE NX: an existing deadline stands; a key without one gets `ttl_on_create`.
        let expires_at = expires_at.or_else(|| deadline(ttl, self.inner.clock.now()));
        let value = Value::Bytes(Bytes::from(next.to_string()));
        self.put(key, Entry { value, expires_at });
        Ok(next)
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let ttl = ttl.to_millis()?;
        let _guard = self.inner.stripes.lock(key);
        match self.live(key) {
            None => Ok(false),
            Some(entry) => {
                let now = self.inner.clock.now();
                self.put(key, Entry::new(entry.value, ttl, now));
                Ok(true)
            }
        }
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.inner.limits.check_key(key)?;
        Ok(match self.read(key) {
            None => KeyTtl::Missing,
            Some(Entry {
                expires_at: None, ..
            }) => KeyTtl::Persistent,
            Some(Entry {
                expires_at: Some(at),
                ..
            }) => {
                // Millisecond precision, truncated, as PTTL reports it.
                let left = at.saturating_duration_since(self.inner.clock.now());
                let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                KeyTtl::Expires(Duration::from_millis(millis))
            }
        })
    }

    /// Walks every entry, so it runs on a blocking thread (inside a Tokio runtime), never on
    /// an async worker that other tasks are waiting for.
    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        self.inner.limits.check_pattern(pattern)?;
        let cache = self.clone();
        let pattern = pattern.to_owned();
        let sweep = move || cache.sweep(&pattern);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn_blocking(sweep).await.map_err(|e| {
                Error::new(ErrorKind::Backend, "the key sweep did not finish").with_source(e)
            }),
            Err(_) => Ok(sweep()),
        }
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.inner.limits.check_members(key, members)?;
        let ttl = ttl.to_millis()?;
        if members.is_empty() {
            return Ok(0);
        }
        let _exclusive = self.inner.stripes.exclusive(std::iter::once(key));
        let wanted = deadline(ttl, self.inner.clock.now());
        self.update_set(key, |set, expires_at| {
            let before = set.len();
            set.extend(members.iter().cloned());
            *expires_at = wanted;
            (set.len() - before) as u64
        })
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        let _exclusive = self.inner.stripes.exclusive(std::iter::once(key));
        self.update_set(key, |set, _| {
            let before = set.len();
            for member in members {
                set.remove(member);
            }
            (before - set.len()) as u64
        })
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.inner.limits.check_key(key)?;
        match self.read(key) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => Ok(s.iter().cloned().collect()),
            Some(_) => Err(Error::wrong_type(key)),
        }
    }

    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        self.inner.limits.check_write_if(conditions, writes)?;
        self.write_if_exclusive(conditions, writes)
    }

    async fn ping(&self) -> Result<Duration> {
        // The store is in-process: the "round trip" is one lookup.
        let start = Instant::now();
        let _ = self.inner.store.contains_key("\u{0}ping");
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entry_bound_holds() {
        let cache = MemoryCache::builder().max_entries(100).build();
        for i in 0..1000 {
            let key = format!("k{i}");
            assert!(
                cache
                    .set(&key, Bytes::from_static(b"v"), Ttl::secs(60))
                    .await
                    .is_ok()
            );
        }
        assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
    }

    #[tokio::test]
    async fn byte_bound_holds_with_entry_bound() {
        let cache = MemoryCache::builder()
            .max_entries(1000)
            .max_bytes(10 * 1024)
            .build();
        let value = Bytes::from(vec![b'x'; 1024]);
        for i in 0..100 {
            let key = format!("k{i}");
            assert!(cache.set(&key, value.clone(), Ttl::secs(60)).await.is_ok());
        }
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
    }

    #[tokio::test]
    async fn a_manual_clock_expires_entries_without_sleeping() {
        let clock = Clock::manual();
        let cache = MemoryCache::builder().clock(clock.clone()).build();
        let one = || Bytes::from_static(b"1");
        assert!(cache.set("k", one(), Ttl::secs(60)).await.is_ok());
        assert!(cache.set_add("s", &[one()], Ttl::secs(60)).await.is_ok());
        assert!(cache.increment("n", 1, Some(Ttl::secs(60))).await.is_ok());
        clock.advance(Duration::from_secs(59));
        assert_eq!(
            cache.ttl("k").await.ok(),
            Some(KeyTtl::Expires(Duration::from_secs(1)))
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get("k").await.ok(), Some(None));
        assert_eq!(cache.ttl("s").await.ok(), Some(KeyTtl::Missing));
        assert_eq!(cache.set_members("s").await.ok(), Some(Vec::new()));
        // A counter past its deadline starts again, with a new one.
        assert_eq!(
            cache.increment("n", 1, Some(Ttl::secs(60))).await.ok(),
            Some(1)
        );
        assert_eq!(cache.delete_pattern("*").await.ok(), Some(1));
    }
}
