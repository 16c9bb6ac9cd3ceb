//! What the memory store holds per key, and how moka learns each entry's deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;

#[derive(Clone)]
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) expires_at: Option<Instant>,
}

#[derive(Clone)]
pub(super) enum Value {
    Bytes(Bytes),
    /// Shared so that moka's clone-on-read costs a reference count, not a copy of the set; a
    /// writer takes the entry out of the store to change the set in place.
    Set(Arc<HashSet<Bytes>>),
}

impl Entry {
    pub(super) fn new(value: Value, ttl_millis: Option<u64>, now: Instant) -> Self {
        Self {
            value,
            expires_at: deadline(ttl_millis, now),
        }
    }

    pub(super) fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    pub(super) fn size(&self) -> usize {
        match &self.value {
            Value::Bytes(b) => b.len(),
            Value::Set(s) => s.iter().map(Bytes::len).sum::<usize>() + s.len() * 16,
        }
    }
}

/// The instant `ttl_millis` after `now`; `None` for no expiry. TTLs are bounded by
/// [`Ttl::MAX`](crate::Ttl::MAX), so the addition cannot overflow in practice; if it did, the
/// key would persist.
pub(super) fn deadline(ttl_millis: Option<u64>, now: Instant) -> Option<Instant> {
    ttl_millis.and_then(|ms| now.checked_add(Duration::from_millis(ms)))
}

/// Tells moka each entry's own deadline. Under a manual [`Clock`](crate::Clock) the deadlines
/// are on that clock, not moka's: moka then keeps entries until they are evicted or read, and
/// reads check the deadline themselves.
pub(super) struct PerEntryExpiry {
    pub(super) manual_clock: bool,
}

impl PerEntryExpiry {
    fn left(&self, entry: &Entry, now: Instant) -> Option<Duration> {
        if self.manual_clock {
            return None;
        }
        entry.expires_at.map(|at| at.saturating_duration_since(now))
    }
}

impl Expiry<String, Entry> for PerEntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, now: Instant) -> Option<Duration> {
        self.left(entry, now)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.left(entry, now)
    }
}

/// Parses an integer exactly as Redis' `string2ll` does for `INCRBY`: an optional `-`, no `+`,
/// no leading zeros, no spaces, within `i64`.
pub(super) fn parse_integer(bytes: &[u8]) -> Option<i64> {
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
}
