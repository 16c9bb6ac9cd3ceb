//! What keeps L1 honest: the proof that the invalidation channel is alive, the epochs that
//! discard L1 wholesale, and the fill tickets that keep a fill from landing after an invalidation of
//! its key.
//!
//! ## The staleness bound
//!
//! Redis pushes an invalidation on the tracking connection for every write to a tracked key,
//! and a connection's pushes and replies arrive in the order the server produced them. The
//! tracker sends a probe at `t` and, when its reply arrives, every invalidation for a write the
//! server ran before the probe has arrived before it — and has been applied: the `redis` crate
//! calls our push handler on the connection's own task before it completes the reply. So at
//! that moment L1 reflects every write made before `t`, and the tracker lets L1 serve until
//! `t + Δ`. A value L1 serves at `now` therefore misses no write older than `now - Δ`, whatever
//! happened since: a dead connection, a frozen server or a lost push only stop the proofs, and
//! L1 stops serving by itself when the last one runs out.
//!
//! ## Epochs
//!
//! A new tracking connection cannot know what it missed before it was tracking, so every
//! (re)connection, and a `FLUSHALL` push, starts a new epoch: entries carry the epoch they were
//! filled in and an entry of an older one is never served. Bumping a counter is atomic where
//! clearing a map is not, so a fill racing the flush cannot slip an old value past it.
//!
//! ## Fill tickets
//!
//! A read that misses L1 takes a [`Ticket`] (the invalidation sequence number, the epoch and
//! the barrier) *before* it asks L2, and its value lands in L1 only if nothing invalidated its
//! key since. An invalidation that arrives after the ticket may be for a write the server ran
//! after the read: the fill is refused (a refused fill costs a miss, never a stale value). The
//! check and the insert happen under the key's stripe lock, which every invalidation of that
//! key takes too, so no invalidation can fall between them.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::MemoryCache;
use crate::cache::Cache;
use crate::metrics::{CacheMetrics, Event};

/// Stripes of the fill tickets: enough that unrelated keys rarely share one.
const STRIPES: usize = 1024;

/// `kind (1) | epoch (8) | filled_at (8)`, then the value.
const HEADER: usize = 17;
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;

/// Shared by the cache's handles, the tracker and the push handlers of its connections.
pub(super) struct Coherence {
    pub(super) l1: MemoryCache,
    origin: quanta::Instant,
    /// Nanoseconds after `origin` until which L1 may serve; 0: not now.
    serve_until: AtomicU64,
    /// Δ, less a margin for the error of the processor's clock against the system's.
    window_nanos: u64,
    epoch: AtomicU64,
    /// Moved by local pattern deletes: fills that began before do not land.
    barrier: AtomicU64,
    /// One more per key invalidation.
    seq: AtomicU64,
    /// Per stripe of keys, the sequence number of its latest invalidation.
    stripes: Box<[Mutex<u64>]>,
    hasher: RandomState,
    metrics: Option<CacheMetrics>,
    /// The tracking connections by server label: L1's misses are read on them, so that a
    /// reply comes after every invalidation the server produced before it.
    links: RwLock<HashMap<String, MultiplexedConnection>>,
    pub(super) invalidations: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) fills_refused: AtomicU64,
}

/// What a fill must present: the state when its read of L2 was sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    seq: u64,
    epoch: u64,
    barrier: u64,
    /// When the read was sent, in nanoseconds after `origin`: the value's age counts from it,
    /// and the key's remaining TTL is measured from no earlier.
    pub(super) sent: u64,
}

/// What L1 holds for a key.
pub(super) enum Held {
    /// The value, and how long ago it was read from L2.
    Value(Bytes, Duration),
    /// L2 had no such key.
    Absent,
}

