//! [`MemoryCache`]: the embedded default backend, on `moka`.
//!
//! It behaves like Redis for every method of [`Cache`] — types (`WrongType` for a string read
//! as a set), integer parsing, TTL semantics, glob matching — so code tested against it behaves
//! the same in production. The conformance suite proves it against a real `redis-server`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;

use crate::cache::{Cache, Condition, KeyTtl, Limits, Ttl, Write};
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
    /// Every write to a key holds its stripe, so read-modify-write operations (`take`,
    /// `increment`, `set_add`, …) are atomic against every other write, plain `set` included.
    /// moka's own compute lock does not cover plain inserts. Reads take no lock: each moka
    /// operation is atomic on its own. A std mutex is right here: the critical sections are a
    /// few map operations and never cross an `.await`.
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
    limits: Limits,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.inner.store.entry_count())
            .field("max_entries", &self.inner.max_entries)
            .field("max_bytes", &self.inner.max_bytes)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

#[derive(Clone)]
struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

#[derive(Clone)]
enum Value {
    Bytes(Bytes),
    /// Shared so that moka's clone-on-read costs a reference count, not a copy of the set.
    Set(Arc<HashSet<Bytes>>),
}

impl Entry {
    fn new(value: Value, ttl_millis: Option<u64>, now: Instant) -> Self {
        Self {
            value,
            expires_at: deadline(ttl_millis, now),
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    fn size(&self) -> usize {
        match &self.value {
            Value::Bytes(b) => b.len(),
            Value::Set(s) => s.iter().map(Bytes::len).sum::<usize>() + s.len() * 16,
        }
    }
}

/// The instant `ttl_millis` after `now`; `None` for no expiry. TTLs are bounded by
/// [`Ttl::MAX`], so the addition cannot overflow in practice; if it did, the key would persist.
fn deadline(ttl_millis: Option<u64>, now: Instant) -> Option<Instant> {
    ttl_millis.and_then(|ms| now.checked_add(Duration::from_millis(ms)))
}

/// Tells moka each entry's own deadline.
struct PerEntryExpiry;

impl Expiry<String, Entry> for PerEntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, now: Instant) -> Option<Duration> {
        entry.expires_at.map(|at| at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        entry.expires_at.map(|at| at.saturating_duration_since(now))
    }
}

/// Configures a [`MemoryCache`]; see [`MemoryCache::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryCacheBuilder {
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    limits: Limits,
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

    /// Builds the cache.
    pub fn build(self) -> MemoryCache {
        let (max_entries, max_bytes) = match (self.max_entries, self.max_bytes) {
            (None, None) => (Some(1_000_000), Some(128 * 1024 * 1024)),
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
            .expire_after(PerEntryExpiry)
            .build();
        let stripes = (0..64).map(|_| Mutex::new(())).collect();
        MemoryCache {
            inner: Arc::new(Inner {
                store,
                stripes,
                hasher: RandomState::new(),
                limits: self.limits,
                max_entries,
                max_bytes,
            }),
        }
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
        }
    }

    /// The number of entries held (approximate while writes are in flight).
    pub fn entry_count(&self) -> u64 {
        self.inner.store.run_pending_tasks();
        self.inner.store.entry_count()
    }

