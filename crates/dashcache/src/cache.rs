//! The cache protocol: the [`Cache`] trait every backend implements, and its value types.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::{Error, Result};

/// How long a written key lives. Explicit on every write, so no key is left without expiry by
/// accident.
///
/// TTLs have millisecond precision: a duration with a fraction of a millisecond is rounded up.
/// A zero TTL is refused with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
/// (it is not a silent delete), and so is one longer than [`Ttl::MAX`].
///
/// ```
/// use std::time::Duration;
/// use dashcache::Ttl;
///
/// let session = Ttl::secs(1800);
/// let short = Ttl::from(Duration::from_millis(250));
/// let forever = Ttl::Persist;
/// # let _ = (session, short, forever);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ttl {
    /// The key expires this long after the write.
    After(Duration),
    /// The key never expires. Use only where a key truly must outlive every deadline.
    Persist,
}

impl Ttl {
    /// The longest TTL accepted: 100 years, far past any cache entry's useful life, and well
    /// inside what every backend can represent.
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// A TTL of `secs` seconds.
    pub const fn secs(secs: u64) -> Self {
        Self::After(Duration::from_secs(secs))
    }

    /// A TTL of `millis` milliseconds.
    pub const fn millis(millis: u64) -> Self {
        Self::After(Duration::from_millis(millis))
    }

    /// The TTL in whole milliseconds (rounded up), or `None` for [`Ttl::Persist`].
    ///
    /// # Errors
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) for a zero TTL or one above
    /// [`Ttl::MAX`].
    pub fn to_millis(self) -> Result<Option<u64>> {
        match self {
            Self::Persist => Ok(None),
            Self::After(d) if d.is_zero() => Err(Error::invalid_argument(
                "a TTL must be positive (use delete to remove a key)",
            )),
            Self::After(d) if d > Self::MAX => Err(Error::invalid_argument(format!(
                "a TTL must be at most {} s, got {} s",
                Self::MAX.as_secs(),
                d.as_secs()
            ))),
            Self::After(d) => {
                let millis = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
                // Bounded by Ttl::MAX above, so the conversion cannot fail.
                Ok(Some(u64::try_from(millis).unwrap_or(u64::MAX)))
            }
        }
    }
}

impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Self::After(d)
    }
}

/// The remaining life of a key, as reported by [`Cache::ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyTtl {
    /// The key does not exist.
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key exists and expires after this long (millisecond precision).
    Expires(Duration),
}

/// Size limits every backend enforces the same way, so a value accepted in development is
/// accepted in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest key, in bytes (default 1 KiB).
    pub max_key_bytes: usize,
    /// The largest value, in bytes (default 8 MiB).
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Sets the longest key, in bytes.
    #[must_use]
    pub fn with_max_key_bytes(mut self, bytes: usize) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// Sets the largest value, in bytes.
    #[must_use]
    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Checks a key: non-empty, at most `max_key_bytes`, no control characters.
    ///
    /// # Errors
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) naming the rule broken.
    #[inline]
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid_key(key, "a key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::invalid_key(key, "the key is longer than the limit"));
        }
        if has_control(key) {
            return Err(Error::invalid_key(
                key,
                "a key must not contain control characters",
            ));
        }
        Ok(())
    }

    /// Checks a value's size against `max_value_bytes`.
    ///
    /// # Errors
    /// [`TooLarge`](crate::ErrorKind::TooLarge) carrying the key.
    pub fn check_value(&self, key: &str, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::new(
                crate::ErrorKind::TooLarge,
                format!(
                    "the value has {} bytes, the limit is {}",
                    value.len(),
                    self.max_value_bytes
                ),
            )
            .with_key(key));
        }
        Ok(())
    }

    /// Checks a set's key and each member to add to it.
    ///
    /// # Errors
    /// As [`check_key`](Self::check_key) and [`check_value`](Self::check_value).
    pub fn check_members(&self, key: &str, members: &[Bytes]) -> Result<()> {
        self.check_key(key)?;
        members.iter().try_for_each(|m| self.check_value(key, m))
    }

    /// Checks a glob pattern: non-empty, at most `max_key_bytes`, no control characters.
    ///
    /// # Errors
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument): an empty pattern would match
    /// nothing useful and is almost always a bug in the caller's key building.
    pub fn check_pattern(&self, pattern: &str) -> Result<()> {
        if pattern.is_empty() {
            return Err(Error::invalid_argument("a pattern must not be empty"));
        }
        if pattern.len() > self.max_key_bytes {
            return Err(Error::invalid_argument(
                "the pattern is longer than the key limit",
            ));
        }
        if has_control(pattern) {
            return Err(Error::invalid_argument(
                "a pattern must not contain control characters",
            ));
        }
        Ok(())
    }
}

