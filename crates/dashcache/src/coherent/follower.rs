//! [`Follower`]: what one process knows of its place in the database's invalidation log — the
//! proof, the keys whose invalidation has not reached the shared cache yet, and which
//! namespaces follow the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::Keys;

/// The proof and the pending keys, shared by the consumer (which writes them) and the caches
/// that answer coherent namespaces (which read them). Cheap to clone.
///
/// Reading costs one atomic load and a clock read; the pending keys are looked up only when
/// some exist.
#[derive(Clone)]
pub struct Follower {
    inner: Arc<Shared>,
}

struct Shared {
    origin: quanta::Instant,
    staleness: Duration,
    /// Δ_db less 1 % for the error of the processor's clock against the system's.
    window_nanos: u64,
    prefixes: Box<[String]>,
    /// Nanoseconds after `origin` until which coherent keys may be answered; 0: not now.
    serve_until: AtomicU64,
    /// When the last proof was taken (nanoseconds after `origin`).
    proven_at: AtomicU64,
    pending: Mutex<HashMap<String, u32>>,
    pending_count: AtomicUsize,
    /// Too many pending keys to track one by one: every shared read is refused.
    overflow: AtomicBool,
}

/// What a [`Follower`] knows, for health reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowerStatus {
    /// Whether coherent namespaces are answered from the cache now.
    pub proven: bool,
    /// How long ago the last proof was taken (`None`: never).
    pub proven_ago: Option<Duration>,
    /// The staleness bound Δ_db.
    pub staleness: Duration,
    /// Keys whose invalidation has not reached the shared cache yet.
    pub pending: usize,
    /// Whether the backlog is too large to track key by key (every shared read refused).
    pub overflow: bool,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("prefixes", &self.inner.prefixes)
            .field("status", &self.status())
            .finish()
    }
}

