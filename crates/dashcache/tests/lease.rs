//! Single-flight across processes and refresh-ahead, on the embedded cache, one Redis and a
//! Redis Cluster. "Instances" are separate `CacheAside`s (separate in-process flight tables)
//! over separate connections to the same servers, as separate processes would be.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashcache::aside::{CacheAside, LoaderTimeout, Outcome};
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, Keys, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::{Backend, RedisServer, on_every_backend};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadFailed;

impl From<LoaderTimeout> for LoadFailed {
    fn from(_: LoaderTimeout) -> Self {
        LoadFailed
    }
}

fn keys() -> Keys {
    Keys::new("t", ["user"]).unwrap()
}

fn leased(cache: Arc<dyn Cache>, metrics: &CacheMetrics, lease: Duration) -> CacheAside {
    CacheAside::builder(cache)
        .jitter(0.0)
        .leases(lease, lease)
        .metrics(metrics.clone())
        .build()
}

/// Four instances, ten callers each, miss one key together, 25 times (1000 lookups), the key
/// invalidated between rounds: the loader runs once per generation. Without leases (the
/// control) each instance loads.
async fn instances_missing_together_load_once_per_generation(backend: &Backend) {
    for with_leases in [true, false] {
        let key = keys().key(["user", "hot"]).unwrap();
        let metrics = CacheMetrics::new(&keys());
        let mut instances = Vec::new();
        for _ in 0..4 {
            let cache = backend.other_connection().await;
            instances.push(if with_leases {
                leased(cache, &metrics, Duration::from_secs(10))
            } else {
                CacheAside::builder(cache).jitter(0.0).build()
            });
        }
        let loads = Arc::new(AtomicUsize::new(0));
        let rounds = 25;
        for round in 0..rounds {
            let mut lookups = Vec::new();
            for aside in &instances {
                for _ in 0..10 {
                    let (aside, key, loads) = (aside.clone(), key.clone(), Arc::clone(&loads));
                    lookups.push(tokio::spawn(async move {
                        aside
                            .get_or_load(&key, Ttl::secs(300), move || async move {
                                loads.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                Ok::<_, LoadFailed>(format!("v{round}"))
                            })
                            .await
                    }));
                }
            }
            for lookup in lookups {
                assert_eq!(lookup.await.unwrap(), Ok(format!("v{round}")));
            }
            instances[round % 4].invalidate(&key).await.unwrap();
        }
        let loads = loads.load(Ordering::SeqCst);
        let stats = metrics.snapshot("user");
        if with_leases {
            assert_eq!(loads, rounds, "one load per generation: {stats:?}");
            assert_eq!(stats.leases_won as usize, rounds);
            assert_eq!(stats.waits_timed_out, 0);
            assert!(stats.waits_satisfied > 0, "{stats:?}");
        } else {
            assert!(loads > rounds, "the control never stampeded: {loads}");
        }
    }
}

/// A lease holder that dies mid-load (its task is dropped: nothing gives the lease back)
/// delays the others only until its lease expires; then one of them loads.
async fn a_dead_holder_delays_the_others_only_for_its_lease(backend: &Backend) {
    let key = keys().key(["user", "1"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let lease = Duration::from_millis(500);
    let a = leased(backend.cache(), &metrics, lease);
    let b = CacheAside::builder(backend.other_connection().await)
        .jitter(0.0)
        .leases(lease, Duration::from_secs(30))
        .metrics(metrics.clone())
        .build();
    let (started_tx, started_rx) = oneshot::channel();
    let holder = {
        let key = key.clone();
        tokio::spawn(async move {
            a.get_or_load(&key, Ttl::secs(300), move || async move {
                let _ = started_tx.send(());
                std::future::pending::<Result<String, LoadFailed>>().await
            })
            .await
        })
    };
    started_rx.await.unwrap();
    holder.abort();
    let started = Instant::now();
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move {
            b.load(&key, Ttl::secs(300), || async {
                Ok::<_, LoadFailed>("b".to_owned())
            })
            .await
        })
    };
    backend.wait(lease + Duration::from_millis(50)).await;
    let lookup = waiter.await.unwrap();
    assert_eq!(lookup.result, Ok("b".to_owned()));
    assert_eq!(lookup.outcome, Outcome::Miss);
    // The bound: the lease, plus a poll interval and a loaded machine's scheduling.
    assert!(started.elapsed() < lease + Duration::from_secs(2));
    let stats = metrics.snapshot("user");
    assert_eq!((stats.leases_won, stats.waits_timed_out), (2, 0));
}