#[inline]
fn has_control(s: &str) -> bool {
    // Most keys are ASCII: check bytes first and decode only when there is something to decode.
    s.bytes().any(|b| b < 0x20 || b == 0x7f) || (!s.is_ascii() && s.chars().any(char::is_control))
}

/// The cache protocol. Every backend implements it; every pattern is written against it.
///
/// A service holds one `Arc<dyn Cache>`. Values are bytes; typed helpers live in
/// [`CacheExt`](crate::CacheExt). Every method returns a [`Result`] and none panics: a miss is
/// `Ok(None)`, a failure is an [`Error`] whose [`kind`](Error::kind) says what to do about it.
///
/// Keys are checked against the backend's [`Limits`] before anything is sent.
#[async_trait]
pub trait Cache: Send + Sync + Debug + 'static {
    /// The value at `key`, or `None` on a miss.
    ///
    /// # Errors
    /// `WrongType` when the key holds a set; transport errors as their kinds.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// [`get`](Self::get) answered at once, when this backend can without waiting — an
    /// in-process store can — and `None` when the answer needs I/O (then await `get`). Layers
    /// call it first on their hot path to save the future a `get` allocates; the default is
    /// `None`.
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        let _ = key;
        None
    }

    /// Writes `value` at `key` with `ttl`, replacing any value and TTL it had.
    ///
    /// # Errors
    /// `InvalidKey`, `TooLarge`, `InvalidArgument` (TTL), transport errors.
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()>;

    /// Writes `value` only if `key` does not exist (`SET NX`); `true` when written.
    ///
    /// # Errors
    /// As [`Cache::set`].
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool>;

    /// Atomically reads and deletes `key`: of many concurrent takers exactly one gets the value.
    ///
    /// # Errors
    /// `WrongType` when the key holds a set (it is left in place).
    async fn take(&self, key: &str) -> Result<Option<Bytes>>;

    /// Deletes `key`; `true` when a key was removed.
    ///
    /// # Errors
    /// `InvalidKey`, transport errors.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Deletes every key of `keys` in one round trip; the number actually removed.
    ///
    /// # Errors
    /// `InvalidKey` (nothing is deleted), transport errors.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64>;

    /// Whether `key` exists (of any type).
    ///
    /// # Errors
    /// `InvalidKey`, transport errors.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// The values at `keys`, in the same order, `None` for misses (and for keys holding sets, as
    /// `MGET` does). One round trip per server; none for an empty slice.
    ///
    /// # Errors
    /// `InvalidKey`, transport errors.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>>;

    /// Writes every entry with the same `ttl`, all or nothing, in one round trip.
    ///
    /// # Errors
    /// `InvalidKey`, `TooLarge`, `InvalidArgument` (nothing is written), transport errors.
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()>;

    /// Atomically adds `delta` to the integer at `key` and returns the new value. A missing key
    /// starts at 0.
    ///
    /// With `ttl_on_create`, after the call the key has a TTL: the given one if it had none,
    /// its own otherwise (`EXPIRE NX`), in the same atomic step, so no counter is ever left
    /// without expiry.
    ///
    /// # Errors
    /// `WrongType` when the value is not a decimal integer (or the key holds a set);
    /// `InvalidArgument` when the result would overflow `i64` (the value is unchanged).
    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64>;

    /// Sets the TTL of an existing key; `false` when the key is missing. [`Ttl::Persist`]
    /// removes the expiry.
    ///
    /// # Errors
    /// `InvalidKey`, `InvalidArgument` (TTL), transport errors.
    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool>;

    /// The remaining life of `key`.
    ///
    /// # Errors
    /// `InvalidKey`, transport errors.
    async fn ttl(&self, key: &str) -> Result<KeyTtl>;

    /// Deletes every key matching the Redis glob `pattern` and returns how many were actually
    /// deleted. Non-blocking: `SCAN` + `UNLINK` in batches, never `KEYS`.
    ///
    /// Build patterns with [`Keys::pattern`](crate::Keys::pattern): a raw pattern containing a
    /// user-supplied id can match other users' keys.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty pattern, transport errors (keys deleted before the error
    /// stay deleted).
    async fn delete_pattern(&self, pattern: &str) -> Result<u64>;

    /// Adds `members` to the set at `key` and sets the set's TTL (on every call); the number of
    /// members newly added. An empty `members` is a no-op returning 0.
    ///
    /// # Errors
    /// `WrongType` when the key holds a string (nothing changes), `TooLarge` for a member over
    /// the value limit, transport errors.
    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64>;

    /// Removes `members` from the set at `key`; the number removed. Removing the last member
    /// removes the key.
    ///
    /// # Errors
    /// `WrongType` when the key holds a string, transport errors.
    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64>;

    /// The members of the set at `key`, in no particular order; empty when the key is missing.
    ///
    /// # Errors
    /// `WrongType` when the key holds a string, transport errors.
    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>>;

    /// Applies `writes` as one atomic step if every condition holds; `false` (and nothing
    /// written) if one does not. No other operation observes a state in between: on Redis it is
    /// one script, in memory the keys' write locks are held throughout.
    ///
    /// This is the building block of multi-key structures such as a session and its user
    /// index, or a write refused after a revocation.
    ///
    /// # Errors
    /// `InvalidKey`, `TooLarge`, `InvalidArgument` as for the single writes; `WrongType` when a
    /// condition reads a non-integer or a set write meets a string — checked before anything
    /// is written, so a failed call changes nothing.
    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool>;

    /// A round trip to the backend; how long it took.
    ///
    /// # Errors
    /// Transport errors: a dead cache must show up here, not be hidden by fail-open.
    async fn ping(&self) -> Result<Duration>;
}

