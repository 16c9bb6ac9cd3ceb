//! [`Consumer`]: one per instance. It reads the log, applies each entry to this process's
//! memory at once and to the shared cache until it is applied, and keeps the proof.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::{AnyConnection, Connection as _};
use tokio::sync::Notify;

use super::read::Cursor;
use super::{Dialect, InvalidationLog};
use crate::coherent::{Applier, Follower, FollowerStatus, Target};
use crate::error::{Error, Result};
use crate::fallback::BurstLog;

/// The most targets waiting for the shared cache; past it the backlog is dropped and the
/// coherent namespaces are swept from the shared cache instead (memory stays bounded).
const MAX_QUEUED: usize = 10_000;

/// Targets applied to the shared cache at once.
const IN_FLIGHT: usize = 64;

/// What this process evicts at once when an entry arrives: the L1 of a hybrid cache.
#[cfg(feature = "redis")]
type Local = crate::HybridCache;

/// Configures a [`Consumer`]; see [`Consumer::builder`].
#[must_use]
pub struct ConsumerBuilder {
    log: InvalidationLog,
    url: String,
    follower: Follower,
    shared: Option<Applier>,
    #[cfg(feature = "redis")]
    local: Option<Local>,
    poll: Option<Duration>,
    liveness: Duration,
    retention: Duration,
    page: i64,
    max_queued: usize,
    sweep_pause: Duration,
    observer: Option<Arc<dyn Fn(i64) + Send + Sync>>,
    on_invalidate: Option<Arc<Hook>>,
}

/// What else to tell of the keys an entry invalidates (an empty slice: every key).
type Hook = dyn Fn(&[&str]) + Send + Sync;

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("log", &self.log)
            .field("follower", &self.follower)
            .field("poll", &self.poll)
            .field("liveness", &self.liveness)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// The cache whose coherent keys the entries invalidate: Redis (shared by every
    /// instance), or the embedded cache of this process.
    pub fn shared(mut self, cache: Arc<dyn crate::Cache>) -> Self {
        self.shared = Some(Applier::new(cache));
        self
    }

    /// The hybrid cache whose L1 is evicted at once when an entry is read, before (and
    /// whether or not) Redis accepts it.
    #[cfg(feature = "redis")]
    pub fn local(mut self, hybrid: crate::HybridCache) -> Self {
        self.local = Some(hybrid);
        self
    }

    /// How often the log is read without a wake-up (default Δ_db / 4): what keeps the proof
    /// fresh, and on SQLite what finds new entries.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = Some(every.max(Duration::from_millis(1)));
        self
    }

    /// How long a consumer may go unseen before the others forget it and retention removes
    /// entries it has not read (default 10 minutes). One that comes back later drops what it
    /// cannot prove.
    pub fn liveness(mut self, window: Duration) -> Self {
        self.liveness = window.max(Duration::from_secs(1));
        self
    }

    /// How often this consumer removes forgotten consumers and the entries every live one is
    /// past (default every 30 s).
    pub fn retention_every(mut self, every: Duration) -> Self {
        self.retention = every.max(Duration::from_millis(10));
        self
    }

    /// The most entries read in one query (default 1000).
    pub fn page(mut self, entries: u32) -> Self {
        self.page = i64::from(entries.max(1));
        self
    }

    /// The most targets that may wait for the shared cache before the backlog is dropped and
    /// the coherent namespaces swept instead (default 10 000).
    pub fn max_queued(mut self, targets: usize) -> Self {
        self.max_queued = targets.max(1);
        self
    }

    /// The pause between the two sweeps of a dropped backlog (default half of cache-aside's
    /// fence window, 30 s: a fill that read its generation before the first sweep is refused
    /// after that long, so the second sweep removes whatever such fills wrote). Shorter only
    /// where no fill can be that slow (tests).
    pub fn sweep_pause(mut self, pause: Duration) -> Self {
        self.sweep_pause = pause;
        self
    }

    /// Calls `hook` with the keys of every entry as it arrives, with an empty slice when
    /// everything coherent is dropped at once: for state of this process the consumer does
    /// not know of, such as cache-aside's loads in flight
    /// ([`CacheAside::detach`](crate::aside::CacheAside::detach)), which must not be joined by
    /// a lookup that starts after the change.
    pub fn on_invalidate(mut self, hook: impl Fn(&[&str]) + Send + Sync + 'static) -> Self {
        self.on_invalidate = Some(Arc::new(hook));
        self
    }

    /// Calls `observer` with the sequence number of every entry as it is applied to this
    /// process (for tests and audits).
    pub fn on_entry(mut self, observer: impl Fn(i64) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Starts the consumer's tasks: it connects in the background (and reconnects), so a
    /// database that is down at start delays the proof, not the start.
    ///
    /// # Errors
    /// `InvalidArgument` outside a Tokio runtime, or when the URL's dialect is not the log's.
    pub fn start(self) -> Result<Consumer> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::invalid_argument("a consumer must start inside a Tokio runtime"))?;
        if super::Dialect::of_url(&self.url)? != self.log.dialect() {
            return Err(Error::invalid_argument(
                "the database URL is not of the log's dialect",
            ));
        }
        sqlx::any::install_default_drivers();
        let poll = self
            .poll
            .unwrap_or_else(|| (self.follower.staleness() / 4).max(Duration::from_millis(1)));
        let state = Arc::new(State {
            id: consumer_id(),
            url: self.url,
            log: self.log,
            follower: self.follower,
            shared: self.shared,
            #[cfg(feature = "redis")]
            local: self.local,
            poll,
            liveness: self.liveness,
            retention: self.retention,
            page: self.page,
            max_queued: self.max_queued,
            sweep_pause: self.sweep_pause,
            observer: self.observer,
            on_invalidate: self.on_invalidate,
            resweep: AtomicBool::new(false),
            wake: Notify::new(),
            work: Notify::new(),
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            shared_horizon: AtomicI64::new(i64::MIN),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            warnings: Mutex::default(),
            stopped: AtomicBool::new(false),
        });
        let mut tasks = vec![
            runtime.spawn(read_loop(Arc::clone(&state))),
            runtime.spawn(apply_loop(Arc::clone(&state))),
        ];
        if state.log.dialect() == Dialect::Postgres {
            tasks.push(runtime.spawn(listen_loop(Arc::clone(&state))));
        }
        Ok(Consumer {
            state,
            tasks: tasks.into(),
        })
    }
}