impl Coherence {
    pub(super) fn new(l1: MemoryCache, staleness: Duration, metrics: Option<CacheMetrics>) -> Self {
        let delta = u64::try_from(staleness.as_nanos()).unwrap_or(u64::MAX);
        Self {
            l1,
            origin: quanta::Instant::now(),
            serve_until: AtomicU64::new(0),
            // 1 %: the time-stamp counter is calibrated against the system clock to far better.
            window_nanos: delta - delta / 100,
            // Epoch 0 is never served: nothing is proven before the first connection.
            epoch: AtomicU64::new(0),
            barrier: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
            metrics,
            links: RwLock::new(HashMap::new()),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fills_refused: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `origin` (at least 1: 0 means "never").
    #[inline]
    pub(super) fn now(&self) -> u64 {
        let nanos = quanta::Instant::now()
            .saturating_duration_since(self.origin)
            .as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    /// Whether L1 may serve now.
    #[inline]
    pub(super) fn serving(&self) -> bool {
        self.now() < self.serve_until.load(Ordering::Acquire)
    }

    /// How long ago the last proof was sent; `None` when L1 is not serving.
    pub(super) fn proven_ago(&self) -> Option<Duration> {
        let until = self.serve_until.load(Ordering::Acquire);
        let now = self.now();
        (now < until).then(|| Duration::from_nanos((now + self.window_nanos).saturating_sub(until)))
    }

    /// Every invalidation for a write the server ran before `sent` (a probe's sending time)
    /// has been applied: L1 may serve until `sent + Δ`.
    pub(super) fn prove(&self, sent: u64) {
        self.serve_until
            .store(sent.saturating_add(self.window_nanos), Ordering::Release);
    }

    /// The channel is lost: L1 stops serving until the next proof.
    pub(super) fn unprove(&self) {
        self.serve_until.store(0, Ordering::Release);
    }

    /// A new epoch: nothing in L1 is served again, and no fill that began before lands.
    pub(super) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        // The epoch already hides every entry; this frees their memory.
        self.l1.clear();
    }

    /// Fills that began before now do not land (entries already in L1 stay).
    pub(super) fn raise_barrier(&self) {
        self.barrier.fetch_add(1, Ordering::AcqRel);
    }

    /// A ticket for a read of L2 about to be sent.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket {
            seq: self.seq.load(Ordering::SeqCst),
            epoch: self.epoch.load(Ordering::SeqCst),
            barrier: self.barrier.load(Ordering::SeqCst),
            sent: self.now(),
        }
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<u64> {
        let i = (self.hasher.hash_one(key) as usize) % STRIPES;
        &self.stripes[i]
    }

    /// The tracking connection to the server `label`, if there is one now.
    pub(super) fn link(&self, label: &str) -> Option<MultiplexedConnection> {
        self.links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(label)
            .cloned()
    }

    pub(super) fn set_link(&self, label: &str, conn: Option<MultiplexedConnection>) {
        let mut links = self.links.write().unwrap_or_else(PoisonError::into_inner);
        match conn {
            Some(conn) => links.insert(label.to_owned(), conn),
            None => links.remove(label),
        };
    }

    /// Drops `keys` from L1 in one step (a batch read of L1 sees all of them or none gone)
    /// and refuses every fill of them that began before now.
    ///
    /// Each key's stripe moves twice: before the removal, so that a fill checking it from
    /// then on is refused (and one that landed before is removed here); and after, so that a
    /// batch read that took its ticket before the removal, and may have seen a key about to
    /// go, sees that it changed.
    pub(super) fn invalidate(&self, keys: &[&str]) {
        self.bump(keys);
        self.l1.remove_many_now(keys);
        self.bump(keys);
    }

    fn bump(&self, keys: &[&str]) {
        for key in keys {
            let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let mut latest = self
                .stripe(key.as_bytes())
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *latest = (*latest).max(seq);
        }
    }

    /// Applies a push of the tracking connection: the keys to drop (all of one push in one
    /// step: a write of several keys is one push), or `Nil` for "all of them" (`FLUSHALL`,
    /// `FLUSHDB`).
    pub(super) fn on_invalidate(&self, data: &[Value]) {
        match data.first() {
            Some(Value::Array(keys)) => {
                // Our keys are UTF-8; any other key was never in L1.
                let keys: Vec<&str> = keys
                    .iter()
                    .filter_map(|key| match key {
                        Value::BulkString(b) => std::str::from_utf8(b).ok(),
                        Value::SimpleString(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                self.invalidate(&keys);
                self.invalidations
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    keys.iter()
                        .for_each(|key| metrics.record(key, Event::Invalidation));
                }
            }
            Some(Value::Nil) => self.flush(),
            _ => {}
        }
    }

    /// Puts what a read of L2 found for `key` into L1 for `ttl_millis`, unless the key was
    /// invalidated (or L1 flushed, or a barrier raised) since `ticket` was taken. Whether it
    /// landed.
    pub(super) fn fill(
        &self,
        key: &str,
        ticket: Ticket,
        value: Option<&Bytes>,
        ttl_millis: u64,
    ) -> bool {
        let entry = encode(ticket, value);
        let latest = self
            .stripe(key.as_bytes())
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fresh = *latest <= ticket.seq
            && self.epoch.load(Ordering::SeqCst) == ticket.epoch
            && self.barrier.load(Ordering::SeqCst) == ticket.barrier;
        if fresh {
            self.l1.store_now(key, entry, Some(ttl_millis));
        } else {
            self.fills_refused.fetch_add(1, Ordering::Relaxed);
        }
        drop(latest);
        fresh
    }

    /// What L1 holds for `key` in the current epoch.
    #[inline]
    pub(super) fn held(&self, key: &str) -> Option<Held> {
        let Some(Ok(Some(entry))) = self.l1.get_now(key) else {
            return None;
        };
        self.decode(entry)
    }

    /// What L1 holds for each of `keys`, as of one instant.
    pub(super) fn held_many(&self, keys: &[&str]) -> Vec<Option<Held>> {
        self.l1
            .get_many_now(keys)
            .into_iter()
            .map(|entry| entry.and_then(|e| self.decode(e)))
            .collect()
    }

    #[inline]
    fn decode(&self, mut entry: Bytes) -> Option<Held> {
        if entry.len() < HEADER {
            return None;
        }
        let kind = entry.get_u8();
        let epoch = entry.get_u64_le();
        let filled = entry.get_u64_le();
        if epoch != self.epoch.load(Ordering::Acquire) {
            return None;
        }
        Some(match kind {
            PRESENT => {
                let age = Duration::from_nanos(self.now().saturating_sub(filled));
                Held::Value(entry, age)
            }
            _ => Held::Absent,
        })
    }
}

fn encode(ticket: Ticket, value: Option<&Bytes>) -> Bytes {
    let len = value.map_or(0, Bytes::len);
    let mut entry = BytesMut::with_capacity(HEADER + len);
    entry.put_u8(if value.is_some() { PRESENT } else { ABSENT });
    entry.put_u64_le(ticket.epoch);
    entry.put_u64_le(ticket.sent);
    if let Some(value) = value {
        entry.put_slice(value);
    }
    entry.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coherence() -> Coherence {
        let c = Coherence::new(MemoryCache::new(), Duration::from_secs(1), None);
        c.flush();
        c
    }

    fn value(c: &Coherence, key: &str) -> Option<Bytes> {
        match c.held(key) {
            Some(Held::Value(v, _)) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn a_fill_lands_only_when_nothing_invalidated_its_key_since_its_ticket() {
        let c = coherence();
        let ticket = c.ticket();
        assert!(c.fill("k", ticket, Some(&Bytes::from("v1")), 60_000));
        assert_eq!(value(&c, "k").as_deref(), Some(&b"v1"[..]));

        let ticket = c.ticket();
        c.invalidate(&["k"]);
        assert!(value(&c, "k").is_none(), "the invalidation dropped it");
        assert!(!c.fill("k", ticket, Some(&Bytes::from("v1")), 60_000));
        assert!(value(&c, "k").is_none(), "the older read did not land");
        // Another key's fill is unaffected (unless it shares the stripe).
        let ticket = c.ticket();
        assert!(c.fill("other", ticket, None, 60_000));
        assert!(matches!(c.held("other"), Some(Held::Absent)));
    }

    #[test]
    fn a_flush_hides_everything_and_refuses_fills_in_flight() {
        let c = coherence();
        assert!(c.fill("k", c.ticket(), Some(&Bytes::from("v")), 60_000));
        let before = c.ticket();
        c.flush();
        assert!(value(&c, "k").is_none());
        assert!(!c.fill("k", before, Some(&Bytes::from("v")), 60_000));
        let barrier = c.ticket();
        c.raise_barrier();
        assert!(!c.fill("k", barrier, Some(&Bytes::from("v")), 60_000));
        assert!(c.fill("k", c.ticket(), Some(&Bytes::from("v")), 60_000));
    }

    #[test]
    fn l1_serves_only_within_the_window_of_the_last_proof() {
        let mut c = coherence();
        // A clock that started 10 s ago, so a proof 2 s old exists on a fresh process too.
        if let Some(earlier) = c.origin.checked_sub(Duration::from_secs(10)) {
            c.origin = earlier;
        }
        assert!(!c.serving(), "nothing proven yet");
        c.prove(c.now());
        assert!(c.serving());
        assert!(
            c.proven_ago()
                .is_some_and(|d| d < Duration::from_millis(500))
        );
        c.prove(c.now().saturating_sub(2_000_000_000));
        assert!(!c.serving(), "a proof older than Δ");
        c.prove(c.now());
        c.unprove();
        assert!(!c.serving());
    }

    #[test]
    fn pushes_drop_keys_or_everything() {
        let c = coherence();
        assert!(c.fill("a", c.ticket(), Some(&Bytes::from("1")), 60_000));
        assert!(c.fill("b", c.ticket(), Some(&Bytes::from("2")), 60_000));
        c.on_invalidate(&[Value::Array(vec![Value::BulkString(b"a".to_vec())])]);
        assert!(value(&c, "a").is_none());
        assert!(value(&c, "b").is_some());
        c.on_invalidate(&[Value::Nil]);
        assert!(value(&c, "b").is_none());
        assert_eq!(c.invalidations.load(Ordering::Relaxed), 1);
    }
}
