//! Interleaved throughput comparison shared by the benches: the sides run in turns (ABCABC…,
//! the order rotating each round) over many short rounds, so a slow patch of a small shared
//! machine hits every side alike; ratios are medians of per-round ratios.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Rounds per comparison.
pub(crate) const ROUNDS: usize = 15;
/// Length of one side's turn.
pub(crate) const ROUND: Duration = Duration::from_millis(200);

/// One operation's future.
pub(crate) type OpFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// An operation, given a sequence number.
pub(crate) type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

/// Operations per second of each side in each round.
pub(crate) async fn measure<const N: usize>(sides: &[Op; N], concurrency: usize) -> Vec<[f64; N]> {
    // Warm-up: connections, scripts, allocator.
    for side in sides {
        rate(side, concurrency, ROUND / 2).await;
    }
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut rates = [0.0; N];
        for k in 0..N {
            let which = (round + k) % N;
            rates[which] = rate(&sides[which], concurrency, ROUND).await;
        }
        rounds.push(rates);
    }
    rounds
}

/// Runs `op` from `concurrency` tasks for `period`; operations completed per second.
pub(crate) async fn rate(op: &Op, concurrency: usize, period: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + period;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (op, done) = (Arc::clone(op), Arc::clone(&done));
            tokio::spawn(async move {
                let mut i = t * 7;
                while Instant::now() < end {
                    op(i).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