/// Reads the invalidation log and applies it; stops when dropped. See [`crate::coherent`].
pub struct Consumer {
    state: Arc<State>,
    tasks: Box<[tokio::task::JoinHandle<()>]>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("id", &self.state.id)
            .field("status", &self.status())
            .finish()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a consumer has done, for health reports, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// The proof and the pending keys.
    pub follower: FollowerStatus,
    /// Entries read and applied to this process.
    pub entries: u64,
    /// Targets applied to the shared cache (written or found applied).
    pub applied: u64,
    /// Of those, the ones this instance wrote (the others found another instance's marker).
    pub written: u64,
    /// Attempts to apply a target that failed and were retried.
    pub retries: u64,
    /// Targets waiting for the shared cache.
    pub queued: usize,
    /// Reads of the log.
    pub passes: u64,
    /// Connections to the database made (the first included).
    pub connections: u64,
    /// Sweeps of the coherent namespaces from the shared cache (a backlog dropped, a
    /// consumer that fell behind, or the first consumer of a log).
    pub sweeps: u64,
    /// Entries removed by retention.
    pub retained_away: u64,
    /// The last error met, if any.
    pub last_error: Option<String>,
}

impl Consumer {
    /// Starts configuring a consumer of `log` in the database at `url` (its own connections,
    /// not the application's pool), proving what it applies in `follower`.
    pub fn builder(
        log: InvalidationLog,
        url: impl Into<String>,
        follower: Follower,
    ) -> ConsumerBuilder {
        ConsumerBuilder {
            log,
            url: url.into(),
            follower,
            shared: None,
            #[cfg(feature = "redis")]
            local: None,
            poll: None,
            liveness: Duration::from_secs(600),
            retention: Duration::from_secs(30),
            page: 1000,
            max_queued: MAX_QUEUED,
            sweep_pause: crate::aside::fence::DEFAULT_WINDOW / 2,
            observer: None,
            on_invalidate: None,
        }
    }

    /// The follower it proves into.
    pub fn follower(&self) -> &Follower {
        &self.state.follower
    }

