//! [`Refresher`] and [`Watch`]: how the cluster router re-reads its slot map and the Sentinel
//! router looks its master up again — in the background when a request fails, at most one
//! refresh at a time and one per interval, and never making a request wait for a refresh it
//! did not need.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::RedisResult;
use tokio::time::Instant;

/// The bookkeeping of one router's refreshes.
pub(crate) struct Refresher {
    interval: Duration,
    /// Refreshes attempted so far: a caller that waited for the lock sees whether one ran
    /// meanwhile.
    count: AtomicU64,
    /// Held while a refresh runs; when the last one finished.
    last: tokio::sync::Mutex<Option<Instant>>,
    /// A background refresh is scheduled or running.
    scheduled: AtomicBool,
}

impl Refresher {
    /// At most one refresh per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            count: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
            scheduled: AtomicBool::new(false),
        }
    }

    /// Runs `refresh` unless another caller did while this one waited for the lock. Within the
    /// interval of the last refresh it waits for the interval to pass (`wait_interval`) or
    /// does nothing.
    pub(crate) async fn now<F>(&self, wait_interval: bool, refresh: F) -> RedisResult<()>
    where
        F: Future<Output = RedisResult<()>>,
    {
        let seen = self.count.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if self.count.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        if let Some(next) = last.map(|at| at + self.interval)
            && Instant::now() < next
        {
            if !wait_interval {
                return Ok(());
            }
            tokio::time::sleep_until(next).await;
        }
        let outcome = refresh.await;
        *last = Some(Instant::now());
        self.count.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Spawns `task` (which refreshes, then calls [`done`](Self::done)) unless a background
    /// refresh is scheduled already, or there is no runtime to run it on.
    pub(crate) fn soon<F>(&self, task: impl FnOnce() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(task());
            }
            Err(_) => self.done(),
        }
    }

    /// The background refresh is over: the next failure may schedule another.
    pub(crate) fn done(&self) {
        self.scheduled.store(false, Ordering::Release);
    }
}

/// A router whose topology a failed request should have refreshed.
pub(crate) trait Refresh {
    /// Asks for a refresh in the background.
    fn refresh_soon(&self);
}

/// Schedules a refresh when a request fails to reach its node, or is dropped unfinished (its
/// deadline passed: the node may be frozen, and a replica promoted in its place).
pub(crate) struct Watch<'r, R: Refresh> {
    router: &'r R,
    finished: bool,
}

impl<'r, R: Refresh> Watch<'r, R> {
    pub(crate) fn new(router: &'r R) -> Self {
        Self {
            router,
            finished: false,
        }
    }

    /// The request finished with `outcome`: a transport failure asks for a refresh.
    pub(crate) fn done<T>(&mut self, outcome: &RedisResult<T>) {
        self.finished = true;
        if let Err(e) = outcome
            && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
        {
            self.router.refresh_soon();
        }
    }
}

impl<R: Refresh> Drop for Watch<'_, R> {
    fn drop(&mut self) {
        if !self.finished {
            self.router.refresh_soon();
        }
    }
}
