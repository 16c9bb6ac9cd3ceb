//! Cache-aside on a private `redis-server`, in one run:
//!
//! - **the hit path** of `get_or_load` unfenced (as before fenced fills), fenced (the
//!   default), fenced with cross-process leases, and fenced with two tags: ops/s and the
//!   ratio to unfenced;
//! - **a hot-key stampede across 4 instances** (separate connections and flight tables, as
//!   4 processes would be): 4 × 16 callers miss one key together, 50 times (the key
//!   invalidated between rounds), with a 20 ms loader; loader calls per round and the
//!   callers' p50 / p99, without leases and with them.
//!
//! Run: `cargo bench -p dashcache --bench aside`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::{Cache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;
use dashcache_testkit::load::{self, Op, OpFuture, Plan};

#[derive(Debug, Clone)]
struct Never;

impl From<LoaderTimeout> for Never {
    fn from(_: LoaderTimeout) -> Self {
        Never
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Unfenced,
    Fenced,
    Leased,
    /// Fenced, with two tags read in the same round trip.
    Tagged,
}

fn aside(cache: Arc<dyn Cache>, mode: Mode) -> CacheAside {
    let builder = CacheAside::builder(cache).jitter(0.0);
    match mode {
        Mode::Unfenced => builder.unfenced(),
        Mode::Fenced | Mode::Tagged => builder,
        Mode::Leased => builder.leases(Duration::from_secs(5), Duration::from_secs(5)),
    }
    .build()
}

async fn connect(server: &RedisServer) -> Arc<dyn Cache> {
    Arc::new(
        RedisCache::builder(server.url())
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap(),
    )
}

fn hit_op(aside: CacheAside, mode: Mode) -> Op {
    Arc::new(move |i| -> OpFuture {
        let aside = aside.clone();
        Box::pin(async move {
            let key = format!("bench:user:{}", i % 1000);
            let load = || async { Ok("x".repeat(256)) };
            let v: Result<String, Never> = match mode {
                Mode::Tagged => {
                    let user = format!("user:{}", i % 1000);
                    aside
                        .get_or_load_tagged(&key, &[&user, "users"], Ttl::secs(3600), load)
                        .await
                }
                _ => aside.get_or_load(&key, Ttl::secs(3600), load).await,
            };
            assert!(v.is_ok());
        })
    })
}

async fn hit_paths(server: &RedisServer) {
    let modes = [Mode::Unfenced, Mode::Fenced, Mode::Leased, Mode::Tagged];
    let mut sides = Vec::new();
    for mode in modes {
        sides.push(hit_op(aside(connect(server).await, mode), mode));
    }
    let sides: [Op; 4] = [
        sides[0].clone(),
        sides[1].clone(),
        sides[2].clone(),
        sides[3].clone(),
    ];
    println!("| hit path | concurrency | ops/s | p99 | ÷ unfenced |");
    println!("|---|---|---|---|---|");
    for concurrency in [1, 64] {
        let plan = Plan {
            concurrency,
            ..Plan::default()
        };
        let rounds = load::measure(&sides, plan, &mut || {}).await;
        for (i, mode) in modes.iter().enumerate() {
            let (_, p99) = load::latency(&rounds, i);
            println!(
                "| {mode:?} | {concurrency} | {:.0} | {p99:?} | {:.2} |",
                load::rate(&rounds, i),
                load::ratio(&rounds, i, 0)
            );
        }
    }
}

async fn stampede(server: &RedisServer, mode: Mode) {
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(aside(connect(server).await, mode));
    }
    let key = format!("bench:user:stampede-{mode:?}");
    let loads = Arc::new(AtomicUsize::new(0));
    let mut latencies = Vec::new();
    let rounds = 50;
    for _ in 0..rounds {
        let mut callers = Vec::new();
        for aside in &instances {
            for _ in 0..16 {
                let (aside, key, loads) = (aside.clone(), key.clone(), Arc::clone(&loads));
                callers.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let v: Result<String, Never> = aside
                        .get_or_load(&key, Ttl::secs(300), move || async move {
                            loads.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok("row".to_owned())
                        })
                        .await;
                    assert!(v.is_ok());
                    started.elapsed()
                }));
            }
        }
        for caller in callers {
            latencies.push(caller.await.unwrap());
        }
        instances[0].invalidate(&key).await.unwrap();
    }
    latencies.sort();
    println!(
        "| {mode:?} | {:.2} | {:?} | {:?} |",
        loads.load(Ordering::Relaxed) as f64 / f64::from(rounds),
        load::percentile(&latencies, 0.5),
        load::percentile(&latencies, 0.99),
    );
}

async fn run() {
    let server = RedisServer::start();
    hit_paths(&server).await;
    println!();
    println!(
        "| stampede (4 instances × 16 callers, 20 ms loader) | loader calls per round | p50 | p99 |"
    );
    println!("|---|---|---|---|");
    for mode in [Mode::Fenced, Mode::Leased] {
        stampede(&server, mode).await;
    }
}

fn main() {
    load::bench_main(1, run);
}