    /// Reads the log now (a wake-up, as a `NOTIFY` gives): for tests and for a write that
    /// wants its entry applied sooner than the next poll.
    pub fn wake(&self) {
        self.state.wake.notify_one();
    }

    /// Waits until the proof holds and no sweep of the shared cache is under way (the first
    /// consumer of a log sweeps it, and until that is done coherent reads skip the shared
    /// cache), at most `limit`; whether that came.
    pub async fn ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.state.follower.proven() || self.state.follower.status().overflow {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// What it has done so far.
    pub fn status(&self) -> ConsumerStatus {
        let c = &self.state.counters;
        ConsumerStatus {
            follower: self.state.follower.status(),
            entries: c.entries.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            queued: self.state.queued.load(Ordering::Relaxed),
            passes: c.passes.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            sweeps: c.sweeps.load(Ordering::Relaxed),
            retained_away: c.retained_away.load(Ordering::Relaxed),
            last_error: self.state.last_error().clone(),
        }
    }
}

struct State {
    id: String,
    url: String,
    log: InvalidationLog,
    follower: Follower,
    shared: Option<Applier>,
    #[cfg(feature = "redis")]
    local: Option<Local>,
    poll: Duration,
    liveness: Duration,
    retention: Duration,
    page: i64,
    max_queued: usize,
    sweep_pause: Duration,
    observer: Option<Arc<dyn Fn(i64) + Send + Sync>>,
    on_invalidate: Option<Arc<Hook>>,
    /// Entries were dropped (past the queue's bound, or refused by the shared cache): one more
    /// sweep is due once the queue drains, and the horizon waits for it.
    resweep: AtomicBool,
    /// A `NOTIFY`, or a caller, asks for a read now.
    wake: Notify,
    /// Work for the applier.
    work: Notify,
    queue: Mutex<VecDeque<Work>>,
    /// Targets in the queue.
    queued: AtomicUsize,
    /// Below it, every entry has reached the shared cache: the horizon this consumer
    /// registers. `i64::MIN` until the first read.
    shared_horizon: AtomicI64,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    /// One burst log per kind of failure: a failure repeats on every pass while it lasts
    /// (Redis down: every second), and one kind must not hide another.
    warnings: Mutex<HashMap<&'static str, BurstLog>>,
    stopped: AtomicBool,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    applied: AtomicU64,
    written: AtomicU64,
    retries: AtomicU64,
    passes: AtomicU64,
    connections: AtomicU64,
    sweeps: AtomicU64,
    retained_away: AtomicU64,
}

/// What the applier does, in order.
enum Work {
    /// Apply an entry's targets to the shared cache.
    Entry { stamp: i64, targets: Vec<Target> },
    /// Every entry before this reached the shared cache: the horizon may move here.
    Horizon(i64),
    /// The backlog was dropped (or never known): sweep the coherent namespaces, then the
    /// horizon may move here. `twice`: fills may be in flight that read their generation
    /// before entries that were dropped (see [`sweep_shared`]).
    Sweep { horizon: i64, twice: bool },
}

impl State {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Work>> {
        // Plain data: a panic elsewhere cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_error(&self) -> MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, what: &'static str, e: &Error) {
        *self.last_error() = Some(format!("{what}: {e}"));
        let due = self
            .warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(what)
            .or_default()
            .should_log();
        if let Some(suppressed) = due {
            tracing::warn!(consumer = %self.id, error = %e, suppressed, "invalidation log: {what}");
        }
    }

    /// Evicts `keys` from this process's memory, after marking them pending (in that order:
    /// a read of Redis that starts after the eviction sees them pending).
    fn arrive(&self, stamp: i64, targets: Vec<Target>) {
        let keys: Vec<&str> = targets.iter().map(Target::cache_key).collect();
        {
            let mut queue = self.queue();
            // Past the bound the entry is not kept: a sweep after the current backlog covers
            // it (memory stays bounded whatever the burst).
            let keep = self.shared.is_some()
                && self.queued.load(Ordering::Acquire) + targets.len() <= self.max_queued;
            if self.shared.is_some() {
                if keep {
                    self.follower.mark_pending(&keys);
                } else {
                    self.follower.start_overflow();
                    self.resweep.store(true, Ordering::Release);
                }
            }
            #[cfg(feature = "redis")]
            if let Some(local) = &self.local {
                local.invalidate_local(&keys);
            }
            if let Some(hook) = &self.on_invalidate {
                hook(&keys);
            }
            drop(keys);
            if keep {
                self.queued.fetch_add(targets.len(), Ordering::AcqRel);
                queue.push_back(Work::Entry { stamp, targets });
            }
        }
        self.work.notify_one();
    }