    /// Locks the stripe of `key`. A poisoned stripe is still usable: the data it guards lives
    /// in moka, which a panicking writer cannot leave half-updated.
    fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        self.inner.stripes[self.stripe(key)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live entry at `key`, if any. moka checks each entry's own deadline on every read
    /// and never returns an expired entry, so no clock read is needed here (it would cost a
    /// fifth of a hit).
    fn live(&self, key: &str) -> Option<Entry> {
        self.inner.store.get(key)
    }

    /// Locks the stripes of all `keys`, in stripe order so that two multi-key writers can never
    /// wait on each other.
    fn lock_all<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(|k| self.stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| {
                self.inner.stripes[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect()
    }

    fn stripe(&self, key: &str) -> usize {
        self.inner.hasher.hash_one(key) as usize % self.inner.stripes.len()
    }

    /// Evaluates one condition of `write_if` (its key's stripe is held).
    fn holds(&self, condition: &Condition<'_>) -> Result<bool> {
        Ok(match *condition {
            Condition::Absent(key) => self.live(key).is_none(),
            Condition::Exists(key) => self.live(key).is_some(),
            Condition::MissingOrBelow(key, bound) => match self.live(key) {
                None => true,
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => match parse_integer(&b) {
                    Some(n) => n < bound,
                    None => {
                        return Err(Error::new(
                            ErrorKind::WrongType,
                            "the value is not an integer",
                        )
                        .with_key(key));
                    }
                },
                Some(_) => return Err(Error::wrong_type(key)),
            },
        })
    }

    fn put(&self, key: &str, entry: Entry) {
        self.inner.store.insert(key.to_owned(), entry);
    }

    fn check_write(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.limits.check_key(key)?;
        self.inner.limits.check_value(key, value)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        match self.live(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b)),
            Some(_) => Err(Error::wrong_type(key)),
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.check_write(key, &value)?;
        let ttl = ttl.to_millis()?;
        let _guard = self.lock(key);
        self.put(key, Entry::new(Value::Bytes(value), ttl, Instant::now()));
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.check_write(key, &value)?;
        let ttl = ttl.to_millis()?;
        let _guard = self.lock(key);
        let now = Instant::now();
        if self.live(key).is_some() {
            return Ok(false);
        }
        self.put(key, Entry::new(Value::Bytes(value), ttl, now));
        Ok(true)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        let _guard = self.lock(key);
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
        let _guard = self.lock(key);
        let removed = self.inner.store.remove(key);
        Ok(removed.is_some_and(|e| e.is_live(Instant::now())))
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            self.inner.limits.check_key(key)?;
        }
        let mut removed = 0;
        for key in keys {
            let _guard = self.lock(key);
            if self
                .inner
                .store
                .remove(*key)
                .is_some_and(|e| e.is_live(Instant::now()))
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        Ok(self.live(key).is_some())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            self.inner.limits.check_key(key)?;
        }
        Ok(keys
            .iter()
            .map(|key| match self.live(key) {
                // As MGET: a key of another type reads as a miss.
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => Some(b),
                _ => None,
            })
            .collect())
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        // Everything is checked before anything is written: all or nothing.
        for (key, value) in entries {
            self.check_write(key, value)?;
        }
        let ttl = ttl.to_millis()?;
        let now = Instant::now();
        for (key, value) in entries {
            let _guard = self.lock(key);
            self.put(key, Entry::new(Value::Bytes(value.clone()), ttl, now));
        }
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.inner.limits.check_key(key)?;
        let ttl = match ttl_on_create {
            Some(ttl) => ttl.to_millis()?,
            None => None,
        };
        let _guard = self.lock(key);
        let now = Instant::now();
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
        let expires_at = expires_at.or_else(|| deadline(ttl, now));
        let value = Value::Bytes(Bytes::from(next.to_string()));
        self.put(key, Entry { value, expires_at });
        Ok(next)
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let ttl = ttl.to_millis()?;
        let _guard = self.lock(key);
        let now = Instant::now();
        match self.live(key) {
            None => Ok(false),
            Some(entry) => {
                self.put(key, Entry::new(entry.value, ttl, now));
                Ok(true)
            }
        }
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.inner.limits.check_key(key)?;
        let now = Instant::now();
        Ok(match self.live(key) {
            None => KeyTtl::Missing,
            Some(Entry {
                expires_at: None, ..
            }) => KeyTtl::Persistent,
            Some(Entry {
                expires_at: Some(at),
                ..
            }) => {
                // Millisecond precision, truncated, as PTTL reports it.
                let left = at.saturating_duration_since(now);
                let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                KeyTtl::Expires(Duration::from_millis(millis))
            }
        })
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        self.inner.limits.check_pattern(pattern)?;
        let matching: Vec<Arc<String>> = self
            .inner
            .store
            .iter()
            .filter(|(key, _)| glob::matches(pattern, key))
            .map(|(key, _)| key)
            .collect();
        let mut deleted = 0;
        for key in matching {
            let _guard = self.lock(&key);
            if self
                .inner
                .store
                .remove(key.as_str())
                .is_some_and(|e| e.is_live(Instant::now()))
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        for member in members {
            self.inner.limits.check_value(key, member)?;
        }
        let ttl = ttl.to_millis()?;
        if members.is_empty() {
            return Ok(0);
        }
        let _guard = self.lock(key);
        let now = Instant::now();
        let mut set = match self.live(key) {
            None => HashSet::new(),
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => Arc::unwrap_or_clone(s),
            Some(_) => return Err(Error::wrong_type(key)),
        };
        let before = set.len();
        set.extend(members.iter().cloned());
        let added = (set.len() - before) as u64;
        self.put(key, Entry::new(Value::Set(Arc::new(set)), ttl, now));
        Ok(added)
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        let _guard = self.lock(key);
        let (mut set, expires_at) = match self.live(key) {
            None => return Ok(0),
            Some(Entry {
                value: Value::Set(s),
                expires_at,
            }) => (Arc::unwrap_or_clone(s), expires_at),
            Some(_) => return Err(Error::wrong_type(key)),
        };
        let before = set.len();
        for member in members {
            set.remove(member);
        }
        let removed = (before - set.len()) as u64;
        if set.is_empty() {
            self.inner.store.invalidate(key);
        } else if removed > 0 {
            self.put(
                key,
                Entry {
                    value: Value::Set(Arc::new(set)),
                    expires_at,
                },
            );
        }
        Ok(removed)
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.inner.limits.check_key(key)?;
        match self.live(key) {
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
        let keys = conditions
            .iter()
            .map(Condition::key)
            .chain(writes.iter().map(Write::key));
        let _guards = self.lock_all(keys);
        for condition in conditions {
            if !self.holds(condition)? {
                return Ok(false);
            }
        }
        // Play the writes on an overlay first, so a type error half-way changes nothing.
        let now = Instant::now();
        let mut overlay: HashMap<&str, Option<Entry>> = HashMap::new();
        for write in writes {
            let key = write.key();
            let current = match overlay.get(key) {
                Some(entry) => entry.clone(),
                None => self.live(key),
            };
            let next = apply(key, current, write, now)?;
            overlay.insert(key, next);
        }
        for (key, entry) in overlay {
            match entry {
                Some(entry) => self.put(key, entry),
                None => self.inner.store.invalidate(key),
            }
        }
        Ok(true)
    }

    async fn ping(&self) -> Result<Duration> {
        // The store is in-process: the "round trip" is one lookup.
        let start = Instant::now();
        let _ = self.inner.store.contains_key("\u{0}ping");
        Ok(start.elapsed())
    }
}

/// The entry at `key` after one `write_if` write, given the entry before it.
fn apply(
    key: &str,
    current: Option<Entry>,
    write: &Write<'_>,
    now: Instant,
) -> Result<Option<Entry>> {
    Ok(match write {
        Write::Set(_, value, ttl) => Some(Entry::new(
            Value::Bytes(value.clone()),
            ttl.to_millis()?,
            now,
        )),
        Write::SetInt(_, n, ttl) => Some(Entry::new(
            Value::Bytes(Bytes::from(n.to_string())),
            ttl.to_millis()?,
            now,
        )),
        Write::Replace(_, value) => current.map(|e| Entry {
            value: Value::Bytes(value.clone()),
            expires_at: e.expires_at,
        }),
        Write::Delete(_) => None,
        // No members: nothing to add, whatever the key holds (as on Redis).
        Write::SetAdd(_, [], _) => current,
        Write::SetAdd(_, members, ttl) => {
            let (mut set, expires_at) = match current {
                None => (HashSet::new(), None),
                Some(Entry {
                    value: Value::Set(s),
                    expires_at,
                }) => (Arc::unwrap_or_clone(s), expires_at),
                Some(_) => return Err(Error::wrong_type(key)),
            };
            // Sets are never stored empty: a non-empty one existed before this write.
            let existed = !set.is_empty();
            set.extend(members.iter().cloned());
            // At least `ttl`: a longer deadline (or none at all) on an existing set stands.
            let wanted = deadline(ttl.to_millis()?, now);
            let expires_at = match (existed, expires_at, wanted) {
                (false, _, wanted) => wanted,
                (true, None, _) | (true, _, None) => None,
                (true, Some(old), Some(new)) => Some(old.max(new)),
            };
            Some(Entry {
                value: Value::Set(Arc::new(set)),
                expires_at,
            })
        }
        Write::SetRemove(_, members) => match current {
            None => None,
            Some(Entry {
                value: Value::Set(s),
                expires_at,
            }) => {
                let mut set = Arc::unwrap_or_clone(s);
                for m in members.iter() {
                    set.remove(m);
                }
                (!set.is_empty()).then(|| Entry {
                    value: Value::Set(Arc::new(set)),
                    expires_at,
                })
            }
            Some(_) => return Err(Error::wrong_type(key)),
        },
    })
}

/// Parses an integer exactly as Redis' `string2ll` does for `INCRBY`: an optional `-`, no `+`,
/// no leading zeros, no spaces, within `i64`.
fn parse_integer(bytes: &[u8]) -> Option<i64> {
    if bytes == b"0" {
        return Some(0);
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"42"), Some(42));
        assert_eq!(parse_integer(b"-42"), Some(-42));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"007",
            b"+1",
            b" 1",
            b"1 ",
            b"1.5",
            b"9223372036854775808",
            b"abc",
        ] {
            assert_eq!(
                parse_integer(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

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
}
