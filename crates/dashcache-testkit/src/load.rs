//! Side-by-side throughput and latency of several implementations of one operation, in one run.
//!
//! The sides run in turns (ABCABC…, the order rotating each round) over many short rounds, so a
//! slow patch of a small shared machine hits every side alike instead of skewing whichever ran
//! during it; ratios are medians of per-round ratios. Used by the crate's benches and by
//! `dashcache bench`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One operation's future.
pub type OpFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An operation, given a sequence number (to pick keys).
pub type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

/// How to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds per side.
    pub rounds: usize,
    /// Length of one side's turn.
    pub round: Duration,
    /// Concurrent tasks issuing the operation.
    pub concurrency: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            rounds: 15,
            round: Duration::from_millis(200),
            concurrency: 1,
        }
    }
}

/// One side's turn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Turn {
    /// Operations per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
}

/// Runs every side `plan.rounds` times in rotating order; each round's turns. `after_turn` is
/// called after each turn (for progress bars).
pub async fn measure<const N: usize>(
    sides: &[Op; N],
    plan: Plan,
    after_turn: &mut dyn FnMut(),
) -> Vec<[Turn; N]> {
    // Warm-up: connections, scripts, allocator.
    for side in sides {
        turn(side, plan.concurrency, plan.round / 2).await;
    }
    let mut rounds = Vec::with_capacity(plan.rounds);
    for round in 0..plan.rounds {
        let mut turns = [Turn::default(); N];
        for k in 0..N {
            let which = (round + k) % N;
            turns[which] = turn(&sides[which], plan.concurrency, plan.round).await;
            after_turn();
        }
        rounds.push(turns);
    }
    rounds
}

/// Each round's operations per second of every side, at `concurrency` with the default plan.
pub async fn rates<const N: usize>(sides: &[Op; N], concurrency: usize) -> Vec<[f64; N]> {
    let plan = Plan {
        concurrency,
        ..Plan::default()
    };
    measure(sides, plan, &mut || {})
        .await
        .iter()
        .map(|round| round.map(|turn| turn.rate))
        .collect()
}

/// Runs `op` from `concurrency` tasks for `period`.
pub async fn turn(op: &Op, concurrency: usize, period: Duration) -> Turn {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + period;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (op, done) = (Arc::clone(op), Arc::clone(&done));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = t * 7919;
                while Instant::now() < end {
                    let began = Instant::now();
                    op(i).await;
                    latencies.push(began.elapsed());
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    latencies.sort_unstable();
    Turn {
        rate: done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

/// The `q` quantile of sorted `values` (zero when empty).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median of `xs` (zero when empty).
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median rate of side `i`.
pub fn rate<const N: usize>(rounds: &[[Turn; N]], i: usize) -> f64 {
    median(rounds.iter().map(|r| r[i].rate).collect())
}

/// Median of per-round ratios of side `a`'s rate to side `b`'s.
pub fn ratio<const N: usize>(rounds: &[[Turn; N]], a: usize, b: usize) -> f64 {
    median(rounds.iter().map(|r| r[a].rate / r[b].rate).collect())
}

/// Median p50 and p99 of side `i`.
pub fn latency<const N: usize>(rounds: &[[Turn; N]], i: usize) -> (Duration, Duration) {
    let pick = |f: fn(&Turn) -> Duration| {
        let mut v: Vec<Duration> = rounds.iter().map(|r| f(&r[i])).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    (pick(|t| t.p50), pick(|t| t.p99))
}

/// The `main` of a hand-rolled bench target: runs `run` on a runtime with `workers` worker
/// threads (0: the current thread only), unless the target was started by `cargo test
/// --benches` or `--list` (then there is nothing to measure).
///
/// # Panics
/// When the runtime cannot be built (a benchmark has nothing to report then).
#[cfg(feature = "harness")]
#[allow(clippy::expect_used)]
pub fn bench_main<F: Future<Output = ()>>(workers: usize, run: impl FnOnce() -> F) {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .expect("build the bench runtime");
    rt.block_on(run());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[tokio::test]
    async fn measures_every_side_every_round() {
        let fast: Op = Arc::new(|_| Box::pin(async {}));
        let slow: Op =
            Arc::new(|_| Box::pin(async { tokio::time::sleep(Duration::from_millis(2)).await }));
        let mut turns = 0;
        let plan = Plan {
            rounds: 3,
            round: Duration::from_millis(30),
            concurrency: 2,
        };
        let rounds = measure(&[fast, slow], plan, &mut || turns += 1).await;
        assert_eq!(rounds.len(), 3);
        assert_eq!(turns, 6);
        assert!(ratio(&rounds, 0, 1) > 5.0, "{}", ratio(&rounds, 0, 1));
        assert!(latency(&rounds, 1).0 >= Duration::from_millis(2));
    }
}