    /// Drops the backlog and sweeps the coherent namespaces from the shared cache instead;
    /// until then no shared read of them is allowed.
    fn sweep(&self, horizon: i64, twice: bool) {
        let mut queue = self.queue();
        self.follower.start_overflow();
        queue.clear();
        self.queued.store(0, Ordering::Release);
        queue.push_back(Work::Sweep { horizon, twice });
        drop(queue);
        self.work.notify_one();
    }

    fn push(&self, work: Work) {
        self.queue().push_back(work);
        self.work.notify_one();
    }

    /// Forgets everything this process holds of the coherent namespaces.
    fn drop_local(&self) {
        #[cfg(feature = "redis")]
        if let Some(local) = &self.local {
            local.flush_local();
        }
    }
}

/// Marks every coherent key of this process unproven and gone: its memory, and (by a sweep)
/// the shared cache; the horizon restarts at `horizon`.
fn start_over(state: &State, horizon: i64) {
    state.follower.unprove();
    state.drop_local();
    if let Some(hook) = &state.on_invalidate {
        hook(&[]);
    }
    state.shared_horizon.store(horizon, Ordering::Release);
    state.sweep(horizon, true);
}

/// Connects, reads, applies to memory, proves; reconnects after an error.
async fn read_loop(state: Arc<State>) {
    let mut cursor: Option<Cursor> = None;
    let mut backoff = Duration::from_millis(20);
    while !state.stopped.load(Ordering::Acquire) {
        let mut conn = match connect(&state).await {
            Ok(conn) => conn,
            Err(e) => {
                state.failed("cannot connect to the database", &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        state.counters.connections.fetch_add(1, Ordering::Relaxed);
        backoff = Duration::from_millis(20);
        if let Err(e) = follow(&state, &mut conn, &mut cursor).await {
            state.failed("lost the database", &e);
        }
        // The connection may be half-broken; a new one next round.
        let _ = conn.close().await;
    }
}

/// Reads the log on `conn` until it fails.
async fn follow(
    state: &State,
    conn: &mut AnyConnection,
    cursor: &mut Option<Cursor>,
) -> Result<()> {
    let log = &state.log;
    match cursor.as_ref() {
        None => {
            let (start, unknown) = log.start(conn).await?;
            log.register(conn, &state.id, start.horizon()).await?;
            if unknown && state.shared.is_some() {
                // The first consumer of this log: nothing tells what the shared cache holds.
                // No entry was dropped, so one sweep does.
                state.sweep(start.horizon(), false);
            } else {
                state.push(Work::Horizon(start.horizon()));
            }
            *cursor = Some(start);
        }
        // Back after a lost connection: still registered? If it was forgotten meanwhile,
        // entries it needed may be gone, and it must not prove anything before it knows.
        Some(_) => {
            let horizon = registered_horizon(state, cursor);
            if !log.heartbeat(conn, &state.id, horizon).await? {
                fell_behind(state, conn, cursor).await?;
            }
        }
    }
    let liveness_ms = i64::try_from(state.liveness.as_millis()).unwrap_or(i64::MAX);
    let mut last_beat = tokio::time::Instant::now();
    let mut last_retention = tokio::time::Instant::now();
    // The first pass at once, not a poll period later: a starting (or reconnected) instance
    // proves itself as soon as it has read the log.
    state.wake.notify_one();
    loop {
        tokio::select! {
            () = state.wake.notified() => {}
            () = tokio::time::sleep(state.poll) => {}
        }
        let Some(current) = cursor.clone() else {
            return Ok(());
        };
        // Taken before the query: a commit that completed before it is in the snapshot.
        let at = quanta::Instant::now();
        let mut unknown = false;
        let mut on_page = |entries: Vec<super::Entry>| {
            for entry in &entries {
                match log.targets(entry) {
                    Ok(targets) => state.arrive(log.stamp(entry.seq), targets),
                    Err(e) => {
                        // Its keys are unknown: everything coherent goes, here and in Redis.
                        state.failed("an entry could not be mapped", &e);
                        unknown = true;
                    }
                }
                if let Some(observer) = &state.observer {
                    observer(entry.seq);
                }
            }
            state
                .counters
                .entries
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
        };
        let read = log.read(conn, &current, state.page, &mut on_page).await?;
        state.counters.passes.fetch_add(1, Ordering::Relaxed);
        if read.went_back {
            // A restore, or a failover to a replica that lagged: what was applied matches a
            // database that no longer is. Start over from where this one is.
            tracing::error!(
                consumer = %state.id,
                "invalidation log: the database is behind what this consumer read (a restore \
                 or a failover?); dropping what it cannot prove"
            );
            start_over(state, read.next.horizon());
            *cursor = Some(read.next);
            continue;
        }
        let next = read.next;
        if unknown {
            state.drop_local();
            if let Some(hook) = &state.on_invalidate {
                hook(&[]);
            }
            state.sweep(next.horizon(), true);
        } else {
            state.push(Work::Horizon(next.horizon()));
        }
        *cursor = Some(next);
        state.follower.prove(at);
        if last_beat.elapsed() >= Duration::from_secs(1) {
            last_beat = tokio::time::Instant::now();
            let horizon = registered_horizon(state, cursor);
            if horizon != i64::MIN && !log.heartbeat(conn, &state.id, horizon).await? {
                fell_behind(state, conn, cursor).await?;
            }
        }
        if last_retention.elapsed() >= state.retention {
            last_retention = tokio::time::Instant::now();
            let gone = log.retain(conn, liveness_ms).await?;
            state
                .counters
                .retained_away
                .fetch_add(gone, Ordering::Relaxed);
        }
    }
}

/// The horizon to register: below it everything reached the shared cache (or, without one,
/// was read).
fn registered_horizon(state: &State, cursor: &Option<Cursor>) -> i64 {
    match state.shared {
        Some(_) => state.shared_horizon.load(Ordering::Acquire),
        None => cursor.as_ref().map_or(i64::MIN, Cursor::horizon),
    }
}

/// This consumer was forgotten (away past the liveness window): entries it had not read may
/// be gone. It drops what it cannot prove — its memory, and the coherent namespaces in the
/// shared cache — and starts again where the others are.
async fn fell_behind(
    state: &State,
    conn: &mut AnyConnection,
    cursor: &mut Option<Cursor>,
) -> Result<()> {
    tracing::error!(
        consumer = %state.id,
        "invalidation log: this consumer was away past the liveness window; dropping what it \
         cannot prove"
    );
    let (start, _) = state.log.start(conn).await?;
    state.log.register(conn, &state.id, start.horizon()).await?;
    start_over(state, start.horizon());
    *cursor = Some(start);
    Ok(())
}

/// Applies the queue to the shared cache, in order, retrying until each target is applied.
async fn apply_loop(state: Arc<State>) {
    // The horizon reached while a sweep is due: it holds once the sweep is done.
    let mut held = i64::MIN;
    loop {
        let batch = take_batch(&state);
        if batch.is_empty() {
            state.work.notified().await;
            continue;
        }
        let mut entries: Vec<(i64, Vec<Target>)> = Vec::new();
        for work in batch {
            match work {
                Work::Entry { stamp, targets } => entries.push((stamp, targets)),
                Work::Horizon(horizon) => {
                    apply_entries(&state, std::mem::take(&mut entries)).await;
                    if state.resweep.load(Ordering::Acquire) {
                        held = held.max(horizon);
                    } else {
                        state.shared_horizon.fetch_max(horizon, Ordering::AcqRel);
                    }
                }
                Work::Sweep { horizon, twice } => {
                    apply_entries(&state, std::mem::take(&mut entries)).await;
                    sweep_shared(&state, twice).await;
                    state.shared_horizon.fetch_max(horizon, Ordering::AcqRel);
                }
            }
        }
        apply_entries(&state, entries).await;
        // Overflow ends only when nothing waits: what arrives next is marked pending again.
        let mut queue = state.queue();
        if queue.is_empty() {
            if state.resweep.swap(false, Ordering::AcqRel) {
                queue.push_back(Work::Sweep {
                    horizon: std::mem::replace(&mut held, i64::MIN),
                    twice: true,
                });
            } else {
                state.follower.end_overflow();
            }
        }
    }
}

/// The next items of the queue, up to about `IN_FLIGHT` targets.
fn take_batch(state: &State) -> Vec<Work> {
    let mut queue = state.queue();
    let mut batch = Vec::new();
    let mut targets = 0;
    while let Some(work) = queue.pop_front() {
        if let Work::Entry { targets: t, .. } = &work {
            targets += t.len();
        }
        let sweep = matches!(work, Work::Sweep { .. });
        batch.push(work);
        if targets >= IN_FLIGHT || sweep {
            break;
        }
    }
    batch
}

/// Applies `entries` to the shared cache, each entry's targets in order (a tombstone before
/// the value it guards), the entries concurrently, retrying each failure with backoff until it
/// is applied; then clears their pending marks.
async fn apply_entries(state: &State, entries: Vec<(i64, Vec<Target>)>) {
    let Some(shared) = &state.shared else {
        return;
    };
    let chains = entries.into_iter().map(|(stamp, targets)| async move {
        for target in targets {
            apply_one(state, shared, &target, stamp).await;
            state.follower.clear_pending(&[target.cache_key()]);
            state.counters.applied.fetch_add(1, Ordering::Relaxed);
            // Never below zero: a sweep may have reset the count meanwhile.
            let _ = state
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
        }
    });
    futures::future::join_all(chains).await;
}

/// Applies one target, retrying with backoff until the shared cache accepts it. One it
/// refuses for good (a key over its limits, a value of the wrong type) is left to a sweep,
/// never retried forever: it would hold up every entry after it.
async fn apply_one(state: &State, shared: &Applier, target: &Target, stamp: i64) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match shared.apply(target, stamp).await {
            Ok(wrote) => {
                if wrote {
                    state.counters.written.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(e) if !retryable(&e) => {
                state.failed(
                    "the shared cache refused an invalidation for good; sweeping",
                    &e,
                );
                state.follower.start_overflow();
                state.resweep.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                state.failed("the shared cache refused an invalidation", &e);
                state.counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Whether applying again may work: the cache was unreachable, slow or misconfigured (a fix
/// of the configuration fixes it), not the target itself.
fn retryable(e: &crate::Error) -> bool {
    e.is_transient() || e.kind() == crate::ErrorKind::Misconfigured
}

/// Deletes every key of the coherent namespaces from the shared cache; `twice` after entries
/// were dropped: a fill that read its generation before such an entry may still commit for
/// half a fence window after the first sweep (then it is refused), and the second sweep
/// removes what such fills wrote.
async fn sweep_shared(state: &State, twice: bool) {
    let Some(shared) = &state.shared else {
        return;
    };
    state.counters.sweeps.fetch_add(1, Ordering::Relaxed);
    for round in 0..(if twice { 2 } else { 1 }) {
        if round == 1 {
            tokio::time::sleep(state.sweep_pause).await;
        }
        for prefix in state.follower.prefixes() {
            let pattern = format!("{}*", crate::glob::escape(prefix));
            let mut backoff = Duration::from_millis(20);
            while let Err(e) = shared.cache().delete_pattern(&pattern).await {
                state.failed("could not sweep the shared cache", &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Turns `NOTIFY`s into wake-ups; reconnects after an error.
async fn listen_loop(state: Arc<State>) {
    loop {
        if let Err(e) = listen(&state).await {
            state.failed("LISTEN failed", &super::db_error(e));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn listen(state: &State) -> std::result::Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(&state.url).await?;
    listener.listen(&state.log.channel).await?;
    // A wake-up now: notifications sent while no one listened are lost.
    state.wake.notify_one();
    loop {
        listener.recv().await?;
        state.wake.notify_one();
    }
}

async fn connect(state: &State) -> Result<AnyConnection> {
    let url = match state.log.dialect() {
        // Named, so an operator (and a test) can tell its connection from the application's.
        Dialect::Postgres if !state.url.contains("application_name=") => {
            let sep = if state.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}application_name=dashcache-consumer", state.url)
        }
        _ => state.url.clone(),
    };
    AnyConnection::connect(&url).await.map_err(super::db_error)
}

/// A name for this consumer: unique per process start.
fn consumer_id() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}