impl Follower {
    /// A follower of the log for keys starting with one of `prefixes`, with the staleness
    /// bound `staleness` (Δ_db). Nothing is proven until a consumer proves it.
    ///
    /// # Errors
    /// `InvalidArgument` for a bound outside 10 ms – 1 h, or no prefix.
    pub fn new<I, S>(prefixes: I, staleness: Duration) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let prefixes: Box<[String]> = prefixes.into_iter().map(Into::into).collect();
        if prefixes.is_empty() || prefixes.iter().any(String::is_empty) {
            return Err(Error::invalid_argument(
                "a follower needs at least one non-empty prefix",
            ));
        }
        let (least, most) = (Duration::from_millis(10), Duration::from_secs(3600));
        if !(least..=most).contains(&staleness) {
            return Err(Error::invalid_argument(format!(
                "the staleness bound must be between {least:?} and {most:?}"
            )));
        }
        let delta = u64::try_from(staleness.as_nanos()).unwrap_or(u64::MAX);
        Ok(Self {
            inner: Arc::new(Shared {
                origin: quanta::Instant::now(),
                staleness,
                window_nanos: delta - delta / 100,
                prefixes,
                serve_until: AtomicU64::new(0),
                proven_at: AtomicU64::new(0),
                pending: Mutex::new(HashMap::new()),
                pending_count: AtomicUsize::new(0),
                overflow: AtomicBool::new(false),
            }),
        })
    }

    /// A follower of the namespaces `namespaces` of `keys` (each as `prefix:namespace:`).
    ///
    /// # Errors
    /// As [`new`](Self::new), and `InvalidArgument` for an undeclared namespace.
    pub fn for_namespaces<'a>(
        keys: &Keys,
        namespaces: impl IntoIterator<Item = &'a str>,
        staleness: Duration,
    ) -> Result<Self> {
        let prefixes = namespaces
            .into_iter()
            .map(|ns| keys.namespace_prefix(ns))
            .collect::<Result<Vec<_>>>()?;
        Self::new(prefixes, staleness)
    }

    /// The staleness bound Δ_db.
    pub fn staleness(&self) -> Duration {
        self.inner.staleness
    }

    /// The prefixes of the coherent namespaces.
    pub fn prefixes(&self) -> &[String] {
        &self.inner.prefixes
    }

    /// Whether `key` belongs to a coherent namespace.
    #[inline]
    pub fn covers(&self, key: &str) -> bool {
        self.inner
            .prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }

    /// Whether the proof is younger than Δ_db: this process's memory may answer coherent keys.
    #[inline]
    pub fn proven(&self) -> bool {
        self.now() < self.inner.serve_until.load(Ordering::Acquire)
    }

    /// Whether the shared cache may answer `key` of a coherent namespace: proven, and no
    /// invalidation of it is still on its way there.
    #[inline]
    pub fn shared_may_answer(&self, key: &str) -> bool {
        if !self.proven() {
            return false;
        }
        if self.inner.pending_count.load(Ordering::Acquire) == 0 {
            return true;
        }
        if self.inner.overflow.load(Ordering::Acquire) {
            return false;
        }
        !self.pending().contains_key(key)
    }

    /// Records a proof: every entry committed before `at` (an instant taken before the log
    /// was read) has been applied to this process's memory, and to the shared cache or
    /// pending. A proof older than the last one changes nothing.
    pub fn prove(&self, at: quanta::Instant) {
        let sent = self.nanos(at);
        self.inner.proven_at.fetch_max(sent, Ordering::AcqRel);
        self.inner.serve_until.fetch_max(
            sent.saturating_add(self.inner.window_nanos),
            Ordering::AcqRel,
        );
    }

    /// Withdraws the proof at once (the consumer learnt that it missed entries).
    pub fn unprove(&self) {
        self.inner.serve_until.store(0, Ordering::Release);
    }

    /// Marks `keys` pending: their invalidation has reached this process's memory but not the
    /// shared cache. Call before evicting them from memory.
    pub fn mark_pending(&self, keys: &[&str]) {
        let mut pending = self.pending();
        if self.inner.overflow.load(Ordering::Acquire) {
            // Every shared read is refused anyway; the set stays bounded.
            return;
        }
        for key in keys {
            *pending.entry((*key).to_owned()).or_insert(0) += 1;
        }
        self.inner
            .pending_count
            .store(pending.len(), Ordering::Release);
    }

    /// `keys`' invalidation reached the shared cache (once per [`mark_pending`]).
    ///
    /// [`mark_pending`]: Self::mark_pending
    pub fn clear_pending(&self, keys: &[&str]) {
        let mut pending = self.pending();
        for key in keys {
            if let Some(n) = pending.get_mut(*key) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(*key);
                }
            }
        }
        if !self.inner.overflow.load(Ordering::Acquire) {
            self.inner
                .pending_count
                .store(pending.len(), Ordering::Release);
        }
    }

    /// Refuses every shared read of coherent keys until [`end_overflow`]: the consumer does
    /// not track what the shared cache is missing one key at a time any more (a backlog too
    /// large, or unknown). Keys are not marked pending meanwhile.
    ///
    /// [`end_overflow`]: Self::end_overflow
    pub fn start_overflow(&self) {
        let mut pending = self.pending();
        self.inner.overflow.store(true, Ordering::Release);
        pending.clear();
        self.inner.pending_count.store(1, Ordering::Release);
    }

    /// Ends what [`start_overflow`](Self::start_overflow) began, once the shared cache has
    /// been cleared of what it could be missing.
    pub fn end_overflow(&self) {
        let pending = self.pending();
        self.inner.overflow.store(false, Ordering::Release);
        self.inner
            .pending_count
            .store(pending.len(), Ordering::Release);
    }

    /// What this follower knows now.
    pub fn status(&self) -> FollowerStatus {
        let proven_at = self.inner.proven_at.load(Ordering::Acquire);
        FollowerStatus {
            proven: self.proven(),
            proven_ago: (proven_at > 0)
                .then(|| Duration::from_nanos(self.now().saturating_sub(proven_at))),
            staleness: self.inner.staleness,
            pending: self.pending().len(),
            overflow: self.inner.overflow.load(Ordering::Acquire),
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        // Counts only: a panic elsewhere cannot leave them inconsistent.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since `origin` now (at least 1: 0 means "never").
    #[inline]
    fn now(&self) -> u64 {
        self.nanos(quanta::Instant::now())
    }

    fn nanos(&self, at: quanta::Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.inner.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> Follower {
        Follower::new(["app:user:", "app:session:"], Duration::from_millis(200))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn nothing_is_proven_before_a_proof_and_a_proof_expires() {
        let f = follower();
        assert!(!f.proven());
        assert!(!f.shared_may_answer("app:user:1"));
        f.prove(quanta::Instant::now());
        assert!(f.proven() && f.shared_may_answer("app:user:1"));
        // A proof taken long ago proves nothing now.
        let g = follower();
        std::thread::sleep(Duration::from_millis(250));
        g.prove(g.inner.origin);
        assert!(!g.proven());
        f.unprove();
        assert!(!f.proven());
    }

    #[test]
    fn pending_keys_are_not_read_from_the_shared_cache_until_cleared() {
        let f = follower();
        f.prove(quanta::Instant::now());
        f.mark_pending(&["app:user:1", "app:user:1"]);
        assert!(!f.shared_may_answer("app:user:1"));
        assert!(f.shared_may_answer("app:user:2"));
        f.clear_pending(&["app:user:1"]);
        assert!(!f.shared_may_answer("app:user:1"), "marked twice");
        f.clear_pending(&["app:user:1"]);
        assert!(f.shared_may_answer("app:user:1"));
        f.mark_pending(&["app:user:3"]);
        f.start_overflow();
        assert!(!f.shared_may_answer("app:user:2"));
        f.mark_pending(&["app:user:4"]);
        f.end_overflow();
        assert!(f.shared_may_answer("app:user:2"));
        assert!(
            f.shared_may_answer("app:user:3"),
            "the sweep cleared what was pending"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(Follower::new(Vec::<String>::new(), Duration::from_secs(1)).is_err());
        assert!(Follower::new([""], Duration::from_secs(1)).is_err());
        assert!(Follower::new(["a:"], Duration::from_millis(1)).is_err());
        assert!(follower().covers("app:session:x") && !follower().covers("app:authz:x"));
    }
}
