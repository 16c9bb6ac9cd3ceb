//! [`Deadlines`]: the deadline of every operation, without a timer each.
//!
//! A `tokio::time::timeout` per operation registers a timer in the runtime's wheel and removes
//! it again: at 64 operations in flight on one connection that costs a tenth of the whole
//! round trip. Every operation of one cache has the same deadline, so here time is cut into
//! ticks (a power of two of nanoseconds near a sixteenth of the deadline, at least about 4 ms) and the operations whose deadline falls
//! in one tick wait on one [`Notify`]; a single task per cache wakes each tick's waiters when
//! it has passed, and each checks its own deadline. An operation that answers in time only ever
//! touches its tick's waiter list; one that does not is cancelled no sooner than its deadline
//! and about a tick after it at most.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;

/// The deadlines of one cache; dropping it stops its task.
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    /// A tick is `1 << shift` nanoseconds: finding an operation's tick is a shift, not a
    /// division (a 128-bit one cost more than the rest of the bookkeeping together).
    shift: u32,
    deadline_nanos: u64,
    epoch: quanta::Instant,
    /// One per tick, in a ring (a power of two) longer than a deadline: a tick's slot holds
    /// only operations due then.
    slots: Box<[Notify]>,
    started: AtomicBool,
    stopped: AtomicBool,
}

impl Deadlines {
    pub(crate) fn new(deadline: Duration) -> Self {
        let deadline_nanos = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        // The largest power of two of nanoseconds within a sixteenth of the deadline, and no
        // less than about 4 ms.
        let target = (deadline_nanos / 16).max(4_000_000);
        let shift = 63 - target.leading_zeros();
        let ticks_per_deadline = (deadline_nanos >> shift).saturating_add(3);
        let ring = ticks_per_deadline.next_power_of_two().min(1 << 16);
        Self {
            shared: Arc::new(Shared {
                shift,
                deadline_nanos,
                epoch: quanta::Instant::now(),
                slots: (0..ring).map(|_| Notify::new()).collect(),
                started: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// Runs `op` until it finishes (`Some`) or its deadline has passed (`None`, and `op` is
    /// dropped).
    pub(crate) async fn run<T>(&self, op: impl Future<Output = T>) -> Option<T> {
        let shared = &self.shared;
        self.start_ticking();
        // The first tick that starts at or after the deadline.
        let due = shared.tick_up(shared.elapsed().saturating_add(shared.deadline_nanos));
        let slot = shared.slot(due);
        let mut op = pin!(op);
        // Created before the first poll: a wakeup of this tick's waiters from then on counts
        // even if it comes before the future is polled.
        let mut woken = pin!(slot.notified());
        poll_fn(|cx| {
            if let Poll::Ready(out) = op.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while woken.as_mut().poll(cx).is_ready() {
                if shared.now_tick() >= due {
                    return Poll::Ready(None);
                }
                woken.set(slot.notified());
            }
            Poll::Pending
        })
        .await
    }

    /// Starts the ticking task on first use (a cache may be built outside a runtime's task).
    fn start_ticking(&self) {
        if self.shared.started.load(Ordering::Acquire)
            || self.shared.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared.started.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(tick(Arc::downgrade(&self.shared)));
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
    }
}

impl Shared {
    /// Nanoseconds since `epoch`.
    fn elapsed(&self) -> u64 {
        let nanos = quanta::Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The first tick starting at or after `nanos`.
    fn tick_up(&self, nanos: u64) -> u64 {
        let mask = (1u64 << self.shift) - 1;
        nanos.saturating_add(mask) >> self.shift
    }

    fn now_tick(&self) -> u64 {
        self.elapsed() >> self.shift
    }

    fn until_next_tick(&self) -> Duration {
        let elapsed = self.elapsed();
        let next_start = ((elapsed >> self.shift) + 1) << self.shift;
        Duration::from_nanos(next_start.saturating_sub(elapsed))
    }

    fn slot(&self, tick: u64) -> &Notify {
        // The ring's length is a power of two.
        let i = usize::try_from(tick & (self.slots.len() as u64 - 1)).unwrap_or(0);
        &self.slots[i % self.slots.len()]
    }
}

/// Wakes each tick's waiters once the tick has passed; stops with the cache.
async fn tick(shared: Weak<Shared>) {
    let mut fired = 0;
    loop {
        let Some(deadlines) = shared.upgrade() else {
            return;
        };
        if deadlines.stopped.load(Ordering::Acquire) {
            deadlines.slots.iter().for_each(Notify::notify_waiters);
            return;
        }
        let now = deadlines.now_tick();
        // Ticks missed while this task was not scheduled are fired too (at most a ring's).
        let first = fired.max(now.saturating_sub(deadlines.slots.len() as u64 - 1));
        for t in first..=now {
            deadlines.slot(t).notify_waiters();
        }
        fired = now + 1;
        let wait = deadlines.until_next_tick();
        drop(deadlines);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_in_time_answers_and_a_late_one_is_cut_within_a_tick() {
        let deadlines = Deadlines::new(Duration::from_millis(80));
        assert_eq!(deadlines.run(async { 7 }).await, Some(7));
        let quick = deadlines
            .run(tokio::time::sleep(Duration::from_millis(5)))
            .await;
        assert_eq!(quick, Some(()));
        let start = std::time::Instant::now();
        let late = deadlines
            .run(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(late, None);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(80), "{took:?}");
    }

    #[tokio::test]
    async fn many_concurrent_operations_each_get_their_own_deadline() {
        let deadlines = Arc::new(Deadlines::new(Duration::from_millis(50)));
        let tasks: Vec<_> = (0..100u64)
            .map(|i| {
                let deadlines = Arc::clone(&deadlines);
                tokio::spawn(async move {
                    let wait = Duration::from_millis(if i % 2 == 0 { 1 } else { 10_000 });
                    deadlines.run(tokio::time::sleep(wait)).await.is_some()
                })
            })
            .collect();
        let mut answered = 0;
        for task in tasks {
            answered += usize::from(task.await.unwrap_or(false));
        }
        assert_eq!(answered, 50);
    }
}
