//! Cache-aside against real backends: single-flight, fail-open on a killed and a frozen Redis,
//! serve-stale, negative caching, loader timeouts, corrupt values, jitter, the bulk form.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashcache::aside::{CacheAside, LoaderTimeout, Outcome};
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, Instrumented, KeyTtl, Keys, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;

/// A loader error that is `Clone` (shared with single-flight waiters) and can say "timed out".
#[derive(Debug, Clone, PartialEq, Eq)]
enum LoadError {
    Database(String),
    TimedOut,
}

impl From<LoaderTimeout> for LoadError {
    fn from(_: LoaderTimeout) -> Self {
        LoadError::TimedOut
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn keys() -> Keys {
    Keys::new("t", ["user", "account"]).unwrap()
}

async fn redis(server: &RedisServer, timeout: Duration) -> RedisCache {
    RedisCache::builder(server.url())
        .timeout(timeout)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
}

/// Counts loader calls and answers after `delay`.
fn counting_loader(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    id: u64,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<User, LoadError>> + Send>>
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(User {
                id,
                name: format!("user {id}"),
            })
        })
    }
}

async fn stampede(cache: Arc<dyn Cache>) {
    let aside = CacheAside::builder(cache).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (aside, calls) = (aside.clone(), Arc::clone(&calls));
            tokio::spawn(async move {
                aside
                    .get_or_load(
                        "t:user:cold",
                        Ttl::secs(60),
                        counting_loader(&calls, Duration::from_millis(50), 7),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().id, 7);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the loader ran exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_misses_run_the_loader_once_in_memory() {
    stampede(Arc::new(MemoryCache::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_misses_run_the_loader_once_on_redis() {
    let server = RedisServer::start();
    stampede(Arc::new(redis(&server, Duration::from_secs(5)).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_see_the_leaders_error() {
    let aside = CacheAside::builder(Arc::new(MemoryCache::new())).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (aside, calls) = (aside.clone(), Arc::clone(&calls));
            tokio::spawn(async move {
                aside
                    .get_or_load("t:user:broken", Ttl::secs(60), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<User, _>(LoadError::Database("down".into()))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(LoadError::Database("down".into())));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing was cached: the next lookup loads again.
    let ok = aside
        .get_or_load("t:user:broken", Ttl::secs(60), || async {
            Ok::<_, LoadError>(1u8)
        })
        .await;
    assert_eq!(ok, Ok(1));
}

#[tokio::test]
async fn hits_and_misses_are_reported() {
    let aside = CacheAside::builder(Arc::new(MemoryCache::new())).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = aside
        .load(
            "t:user:1",
            Ttl::secs(60),
            counting_loader(&calls, Duration::ZERO, 1),
        )
        .await;
    assert_eq!(first.outcome, Outcome::Miss);
    let second = aside
        .load(
            "t:user:1",
            Ttl::secs(60),
            counting_loader(&calls, Duration::ZERO, 1),
        )
        .await;
    assert_eq!(second.outcome, Outcome::Hit);
    assert_eq!(second.result.unwrap().id, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Runs lookups against a broken cache and checks each is answered by the loader, in time,
/// reported as bypassed and counted as an error.
async fn lookups_survive(
    cache: Arc<dyn Cache>,
    metrics: &CacheMetrics,
    rounds: usize,
    deadline: Duration,
) {
    let aside = CacheAside::builder(cache).metrics(metrics.clone()).build();
    let loader_time = Duration::from_millis(20);
    let errors_before = metrics.snapshot("user").errors;
    for i in 0..rounds {
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let lookup = aside
            .load(
                "t:user:42",
                Ttl::secs(60),
                counting_loader(&calls, loader_time, 42),
            )
            .await;
        let took = start.elapsed();
        assert_eq!(lookup.result.unwrap().id, 42, "round {i}");
        assert_eq!(lookup.outcome, Outcome::Bypassed, "round {i}");
        assert!(
            // A second of slack for a loaded machine: the bound catches a missing deadline.
            took < deadline + loader_time + Duration::from_secs(1),
            "round {i} took {took:?}"
        );
    }
    let stats = metrics.snapshot("user");
    assert_eq!(
        stats.errors - errors_before,
        rounds as u64,
        "every failed lookup is counted"
    );
    assert!(stats.bypassed >= rounds as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_never_reaches_the_caller_and_hits_resume_after_restart() {
    let mut server = RedisServer::start();
    let deadline = Duration::from_millis(250);
    let cache = Arc::new(redis(&server, deadline).await);
    let metrics = CacheMetrics::new(&keys());
    let aside = CacheAside::builder(cache.clone())
        .metrics(metrics.clone())
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    aside
        .get_or_load(
            "t:user:42",
            Ttl::secs(60),
            counting_loader(&calls, Duration::ZERO, 42),
        )
        .await
        .unwrap();

    server.kill();
    lookups_survive(cache.clone(), &metrics, 20, deadline).await;

    server.restart();
    let start = Instant::now();
    loop {
        // The restarted server is empty: the first good lookup is a miss that refills it.
        let lookup = aside
            .load(
                "t:user:42",
                Ttl::secs(60),
                counting_loader(&calls, Duration::ZERO, 42),
            )
            .await;
        if lookup.outcome == Outcome::Miss {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the cache never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hit = aside
        .load(
            "t:user:42",
            Ttl::secs(60),
            counting_loader(&calls, Duration::ZERO, 42),
        )
        .await;
    assert_eq!(
        hit.outcome,
        Outcome::Hit,
        "hits resume with the same client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_deadline_then_fails_fast() {
    let server = RedisServer::start();
    let deadline = Duration::from_millis(250);
    let cache = Arc::new(redis(&server, deadline).await);
    let metrics = CacheMetrics::new(&keys());
    server.freeze();
    lookups_survive(cache.clone(), &metrics, 12, deadline).await;
    server.thaw();
    let aside = CacheAside::builder(cache).build();
    let start = Instant::now();
    loop {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = aside
            .load(
                "t:user:9",
                Ttl::secs(60),
                counting_loader(&calls, Duration::ZERO, 9),
            )
            .await;
        if lookup.outcome == Outcome::Miss {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the cache never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_values_stand_in_for_failed_refreshes() {
    let server = RedisServer::start();
    let cache: Arc<dyn Cache> = Arc::new(redis(&server, Duration::from_secs(5)).await);
    let aside = CacheAside::builder(cache.clone())
        .jitter(0.0)
        .stale_for(Duration::from_secs(30))
        .loader_timeout(Duration::from_millis(100))
        .build();
    let key = "t:user:stale";
    let v1 = aside
        .get_or_load(key, Ttl::millis(200), || async { Ok::<_, LoadError>(1u32) })
        .await;
    assert_eq!(v1, Ok(1));
    // The entry outlives its TTL by the window.
    match cache.ttl(key).await.unwrap() {
        KeyTtl::Expires(d) => assert!(d > Duration::from_secs(29), "{d:?}"),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let failed = aside
        .load(key, Ttl::millis(200), || async {
            Err::<u32, _>(LoadError::Database("down".into()))
        })
        .await;
    assert_eq!((failed.result, failed.outcome), (Ok(1), Outcome::Stale));

    let timed_out = aside
        .load(key, Ttl::millis(200), || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, LoadError>(99u32)
        })
        .await;
    assert_eq!(
        (timed_out.result, timed_out.outcome),
        (Ok(1), Outcome::Stale)
    );

    let refreshed = aside
        .load(key, Ttl::secs(60), || async { Ok::<_, LoadError>(2u32) })
        .await;
    assert_eq!(
        (refreshed.result, refreshed.outcome),
        (Ok(2), Outcome::Miss)
    );
    let hit = aside
        .load(key, Ttl::secs(60), || async { Ok::<_, LoadError>(3u32) })
        .await;
    assert_eq!((hit.result, hit.outcome), (Ok(2), Outcome::Hit));
}

#[tokio::test]
async fn a_loader_timeout_without_a_stale_value_is_the_loaders_error() {
    let aside = CacheAside::builder(Arc::new(MemoryCache::new()))
        .loader_timeout(Duration::from_millis(50))
        .build();
    let result = aside
        .get_or_load("t:user:slow", Ttl::secs(60), || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, LoadError>(1u8)
        })
        .await;
    assert_eq!(result, Err(LoadError::TimedOut));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_is_replaced_and_counted() {
    let server = RedisServer::start();
    let metrics = CacheMetrics::new(&keys());
    let cache: Arc<dyn Cache> = Arc::new(redis(&server, Duration::from_secs(5)).await);
    let aside = CacheAside::builder(cache.clone())
        .metrics(metrics.clone())
        .build();
    let key = "t:user:7";
    cache
        .set(key, Bytes::from_static(b"{garbage"), Ttl::secs(60))
        .await
        .unwrap();

    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = aside
        .load(
            key,
            Ttl::secs(60),
            counting_loader(&calls, Duration::ZERO, 7),
        )
        .await;
    assert_eq!(lookup.result.unwrap().id, 7);
    assert_eq!(lookup.outcome, Outcome::Miss);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        metrics.snapshot("user").errors,
        1,
        "the Deserialize error is counted"
    );

    let again = aside
        .load(
            key,
            Ttl::secs(60),
            counting_loader(&calls, Duration::ZERO, 7),
        )
        .await;
    assert_eq!(
        again.outcome,
        Outcome::Hit,
        "the corrupt value was replaced"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_expiry_across_the_band() {
    let server = RedisServer::start();
    let cache: Arc<dyn Cache> = Arc::new(redis(&server, Duration::from_secs(5)).await);
    let aside = CacheAside::builder(cache.clone()).build();
    let keys: Vec<String> = (0..1000).map(|i| format!("t:account:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let loaded = aside
        .get_many_or_load(&refs, Ttl::secs(1000), |missing: Vec<String>| async move {
            Ok::<_, LoadError>(
                missing
                    .into_iter()
                    .map(|k| (k, 1u8))
                    .collect::<HashMap<_, _>>(),
            )
        })
        .await
        .unwrap();
    assert!(loaded.iter().all(|v| *v == Some(1)));

    let mut ttls = Vec::new();
    for key in &keys {
        match cache.ttl(key).await.unwrap() {
            KeyTtl::Expires(d) => ttls.push(d.as_secs_f64()),
            other => panic!("{key}: {other:?}"),
        }
    }
    let (min, max) = ttls
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
    assert!(min >= 895.0 && max <= 1100.0, "inside ±10 %: {min}..{max}");
    assert!(max - min > 150.0, "spread across the band: {min}..{max}");
    // Not bunched: every fifth of the band holds some keys.
    for fifth in 0..5 {
        let lo = 900.0 + 40.0 * f64::from(fifth);
        let n = ttls
            .iter()
            .filter(|t| **t >= lo - 5.0 && **t < lo + 40.0)
            .count();
        assert!(n > 50, "band {lo}..{}: {n} keys", lo + 40.0);
    }
}

#[tokio::test]
async fn not_found_is_negatively_cached() {
    // On a manual clock: the negative entry's expiry is a clock advance, not a sleep.
    let clock = dashcache::Clock::manual();
    let cache = MemoryCache::builder().clock(clock.clone()).build();
    let aside = CacheAside::builder(Arc::new(cache))
        .clock(clock.clone())
        .negative_ttl(Ttl::millis(200))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = |calls: Arc<AtomicUsize>| {
        let aside = aside.clone();
        async move {
            aside
                .load_optional("t:user:ghost", Ttl::secs(60), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<Option<User>, LoadError>(None)
                })
                .await
        }
    };
    let first = lookup(Arc::clone(&calls)).await;
    assert_eq!((first.result, first.outcome), (Ok(None), Outcome::Miss));
    let second = lookup(Arc::clone(&calls)).await;
    assert_eq!((second.result, second.outcome), (Ok(None), Outcome::Hit));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_millis(450));
    lookup(Arc::clone(&calls)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the negative entry expired"
    );

    // Without a negative TTL, "not found" is not cached at all.
    let plain = CacheAside::builder(Arc::new(MemoryCache::new())).build();
    for _ in 0..2 {
        let calls = Arc::clone(&calls);
        plain
            .get_or_load_optional("t:user:ghost", Ttl::secs(60), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<Option<User>, LoadError>(None)
            })
            .await
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_form_looks_up_once_and_loads_only_what_is_missing() {
    let server = RedisServer::start();
    let metrics = CacheMetrics::new(&keys());
    let raw = redis(&server, Duration::from_secs(5)).await;
    let cache: Arc<dyn Cache> = Arc::new(Instrumented::new(raw, metrics.clone()));
    let aside = CacheAside::builder(cache)
        .negative_ttl(Ttl::secs(30))
        .metrics_over_instrumented(metrics.clone())
        .build();
    let keys: Vec<String> = (1..=5).map(|i| format!("t:user:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let db = |ids: Vec<String>| async move {
        // Users 1–4 exist; 5 does not.
        let found: HashMap<String, User> = ids
            .into_iter()
            .filter(|k| !k.ends_with(":5"))
            .map(|k| {
                let id: u64 = k.rsplit(':').next().unwrap().parse().unwrap();
                (
                    k,
                    User {
                        id,
                        name: format!("user {id}"),
                    },
                )
            })
            .collect();
        Ok::<_, LoadError>(found)
    };
    aside
        .get_many_or_load(&refs[1..3], Ttl::secs(60), db)
        .await
        .unwrap();

    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    let ops_before = metrics.total().operations;
    let got = aside
        .get_many_or_load(&refs, Ttl::secs(60), move |missing: Vec<String>| {
            seen.lock().unwrap().push(missing.clone());
            db(missing)
        })
        .await
        .unwrap();
    let ids: Vec<Option<u64>> = got.iter().map(|u| u.as_ref().map(|u| u.id)).collect();
    assert_eq!(
        ids,
        vec![Some(1), Some(2), Some(3), Some(4), None],
        "in the order of the keys"
    );
    assert_eq!(
        *asked.lock().unwrap(),
        vec![vec![
            "t:user:1".to_owned(),
            "t:user:4".into(),
            "t:user:5".into()
        ]],
        "one loader call with only the missing keys"
    );
    // One get_many, one of the missing keys' generations (the fence), then one guarded write
    // per loaded key (the negative one included).
    assert_eq!(metrics.total().operations - ops_before, 1 + 1 + 3);

    let again: Result<Vec<Option<User>>, LoadError> = aside
        .get_many_or_load(&refs, Ttl::secs(60), |missing: Vec<String>| async move {
            panic!("nothing is missing now, not even user 5: {missing:?}")
        })
        .await;
    assert_eq!(again.unwrap().len(), 5);
}
