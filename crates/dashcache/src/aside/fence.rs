//! Fenced fills: a fill that began loading before an invalidation of its key is never
//! committed.
//!
//! Each key has a *generation*, a random integer in a companion key on the same hash slot
//! ([`fence_key`]). An invalidation replaces it and deletes the value in one atomic step; a
//! fill reads it before its loader runs and commits with one atomic compare step
//! (`write_if(IntEquals(fence, seen)) → set the value, replace the generation`). So:
//!
//! - **a fill older than the latest invalidation is never committed**: the invalidation
//!   changed the generation after the fill read it;
//! - **at most one fill commits per generation**: the commit replaces the generation too, so a
//!   second fill that read the same one is refused.
//!
//! Generations are random, not counters, so a generation key that expired and was written
//! again cannot come back with a value an old fill saw (no ABA). They live for the fence
//! window; a fill that saw no generation commits only while none exists, and a fill is refused
//! once half the window has passed since it read the generation — before any generation
//! written after its read can have expired.

use std::time::Duration;

use bytes::Bytes;

use crate::clock::Clock;

/// What sits between a key's first segment and the key in its fence key.
const FENCE_SEGMENT: &str = "_fence";

/// The same for the marker of the last log entry applied to it.
const APPLIED_SEGMENT: &str = "_applied";

/// The same for its lease key.
const LEASE_SEGMENT: &str = "_lease";

/// The default fence window: generations live this long after their last change; a load that
/// takes more than half of it is not committed.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The key holding `key`'s generation: `<first segment>:_fence:<key>`, on `key`'s hash slot.
pub(crate) fn fence_key(key: &str) -> String {
    companion_key(key, FENCE_SEGMENT)
}

/// The key holding the stamp of the last log entry applied to `key`
/// (`<first segment>:_applied:<key>`, on `key`'s hash slot): see [`crate::coherent`].
pub(crate) fn applied_key(key: &str) -> String {
    companion_key(key, APPLIED_SEGMENT)
}

/// The key holding `key`'s cross-process load lease: `<first segment>:_lease:<key>`, on
/// `key`'s hash slot.
pub(super) fn lease_key(key: &str) -> String {
    companion_key(key, LEASE_SEGMENT)
}

/// `<first segment>:<segment>:<key>`, on `key`'s hash slot, outside `key`'s namespace (so a
/// pattern delete or a tracked prefix of the namespace never covers it).
///
/// A key with a hash tag keeps it (nothing before it has a brace); a key without braces is
/// wrapped in braces, which makes the whole key the tag, as it is for the key itself. A key
/// with braces that do not form a tag cannot share its slot with any other key: on a cluster
/// its fills and invalidations are refused as cross-slot writes (`Keys` never builds one).
fn companion_key(key: &str, segment: &str) -> String {
    let head = match key.split_once(':') {
        Some((head, _)) if !head.contains(['{', '}']) => head,
        _ => "",
    };
    let mut out = String::with_capacity(head.len() + segment.len() + key.len() + 4);
    if !head.is_empty() {
        out.push_str(head);
        out.push(':');
    }
    out.push_str(segment);
    out.push(':');
    if has_hash_tag(key) || key.contains(['{', '}']) {
        out.push_str(key);
    } else {
        out.push('{');
        out.push_str(key);
        out.push('}');
    }
    out
}

/// Whether Redis Cluster hashes `key` by a tag: a `{` followed later by a `}` with something
/// in between.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// A fresh generation.
pub(crate) fn new_generation() -> i64 {
    rand::random()
}

/// What a fill saw of its key's generation before it loaded, and when.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// `None`: the key had no generation.
    pub(super) generation: Option<i64>,
    pub(super) at: std::time::Instant,
}

impl Seen {
    /// Reads a generation as the cache returned it: `None` when it is not an integer (then the
    /// fill cannot be fenced and is not committed).
    pub(super) fn parse(stored: Option<&Bytes>, clock: &Clock) -> Option<Self> {
        let generation = match stored {
            None => None,
            Some(bytes) => Some(std::str::from_utf8(bytes).ok()?.parse::<i64>().ok()?),
        };
        Some(Self {
            generation,
            at: clock.now(),
        })
    }

    /// Whether it is still young enough to commit under a fence window of `window`.
    pub(super) fn young(&self, clock: &Clock, window: Duration) -> bool {
        clock.now().saturating_duration_since(self.at) < window / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's key-to-slot rule: the tag if there is one, else the whole key.
    fn hashed(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn fence_keys_share_the_slot_and_leave_the_namespace() {
        for key in [
            "app:user:42",
            "app:session:{u1}:abc",
            "plain",
            "{tag}:rest",
            "app:a%7Bb",
        ] {
            let fence = fence_key(key);
            assert_eq!(hashed(&fence), hashed(key), "{key} → {fence}");
            assert!(!fence.starts_with("app:user:"), "{fence}");
            assert_eq!(hashed(&lease_key(key)), hashed(key), "{key}");
        }
        assert_eq!(fence_key("app:user:42"), "app:_fence:{app:user:42}");
        assert_eq!(
            fence_key("app:session:{u1}:abc"),
            "app:_fence:app:session:{u1}:abc"
        );
        assert_eq!(fence_key("{tag}:rest"), "_fence:{tag}:rest");
        assert_eq!(lease_key("app:user:42"), "app:_lease:{app:user:42}");
    }

    #[test]
    fn a_fill_is_young_for_half_the_window() {
        let clock = Clock::manual();
        let seen = Seen::parse(Some(&Bytes::from_static(b"-17")), &clock).unwrap();
        assert_eq!(seen.generation, Some(-17));
        assert!(seen.young(&clock, Duration::from_secs(60)));
        clock.advance(Duration::from_secs(30));
        assert!(!seen.young(&clock, Duration::from_secs(60)));
        assert!(Seen::parse(Some(&Bytes::from_static(b"x")), &clock).is_none());
        assert_eq!(Seen::parse(None, &clock).unwrap().generation, None);
    }
}