/// A holder whose load fails gives the lease back: the waiter takes it and loads at once.
async fn a_failed_load_hands_the_lease_on(backend: &Backend) {
    let key = keys().key(["user", "2"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let a = leased(backend.cache(), &metrics, Duration::from_secs(30));
    let b = leased(
        backend.other_connection().await,
        &metrics,
        Duration::from_secs(30),
    );
    let (started_tx, started_rx) = oneshot::channel();
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    let holder = {
        let key = key.clone();
        tokio::spawn(async move {
            a.get_or_load(&key, Ttl::secs(300), move || async move {
                let _ = started_tx.send(());
                let _ = fail_rx.await;
                Err::<String, _>(LoadFailed)
            })
            .await
        })
    };
    started_rx.await.unwrap();
    let b_loads = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (key, b_loads) = (key.clone(), Arc::clone(&b_loads));
        tokio::spawn(async move {
            b.get_or_load(&key, Ttl::secs(300), move || async move {
                b_loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, LoadFailed>("b".to_owned())
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b_loads.load(Ordering::SeqCst), 0, "B did not wait");
    fail_tx.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Err(LoadFailed));
    assert_eq!(waiter.await.unwrap(), Ok("b".to_owned()));
    assert_eq!(b_loads.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.snapshot("user").leases_won, 2);
}

/// A waiter stops waiting at its bound and loads by itself; the slow holder's later fill is
/// refused (one commit per generation).
async fn a_waiter_loads_itself_at_its_bound(backend: &Backend) {
    let key = keys().key(["user", "3"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let a = leased(backend.cache(), &metrics, Duration::from_secs(30));
    let b = CacheAside::builder(backend.other_connection().await)
        .jitter(0.0)
        .leases(Duration::from_secs(30), Duration::from_millis(200))
        .metrics(metrics.clone())
        .build();
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let holder = {
        let key = key.clone();
        tokio::spawn(async move {
            a.get_or_load(&key, Ttl::secs(300), move || async move {
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Ok::<_, LoadFailed>("a".to_owned())
            })
            .await
        })
    };
    started_rx.await.unwrap();
    let lookup = b
        .load(&key, Ttl::secs(300), || async {
            Ok::<_, LoadFailed>("b".to_owned())
        })
        .await;
    assert_eq!(lookup.result, Ok("b".to_owned()));
    go_tx.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Ok("a".to_owned()));
    let stats = metrics.snapshot("user");
    assert_eq!(stats.waits_timed_out, 1);
    assert_eq!((stats.fills_committed, stats.fills_rejected), (1, 1));
}

on_every_backend!(|backend| &backend;
    instances_missing_together_load_once_per_generation,
    a_dead_holder_delays_the_others_only_for_its_lease,
    a_failed_load_hands_the_lease_on,
    a_waiter_loads_itself_at_its_bound,
);

/// A frozen Redis: every instance falls back to its own load within the deadline, leases or
/// not (no one waits on a lease it cannot read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_sends_everyone_to_their_own_load() {
    let server = RedisServer::start();
    let deadline = Duration::from_millis(250);
    let metrics = CacheMetrics::new(&keys());
    let mut instances = Vec::new();
    for _ in 0..3 {
        let cache = RedisCache::builder(server.url())
            .timeout(deadline)
            .connect()
            .await
            .unwrap();
        instances.push(leased(Arc::new(cache), &metrics, Duration::from_secs(10)));
    }
    let key = keys().key(["user", "cold"]).unwrap();
    server.freeze();
    let started = Instant::now();
    let mut lookups = Vec::new();
    for aside in &instances {
        let (aside, key) = (aside.clone(), key.clone());
        lookups.push(tokio::spawn(async move {
            aside
                .load(&key, Ttl::secs(300), || async {
                    Ok::<_, LoadFailed>("db".to_owned())
                })
                .await
        }));
    }
    for lookup in lookups {
        let lookup = lookup.await.unwrap();
        assert_eq!(lookup.result, Ok("db".to_owned()));
        assert_eq!(lookup.outcome, Outcome::Bypassed);
    }
    // One deadline for the read, and nothing waited on a lease (its wait is 10 s): a few
    // seconds of slack for a loaded machine still tell the two apart.
    assert!(
        started.elapsed() < deadline + Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.thaw();
    assert_eq!(metrics.snapshot("user").leases_won, 0);
}

/// Refresh-ahead under steady load across several TTLs, two instances sharing leases: no
/// lookup after the first misses, and the loader runs about once per refresh period, not once
/// per instance.
async fn refresh_ahead_keeps_a_hot_key_warm(caches: [Arc<dyn Cache>; 2]) {
    let key = keys().key(["user", "warm"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let ttl = Duration::from_millis(1000);
    let loads = Arc::new(AtomicUsize::new(0));
    let instances: Vec<CacheAside> = caches
        .into_iter()
        .map(|cache| {
            CacheAside::builder(cache)
                .jitter(0.0)
                .leases(Duration::from_secs(5), Duration::from_secs(5))
                .refresh_ahead(0.5)
                .metrics(metrics.clone())
                .build()
        })
        .collect();
    let run_for = Duration::from_millis(3200);
    let started = Instant::now();
    let mut readers = Vec::new();
    for reader in 0..4 {
        let (aside, key, loads) = (
            instances[reader % 2].clone(),
            key.clone(),
            Arc::clone(&loads),
        );
        readers.push(tokio::spawn(async move {
            let mut misses = 0;
            while started.elapsed() < run_for {
                let loads = Arc::clone(&loads);
                let lookup = aside
                    .load(&key, Ttl::from(ttl), move || async move {
                        let n = loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, LoadFailed>(n)
                    })
                    .await;
                assert!(lookup.result.is_ok());
                if lookup.outcome != Outcome::Hit {
                    misses += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            misses
        }));
    }
    let mut misses = 0;
    for reader in readers {
        misses += reader.await.unwrap();
    }
    let loads = loads.load(Ordering::SeqCst);
    let stats = metrics.snapshot("user");
    eprintln!("refresh-ahead: {loads} loads, {misses} misses, {stats:?}");
    // The first lookups miss together (one load, the others wait or join it).
    assert!(misses <= 4, "{misses} misses: {stats:?}");
    // A refresh starts no earlier than half the life of the value the last load committed,
    // so starts are at least 500 ms apart: the first load, then at most one per period and
    // one more that may start in the last period. Without leases each instance would refresh
    // (about twice this).
    let periods = (run_for.as_millis() / (ttl.as_millis() / 2)) as usize;
    assert!(loads <= periods + 2, "{loads} loads: {stats:?}");
    assert!(stats.refreshed_ahead >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_on_memory() {
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    refresh_ahead_keeps_a_hot_key_warm([Arc::clone(&cache), cache]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_on_redis() {
    let backend = Backend::redis().await;
    let other = backend.other_connection().await;
    refresh_ahead_keeps_a_hot_key_warm([backend.cache(), other]).await;
}

/// Bulk refresh-ahead: keys found near the end of their TTL are answered from the cache and
/// reloaded together in one background loader call; across two instances with leases, once.
async fn bulk_refresh_ahead_reloads_near_keys_in_one_call(caches: [Arc<dyn Cache>; 2]) {
    let keys = keys();
    let all: Vec<String> = (0..3)
        .map(|i| keys.key(["user", &format!("bulk{i}")]).unwrap())
        .collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let calls = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let instances: Vec<CacheAside> = caches
        .into_iter()
        .map(|cache| {
            CacheAside::builder(cache)
                .jitter(0.0)
                .leases(Duration::from_secs(5), Duration::from_secs(5))
                .refresh_ahead(0.5)
                .build()
        })
        .collect();
    let lookup = |aside: CacheAside, round: usize| {
        let calls = Arc::clone(&calls);
        let refs = refs.clone();
        async move {
            aside
                .get_many_or_load_refreshing(&refs, Ttl::millis(1000), move |missing| {
                    let calls = Arc::clone(&calls);
                    async move {
                        calls.lock().unwrap().push(missing.clone());
                        Ok::<_, LoadFailed>(missing.into_iter().map(|k| (k, round)).collect())
                    }
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(lookup(instances[0].clone(), 1).await, vec![Some(1); 3]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Near expiry: both instances answer from the cache; one background call reloads all three.
    let (a, b) = tokio::join!(
        lookup(instances[0].clone(), 2),
        lookup(instances[1].clone(), 2)
    );
    // A answers from the cache; B too, or with refreshed values where A's background refresh
    // was quicker (its fills commit key by key, so B may see some of each).
    assert_eq!(a, vec![Some(1); 3]);
    assert!(b.iter().all(|v| *v == Some(1) || *v == Some(2)), "{b:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        // Each instance makes at most one loader call for its near keys, and the leases give
        // every key to exactly one of them: usually one instance takes all three, but when
        // both claim at once the keys may be split between their two calls.
        let calls = calls.lock().unwrap();
        assert!((2..=3).contains(&calls.len()), "{calls:?}");
        let mut refreshed: Vec<String> = calls[1..].concat();
        refreshed.sort();
        assert_eq!(refreshed, all, "{calls:?}");
    }
    // Past the first value's TTL: still served from the cache, refreshed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lookup(instances[1].clone(), 3).await, vec![Some(2); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_refresh_ahead_on_memory() {
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    bulk_refresh_ahead_reloads_near_keys_in_one_call([Arc::clone(&cache), cache]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_refresh_ahead_on_redis() {
    let backend = Backend::redis().await;
    let other = backend.other_connection().await;
    bulk_refresh_ahead_reloads_near_keys_in_one_call([backend.cache(), other]).await;
}