/// A condition of [`Cache::write_if`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition<'a> {
    /// The key does not exist.
    Absent(&'a str),
    /// The key exists.
    Exists(&'a str),
    /// The key is missing, or holds an integer strictly below the bound (a revocation time, a
    /// version). A non-integer value is a `WrongType` error.
    MissingOrBelow(&'a str, i64),
    /// The key holds exactly this integer (a generation, a fencing token). A missing key or
    /// another integer fails the condition; a non-integer value is a `WrongType` error.
    IntEquals(&'a str, i64),
    /// The key is missing, or holds anything but this integer's decimal text (compared as
    /// bytes: never a type error). What makes a repeated step idempotent: the step writes the
    /// marker, and a second attempt finds it there.
    Differs(&'a str, i64),
}

impl<'a> Condition<'a> {
    /// The key the condition reads.
    pub fn key(&self) -> &'a str {
        match *self {
            Self::Absent(k)
            | Self::Exists(k)
            | Self::MissingOrBelow(k, _)
            | Self::IntEquals(k, _)
            | Self::Differs(k, _) => k,
        }
    }
}

/// One write of [`Cache::write_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Write<'a> {
    /// As [`Cache::set`]: the value and TTL replace whatever the key held.
    Set(&'a str, Bytes, Ttl),
    /// Sets an integer (its decimal text), as a counter: what [`Condition::MissingOrBelow`]
    /// and [`Cache::increment`] read. Wrappers that transform values, such as
    /// [`Sealed`](crate::sealed::Sealed), store it as it is, as they do counters.
    SetInt(&'a str, i64, Ttl),
    /// Overwrites an existing key's value and keeps its TTL; does nothing when the key is
    /// missing (`SET XX KEEPTTL`).
    Replace(&'a str, Bytes),
    /// Deletes the key.
    Delete(&'a str),
    /// Adds members to a set; afterwards the set lives at least this long (a longer TTL it
    /// already has stands, unlike [`Cache::set_add`], which always sets it).
    SetAdd(&'a str, &'a [Bytes], Ttl),
    /// Removes members from a set; removing the last one removes the key.
    SetRemove(&'a str, &'a [Bytes]),
}

impl<'a> Write<'a> {
    /// The key the write changes.
    pub fn key(&self) -> &'a str {
        match *self {
            Self::Set(k, ..)
            | Self::SetInt(k, ..)
            | Self::Replace(k, _)
            | Self::Delete(k)
            | Self::SetAdd(k, ..)
            | Self::SetRemove(k, _) => k,
        }
    }
}

impl Limits {
    /// Checks every key, value and TTL of a [`Cache::write_if`] call.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check_write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<()> {
        for c in conditions {
            self.check_key(c.key())?;
        }
        for w in writes {
            self.check_key(w.key())?;
            match w {
                Write::Set(k, v, ttl) => {
                    self.check_value(k, v)?;
                    ttl.to_millis()?;
                }
                Write::SetInt(_, _, ttl) => {
                    ttl.to_millis()?;
                }
                Write::Replace(k, v) => self.check_value(k, v)?,
                Write::SetAdd(k, members, ttl) => {
                    for m in members.iter() {
                        self.check_value(k, m)?;
                    }
                    ttl.to_millis()?;
                }
                Write::Delete(_) | Write::SetRemove(..) => {}
            }
        }
        Ok(())
    }
}

/// Forwards a method of `Cache` for `Arc<C>`, as the inner cache's own future: the
/// signature `async_trait` gives it, with the lifetimes its arguments need.
macro_rules! forward {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $(, $lt:lifetime)*) => {
        fn $name<'s, $($lt,)* 'a>(&'s self, $($arg: $ty),*) -> BoxFuture<'a, $ret>
        where
            's: 'a,
            $($lt: 'a,)*
            Self: 'a,
        {
            (**self).$name($($arg),*)
        }
    };
}

/// Forwards every method to the shared cache, so `Arc<dyn Cache>` (what a service holds) can be
/// wrapped by generic decorators such as `Instrumented<C>`. Written out rather than with
/// `async_trait`, which would box each call a second time: the inner cache's future is
/// returned as it is.
impl<C: Cache + ?Sized> Cache for Arc<C> {
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        (**self).get_now(key)
    }

    forward!(get(key: &'k str) -> Result<Option<Bytes>>, 'k);
    forward!(set(key: &'k str, value: Bytes, ttl: Ttl) -> Result<()>, 'k);
    forward!(set_if_absent(key: &'k str, value: Bytes, ttl: Ttl) -> Result<bool>, 'k);
    forward!(take(key: &'k str) -> Result<Option<Bytes>>, 'k);
    forward!(delete(key: &'k str) -> Result<bool>, 'k);
    forward!(delete_many(keys: &'k [&'e str]) -> Result<u64>, 'k, 'e);
    forward!(exists(key: &'k str) -> Result<bool>, 'k);
    forward!(get_many(keys: &'k [&'e str]) -> Result<Vec<Option<Bytes>>>, 'k, 'e);
    forward!(set_many(entries: &'k [(&'e str, Bytes)], ttl: Ttl) -> Result<()>, 'k, 'e);
    forward!(increment(key: &'k str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64>, 'k);
    forward!(expire(key: &'k str, ttl: Ttl) -> Result<bool>, 'k);
    forward!(ttl(key: &'k str) -> Result<KeyTtl>, 'k);
    forward!(delete_pattern(pattern: &'k str) -> Result<u64>, 'k);
    forward!(set_add(key: &'k str, members: &'m [Bytes], ttl: Ttl) -> Result<u64>, 'k, 'm);
    forward!(set_remove(key: &'k str, members: &'m [Bytes]) -> Result<u64>, 'k, 'm);
    forward!(set_members(key: &'k str) -> Result<Vec<Bytes>>, 'k);
    forward!(
        write_if(conditions: &'c [Condition<'ck>], writes: &'w [Write<'wk>]) -> Result<bool>,
        'c, 'ck, 'w, 'wk
    );
    forward!(ping() -> Result<Duration>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn ttl_rounds_sub_millisecond_parts_up() {
        assert_eq!(
            Ttl::from(Duration::from_micros(1)).to_millis().ok(),
            Some(Some(1))
        );
        assert_eq!(
            Ttl::from(Duration::from_micros(1500)).to_millis().ok(),
            Some(Some(2))
        );
        assert_eq!(Ttl::secs(3).to_millis().ok(), Some(Some(3000)));
        assert_eq!(Ttl::Persist.to_millis().ok(), Some(None));
    }

    #[test]
    fn zero_and_huge_ttls_are_invalid_arguments() {
        for ttl in [Ttl::secs(0), Ttl::from(Duration::MAX), Ttl::secs(u64::MAX)] {
            let err = ttl.to_millis().err().map(|e| e.kind());
            assert_eq!(err, Some(ErrorKind::InvalidArgument), "{ttl:?}");
        }
        assert!(Ttl::from(Ttl::MAX).to_millis().is_ok());
    }

    #[test]
    fn keys_are_checked() {
        let limits = Limits::default();
        assert!(limits.check_key("user:1").is_ok());
        assert!(limits.check_key("héllo wörld").is_ok());
        for bad in ["", "a\nb", "a\u{7f}", "a\u{85}b", &"k".repeat(1025)] {
            let kind = limits.check_key(bad).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::InvalidKey), "{bad:?}");
        }
        assert!(limits.check_key(&"k".repeat(1024)).is_ok());
    }

    #[test]
    fn values_over_the_limit_are_too_large() {
        let limits = Limits::default().with_max_value_bytes(4);
        assert!(limits.check_value("k", b"1234").is_ok());
        let err = limits.check_value("k", b"12345").err();
        assert_eq!(err.as_ref().map(Error::kind), Some(ErrorKind::TooLarge));
        assert_eq!(err.as_ref().and_then(Error::key), Some("k"));
    }

    #[test]
    fn cache_is_dyn_compatible() {
        fn takes(_: Option<Arc<dyn Cache>>) {}
        takes(None);
    }
}
