//! [`Stripes`]: how the memory store makes every operation atomic, readers included.
//!
//! Writers lock the stripes of the keys they touch (ordered, so two multi-key writers never wait
//! on each other), which makes read-modify-write operations atomic against every other write.
//! moka makes each single insert or removal atomic on its own, so a plain read of one key needs
//! nothing more — except while a write that spans several steps is in flight: several keys
//! (`write_if`, `set_many`, `delete_many`) or a set taken out of the store to be changed in
//! place. Such a write is [`exclusive`](Stripes::exclusive), and readers check for one with a
//! sequence lock:
//!
//! - a global word counts exclusive writers in flight (low half) and every one that started
//!   (high half): a read that sees no writer before and the same word after saw no
//!   exclusive write at all — two loads and no hashing on the hot path;
//! - when one is in flight somewhere, the read checks its own stripes' versions (odd while an
//!   exclusive writer holds them) the same way, and when one of those is busy it waits for the
//!   stripe's lock, which the writer holds until it is done.
//!
//! So a reader never sees part of a multi-key write: once any of its effects is visible, all
//! are. The locks are std mutexes: the critical sections are a few map operations and never
//! cross an `.await`.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One exclusive writer more in flight, and one more started.
const STARTED: u64 = 1 | (1 << 32);
const IN_FLIGHT: u64 = u32::MAX as u64;

pub(super) struct Stripes {
    locks: Box<[Mutex<()>]>,
    versions: Box<[AtomicU64]>,
    writers: AtomicU64,
    hasher: RandomState,
}

/// Exclusive access to some stripes, from [`Stripes::exclusive`]: readers of their keys wait
/// until it is dropped.
pub(super) struct Exclusive<'s> {
    stripes: &'s Stripes,
    held: Vec<usize>,
    _guards: Vec<MutexGuard<'s, ()>>,
}

impl Stripes {
    pub(super) fn new(count: usize) -> Self {
        Self {
            locks: (0..count).map(|_| Mutex::new(())).collect(),
            versions: (0..count).map(|_| AtomicU64::new(0)).collect(),
            writers: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    /// Locks the stripe of `key` for a write of that key alone. A poisoned stripe is still
    /// usable: the data it guards lives in moka, which a panicking writer cannot leave
    /// half-updated.
    pub(super) fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        self.lock_index(self.index(key))
    }

    /// Locks the stripes of `keys` for a write that readers may see happen step by step.
    pub(super) fn exclusive<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Exclusive<'_> {
        let mut held: Vec<usize> = keys.map(|k| self.index(k)).collect();
        held.sort_unstable();
        held.dedup();
        let guards = held.iter().map(|&i| self.lock_index(i)).collect();
        // Announce the writer before any change: a reader that sees one of its changes then
        // sees the announcement too.
        self.writers.fetch_add(STARTED, Ordering::SeqCst);
        for &i in &held {
            self.version(i).fetch_add(1, Ordering::SeqCst);
        }
        Exclusive {
            stripes: self,
            held,
            _guards: guards,
        }
    }

    /// Runs `read` (one or several lookups of `keys`) so that it sees no exclusive write half
    /// done.
    #[inline]
    pub(super) fn read<'k, T>(
        &self,
        keys: impl Iterator<Item = &'k str> + Clone,
        read: impl Fn() -> T,
    ) -> T {
        let before = self.writers.load(Ordering::SeqCst);
        if before & IN_FLIGHT == 0 {
            let value = read();
            if self.writers.load(Ordering::SeqCst) == before {
                return value;
            }
        }
        let mut stripes: Vec<usize> = keys.map(|k| self.index(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let versions: Vec<u64> = stripes
            .iter()
            .map(|&i| self.version(i).load(Ordering::SeqCst))
            .collect();
        if versions.iter().all(|v| v % 2 == 0) {
            let value = read();
            let unchanged = stripes
                .iter()
                .zip(&versions)
                .all(|(&i, &v)| self.version(i).load(Ordering::SeqCst) == v);
            if unchanged {
                return value;
            }
        }
        // A writer holds (or just held) these stripes: wait for it, and keep others out.
        let _guards: Vec<MutexGuard<'_, ()>> =
            stripes.iter().map(|&i| self.lock_index(i)).collect();
        read()
    }

    fn index(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % self.locks.len()
    }

    fn lock_index(&self, i: usize) -> MutexGuard<'_, ()> {
        self.locks[i % self.locks.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn version(&self, i: usize) -> &AtomicU64 {
        &self.versions[i % self.versions.len()]
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        // Before the locks are released (the guards are dropped after this body).
        for &i in &self.held {
            self.stripes.version(i).fetch_add(1, Ordering::SeqCst);
        }
        self.stripes.writers.fetch_sub(1, Ordering::SeqCst);
    }
}
