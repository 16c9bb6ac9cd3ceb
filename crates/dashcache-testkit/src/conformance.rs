//! The conformance suite: every contract of the [`Cache`] protocol, written once and run against
//! every backend.
//!
//! ```no_run
//! # async fn t() {
//! use std::sync::{Arc, OnceLock};
//! dashcache_testkit::conformance::run(Arc::new(dashcache::MemoryCache::new())).await;
//! # }
//! ```
//!
//! Each case works under a key namespace of its own (`conf:<run>:<case>:`), so the cases run
//! concurrently on one server and a shared server is never cleared. A failed case does not stop
//! the others: [`run`] reports every failure by name, then panics.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashcache::{
    Cache, CacheExt, Clock, Condition, ErrorKind, KeyTtl, Limits, MemoryCache, Ttl, Write,
};
use futures::future::join_all;

use crate::{RedisCluster, RedisServer};

/// What a case gets: the cache under test and its own key namespace.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The backend under test.
    pub cache: Arc<dyn Cache>,
    ns: String,
    /// The backend's manual clock, when it has one (a case of its own on a memory cache).
    clock: Option<Clock>,
}

impl Ctx {
    /// A key under this case's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.ns)
    }

    /// Lets `d` pass for the cache: a manual clock is advanced; otherwise real time passes.
    pub async fn wait(&self, d: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(d),
            None => tokio::time::sleep(d).await,
        }
    }

    /// A key under this case's namespace with the case's hash tag: on a cluster, every
    /// `tagged` key of a case is in one slot, so one atomic step may span them.
    pub fn tagged(&self, name: &str) -> String {
        format!("{{{}}}{name}", self.ns)
    }
}

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named case of the suite.
pub type Case = (&'static str, fn(Ctx) -> CaseFuture);

/// Expands `$crate::__conformance_expand!($($mode)* ; every case, by name)`: the one list of
/// the suite, behind both [`cases`] and [`conformance_tests!`](crate::conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($($mode:tt)*) => {
        $crate::__conformance_expand! { $($mode)* ;
            get_miss_is_none,
            set_then_get_round_trips_any_bytes,
            set_overwrites_value_and_ttl,
            ttl_expiry_is_real,
            ttl_reports_missing_persistent_and_remaining,
            set_if_absent_writes_once,
            take_returns_the_value_once,
            take_of_a_set_is_wrong_type_and_keeps_it,
            delete_reports_removal,
            delete_many_counts_removed_keys,
            exists_sees_every_type,
            get_many_keeps_order_misses_and_duplicates,
            empty_batches_are_no_ops,
            set_many_writes_all_with_the_ttl,
            set_many_is_all_or_nothing_on_bad_input,
            increment_counts_from_zero_both_ways,
            increment_sets_ttl_only_when_missing,
            increment_of_a_non_integer_is_wrong_type_and_changes_nothing,
            increment_overflow_is_invalid_argument_and_changes_nothing,
            expire_sets_and_removes_ttls,
            delete_pattern_deletes_exactly_the_matches,
            delete_pattern_honours_glob_syntax,
            delete_pattern_sweeps_many_batches,
            sets_add_remove_and_list_members,
            set_add_refreshes_the_ttl,
            sets_and_strings_do_not_mix,
            bad_keys_are_invalid_key_everywhere,
            zero_ttls_are_invalid_arguments_everywhere,
            values_over_the_limit_are_too_large,
            empty_pattern_is_invalid_argument,
            json_round_trips_and_corrupt_json_names_the_key,
            take_is_exactly_once_under_contention,
            increment_is_atomic_under_contention,
            set_if_absent_has_one_winner_under_contention,
            set_add_is_atomic_under_contention,
            write_if_applies_every_write_when_conditions_hold,
            write_if_refuses_and_writes_nothing_when_a_condition_fails,
            write_if_compares_integers_exactly,
            write_if_int_equals_matches_only_that_integer,
            write_if_replace_keeps_the_ttl_and_skips_missing_keys,
            write_if_set_add_extends_but_never_shortens,
            write_if_wrong_type_changes_nothing,
            write_if_applies_writes_in_order,
            write_if_has_one_winner_under_contention,
            multi_key_writes_are_never_seen_half_done,
            ping_answers,
        }
    };
}

/// What the list expands to: the table of [`cases`], or one test per case for a backend.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    (table ; $($name:ident),* $(,)?) => {
        vec![$((stringify!($name), |ctx| Box::pin($name(ctx)) as CaseFuture)),*]
    };
    (tests $backend:ident ; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::conformance::run_case($crate::conformance::Target::$backend, stringify!($name)).await;
            }
        )*
    };
}

/// Every case of the suite, by name.
pub fn cases() -> Vec<Case> {
    __conformance_cases!(table)
}

/// One test per contract per backend:
/// `conformance::{memory,redis,cluster,hybrid,hybrid_cluster}::<contract>`, so
/// `cargo test conformance::memory::take_` runs one contract on one backend. The servers are
/// shared by the tests of one binary (each case has a key namespace of its own) and stopped
/// when it exits.
///
/// ```ignore
/// dashcache_testkit::conformance_tests!();
/// ```
#[macro_export]
macro_rules! conformance_tests {
    () => {
        mod conformance {
            mod memory {
                $crate::__conformance_cases!(tests Memory);
            }
            mod redis {
                $crate::__conformance_cases!(tests Redis);
            }
            mod cluster {
                $crate::__conformance_cases!(tests Cluster);
            }
            mod hybrid {
                $crate::__conformance_cases!(tests Hybrid);
            }
            mod hybrid_cluster {
                $crate::__conformance_cases!(tests HybridCluster);
            }
            mod compressed {
                $crate::__conformance_cases!(tests Compressed);
            }
        }
    };
}

/// A backend of [`conformance_tests!`](crate::conformance_tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A `MemoryCache` of the test's own, on a manual clock.
    Memory,
    /// A `RedisCache` on the binary's shared server.
    Redis,
    /// A cluster `RedisCache` on the binary's shared cluster.
    Cluster,
    /// A `HybridCache` of the test's own (L1 serving) over the binary's shared server.
    Hybrid,
    /// A `HybridCache` of the test's own (L1 serving) over the binary's shared cluster.
    HybridCluster,
    /// A `Compressed` `MemoryCache` of the test's own, compressing every value of 8 bytes or
    /// more: the decorator keeps every contract of what it wraps.
    Compressed,
}

/// Runs the case `name` on a fresh cache of `backend`; a failed assertion fails the test.
///
/// # Panics
/// When there is no such case, or the case fails.
pub async fn run_case(backend: Target, name: &str) {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    let (cache, clock): (Arc<dyn Cache>, Option<Clock>) = match backend {
        Target::Memory => {
            let clock = Clock::manual();
            let cache = MemoryCache::builder().clock(clock.clone()).build();
            (Arc::new(cache), Some(clock))
        }
        Target::Redis => {
            let server = tokio::task::block_in_place(|| REDIS.get_or_init(RedisServer::start));
            (Arc::new(crate::redis_cache(server).await), None)
        }
        Target::Cluster => {
            let cluster = tokio::task::block_in_place(|| CLUSTER.get_or_init(RedisCluster::start));
            (Arc::new(crate::cluster_cache(cluster).await), None)
        }
        Target::Hybrid => {
            let server = tokio::task::block_in_place(|| REDIS.get_or_init(RedisServer::start));
            let l2 = crate::redis_cache(server).await;
            (Arc::new(crate::hybrid_cache(l2).await), None)
        }
        Target::HybridCluster => {
            let cluster = tokio::task::block_in_place(|| CLUSTER.get_or_init(RedisCluster::start));
            let l2 = crate::cluster_cache(cluster).await;
            (Arc::new(crate::hybrid_cache(l2).await), None)
        }
        Target::Compressed => {
            let clock = Clock::manual();
            let cache = MemoryCache::builder().clock(clock.clone()).build();
            let config = dashcache::compress::Compression::default().with_min_bytes(8);
            (
                Arc::new(dashcache::compress::Compressed::new(cache, config)),
                Some(clock),
            )
        }
    };
    let Some((_, case)) = cases().into_iter().find(|(n, _)| *n == name) else {
        panic!("no conformance case {name}");
    };
    case(Ctx {
        cache,
        // The target is part of the namespace: a binary's targets share servers (Redis and
        // Hybrid one, Cluster and HybridCluster another) and run the same cases in parallel.
        ns: format!("conf:{}:{backend:?}:{name}:", std::process::id()),
        clock,
    })
    .await;
}

/// Runs every case against `cache`, eight at a time, and panics listing each failure.
pub async fn run(cache: Arc<dyn Cache>) {
    run_cases(cache, cases()).await;
}

/// Runs the given cases (see [`cases`]) and panics listing each failure.
pub async fn run_cases(cache: Arc<dyn Cache>, cases: Vec<Case>) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let run = format!(
        "{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let total = cases.len();
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let running: Vec<_> = cases
        .into_iter()
        .map(|(name, case)| {
            let ctx = Ctx {
                cache: Arc::clone(&cache),
                ns: format!("conf:{run}:{name}:"),
                // Cases run side by side here: real time, which no case can move for another.
                clock: None,
            };
            let limit = Arc::clone(&limit);
            // A spawned task turns a failed assertion into a JoinError we can report.
            let task = tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                case(ctx).await;
            });
            (name, task)
        })
        .collect();
    let mut failures = Vec::new();
    for (name, task) in running {
        if let Err(e) = task.await {
            failures.push(format!("{name}: {}", panic_message(e)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} conformance cases failed on {cache:?}:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned()),
        Err(e) => e.to_string(),
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The error kind of a result, for compact assertions.
fn kind<T: std::fmt::Debug>(r: dashcache::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

async fn expires_within(c: &Ctx, key: &str, max: Duration) -> Duration {
    match c.cache.ttl(key).await.unwrap() {
        KeyTtl::Expires(d) => {
            assert!(d <= max, "{key}: ttl {d:?} above {max:?}");
            d
        }
        other => panic!("{key}: expected a TTL, got {other:?}"),
    }
}

async fn get_miss_is_none(c: Ctx) {
    assert_eq!(c.cache.get(&c.key("nothing")).await.unwrap(), None);
}

async fn set_then_get_round_trips_any_bytes(c: Ctx) {
    let values = [
        Bytes::from_static(b"plain"),
        Bytes::from_static(b""),
        Bytes::from_static(&[0, 159, 146, 150, 255]),
        Bytes::from("é ünïcode ✓"),
    ];
    for (i, value) in values.into_iter().enumerate() {
        let key = c.key(&format!("v{i}"));
        c.cache
            .set(&key, value.clone(), Ttl::secs(60))
            .await
            .unwrap();
        assert_eq!(c.cache.get(&key).await.unwrap(), Some(value));
    }
}

async fn set_overwrites_value_and_ttl(c: Ctx) {
    let key = c.key("k");
    c.cache.set(&key, b("one"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&key, b("two"), Ttl::Persist).await.unwrap();
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("two")));
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    c.cache.set(&key, b("three"), Ttl::secs(5)).await.unwrap();
    expires_within(&c, &key, Duration::from_secs(5)).await;
    c.cache.delete(&key).await.unwrap();
}

async fn ttl_expiry_is_real(c: Ctx) {
    let key = c.key("short");
    let set = c.key("short-set");
    c.cache.set(&key, b("v"), Ttl::millis(150)).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::millis(150))
        .await
        .unwrap();
    assert!(c.cache.exists(&key).await.unwrap());
    c.wait(Duration::from_millis(400)).await;
    assert_eq!(c.cache.get(&key).await.unwrap(), None);
    assert!(!c.cache.exists(&key).await.unwrap());
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Missing);
    assert!(c.cache.set_members(&set).await.unwrap().is_empty());
    assert!(
        c.cache
            .set_if_absent(&key, b("again"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("again")));
}

async fn ttl_reports_missing_persistent_and_remaining(c: Ctx) {
    let (missing, persistent, expiring) = (c.key("m"), c.key("p"), c.key("e"));
    assert_eq!(c.cache.ttl(&missing).await.unwrap(), KeyTtl::Missing);
    c.cache
        .set(&persistent, b("v"), Ttl::Persist)
        .await
        .unwrap();
    assert_eq!(c.cache.ttl(&persistent).await.unwrap(), KeyTtl::Persistent);
    c.cache
        .set(&expiring, b("v"), Ttl::millis(10_500))
        .await
        .unwrap();
    let left = expires_within(&c, &expiring, Duration::from_millis(10_500)).await;
    assert!(left > Duration::from_secs(9), "{left:?}");
    c.cache
        .delete_many(&[&persistent, &expiring])
        .await
        .unwrap();
}

async fn set_if_absent_writes_once(c: Ctx) {
    let key = c.key("k");
    assert!(
        c.cache
            .set_if_absent(&key, b("first"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert!(
        !c.cache
            .set_if_absent(&key, b("second"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("first")));
    expires_within(&c, &key, Duration::from_secs(60)).await;
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(
        !c.cache
            .set_if_absent(&set, b("x"), Ttl::secs(60))
            .await
            .unwrap()
    );
}

async fn take_returns_the_value_once(c: Ctx) {
    let key = c.key("k");
    c.cache.set(&key, b("once"), Ttl::secs(60)).await.unwrap();
    assert_eq!(c.cache.take(&key).await.unwrap(), Some(b("once")));
    assert_eq!(c.cache.take(&key).await.unwrap(), None);
    assert!(!c.cache.exists(&key).await.unwrap());
}

async fn take_of_a_set_is_wrong_type_and_keeps_it(c: Ctx) {
    let key = c.key("set");
    c.cache
        .set_add(&key, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(kind(c.cache.take(&key).await), Some(ErrorKind::WrongType));
    assert_eq!(c.cache.set_members(&key).await.unwrap(), vec![b("m")]);
}

async fn delete_reports_removal(c: Ctx) {
    let key = c.key("k");
    assert!(!c.cache.delete(&key).await.unwrap());
    c.cache.set(&key, b("v"), Ttl::secs(60)).await.unwrap();
    assert!(c.cache.delete(&key).await.unwrap());
    assert!(!c.cache.delete(&key).await.unwrap());
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(c.cache.delete(&set).await.unwrap());
}

async fn delete_many_counts_removed_keys(c: Ctx) {
    let (a, bk, missing) = (c.key("a"), c.key("b"), c.key("missing"));
    c.cache.set(&a, b("1"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&bk, b("2"), Ttl::secs(60)).await.unwrap();
    let removed = c.cache.delete_many(&[&a, &missing, &bk, &a]).await.unwrap();
    assert_eq!(removed, 2);
    assert!(!c.cache.exists(&a).await.unwrap());
    assert!(!c.cache.exists(&bk).await.unwrap());
}

async fn exists_sees_every_type(c: Ctx) {
    let (s, set) = (c.key("s"), c.key("set"));
    assert!(!c.cache.exists(&s).await.unwrap());
    c.cache.set(&s, b("v"), Ttl::secs(60)).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(c.cache.exists(&s).await.unwrap());
    assert!(c.cache.exists(&set).await.unwrap());
}

async fn get_many_keeps_order_misses_and_duplicates(c: Ctx) {
    let (k1, k2, miss, set) = (c.key("1"), c.key("2"), c.key("miss"), c.key("set"));
    c.cache.set(&k1, b("one"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&k2, b("two"), Ttl::secs(60)).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let got = c
        .cache
        .get_many(&[&k2, &miss, &k1, &k2, &set])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(b("two")), None, Some(b("one")), Some(b("two")), None]
    );
}

async fn empty_batches_are_no_ops(c: Ctx) {
    assert!(c.cache.get_many(&[]).await.unwrap().is_empty());
    assert_eq!(c.cache.delete_many(&[]).await.unwrap(), 0);
    c.cache.set_many(&[], Ttl::secs(60)).await.unwrap();
    assert_eq!(
        c.cache
            .set_add(&c.key("set"), &[], Ttl::secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(c.cache.set_remove(&c.key("set"), &[]).await.unwrap(), 0);
    assert!(!c.cache.exists(&c.key("set")).await.unwrap());
}

async fn set_many_writes_all_with_the_ttl(c: Ctx) {
    let keys: Vec<String> = (0..50).map(|i| c.key(&format!("k{i}"))).collect();
    let entries: Vec<(&str, Bytes)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), Bytes::from(i.to_string())))
        .collect();
    c.cache.set_many(&entries, Ttl::secs(30)).await.unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.cache.get_many(&refs).await.unwrap();
    for (i, value) in got.into_iter().enumerate() {
        assert_eq!(value, Some(Bytes::from(i.to_string())));
    }
    for key in &keys[..3] {
        let left = expires_within(&c, key, Duration::from_secs(30)).await;
        assert!(left > Duration::from_secs(25), "{left:?}");
    }
    c.cache.set_many(&entries[..2], Ttl::Persist).await.unwrap();
    assert_eq!(c.cache.ttl(&keys[0]).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(c.cache.delete_many(&refs).await.unwrap(), 50);
}

async fn set_many_is_all_or_nothing_on_bad_input(c: Ctx) {
    let (ok1, ok2) = (c.key("ok1"), c.key("ok2"));
    let too_big = Bytes::from(vec![0u8; Limits::default().max_value_bytes + 1]);
    let bad_batches: Vec<Vec<(&str, Bytes)>> = vec![
        vec![(ok1.as_str(), b("1")), ("", b("2")), (ok2.as_str(), b("3"))],
        vec![(ok1.as_str(), b("1")), (ok2.as_str(), too_big)],
    ];
    for batch in bad_batches {
        assert!(c.cache.set_many(&batch, Ttl::secs(60)).await.is_err());
        assert_eq!(
            c.cache.get_many(&[&ok1, &ok2]).await.unwrap(),
            vec![None, None]
        );
    }
    let good = [(ok1.as_str(), b("1"))];
    assert_eq!(
        kind(c.cache.set_many(&good, Ttl::secs(0)).await),
        Some(ErrorKind::InvalidArgument)
    );
    assert_eq!(c.cache.get(&ok1).await.unwrap(), None);
}

async fn increment_counts_from_zero_both_ways(c: Ctx) {
    let key = c.key("n");
    assert_eq!(c.cache.increment(&key, 1, None).await.unwrap(), 1);
    assert_eq!(c.cache.increment(&key, 41, None).await.unwrap(), 42);
    assert_eq!(c.cache.increment(&key, -50, None).await.unwrap(), -8);
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("-8")));
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    let fresh = c.key("neg");
    assert_eq!(c.cache.increment(&fresh, -3, None).await.unwrap(), -3);
    c.cache.set(&fresh, b("10"), Ttl::secs(60)).await.unwrap();
    assert_eq!(c.cache.increment(&fresh, 5, None).await.unwrap(), 15);
    c.cache.delete_many(&[&key, &fresh]).await.unwrap();
}

async fn increment_sets_ttl_only_when_missing(c: Ctx) {
    // A new counter gets the TTL in the same step.
    let fresh = c.key("fresh");
    assert_eq!(
        c.cache
            .increment(&fresh, 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        1
    );
    expires_within(&c, &fresh, Duration::from_secs(60)).await;
    // An existing TTL stands (EXPIRE NX).
    let short = c.key("short");
    c.cache.set(&short, b("5"), Ttl::secs(10)).await.unwrap();
    assert_eq!(
        c.cache
            .increment(&short, 1, Some(Ttl::secs(600)))
            .await
            .unwrap(),
        6
    );
    expires_within(&c, &short, Duration::from_secs(10)).await;
    // A counter left without a TTL gets one: no counter is left without expiry.
    let bare = c.key("bare");
    c.cache.increment(&bare, 1, None).await.unwrap();
    assert_eq!(c.cache.ttl(&bare).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(
        c.cache
            .increment(&bare, 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        2
    );
    expires_within(&c, &bare, Duration::from_secs(60)).await;
    // The exact value survives above 2^53.
    let big = c.key("big");
    let start = (1i64 << 60) + 1;
    c.cache
        .set(&big, Bytes::from(start.to_string()), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        c.cache
            .increment(&big, 2, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        start + 2
    );
}

async fn increment_of_a_non_integer_is_wrong_type_and_changes_nothing(c: Ctx) {
    for (i, text) in [
        "abc",
        "1.5",
        "007",
        " 1",
        "+1",
        "-0",
        "",
        "99999999999999999999",
    ]
    .into_iter()
    .enumerate()
    {
        let key = c.key(&format!("k{i}"));
        c.cache.set(&key, b(text), Ttl::Persist).await.unwrap();
        for ttl in [None, Some(Ttl::secs(60))] {
            assert_eq!(
                kind(c.cache.increment(&key, 1, ttl).await),
                Some(ErrorKind::WrongType),
                "{text:?} with {ttl:?}"
            );
        }
        assert_eq!(c.cache.get(&key).await.unwrap(), Some(b(text)));
        assert_eq!(
            c.cache.ttl(&key).await.unwrap(),
            KeyTtl::Persistent,
            "{text:?}"
        );
        c.cache.delete(&key).await.unwrap();
    }
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        kind(c.cache.increment(&set, 1, None).await),
        Some(ErrorKind::WrongType)
    );
}

async fn increment_overflow_is_invalid_argument_and_changes_nothing(c: Ctx) {
    let (max, min) = (c.key("max"), c.key("min"));
    c.cache
        .set(&max, Bytes::from(i64::MAX.to_string()), Ttl::Persist)
        .await
        .unwrap();
    c.cache
        .set(&min, Bytes::from(i64::MIN.to_string()), Ttl::Persist)
        .await
        .unwrap();
    for ttl in [None, Some(Ttl::secs(60))] {
        assert_eq!(
            kind(c.cache.increment(&max, 1, ttl).await),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(
            kind(c.cache.increment(&min, -1, ttl).await),
            Some(ErrorKind::InvalidArgument)
        );
    }
    assert_eq!(
        c.cache.get(&max).await.unwrap(),
        Some(Bytes::from(i64::MAX.to_string()))
    );
    assert_eq!(c.cache.ttl(&max).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(
        c.cache.increment(&max, -1, None).await.unwrap(),
        i64::MAX - 1
    );
    c.cache.delete_many(&[&max, &min]).await.unwrap();
}

async fn expire_sets_and_removes_ttls(c: Ctx) {
    let key = c.key("k");
    assert!(!c.cache.expire(&key, Ttl::secs(10)).await.unwrap());
    assert!(!c.cache.expire(&key, Ttl::Persist).await.unwrap());
    c.cache.set(&key, b("v"), Ttl::Persist).await.unwrap();
    assert!(c.cache.expire(&key, Ttl::secs(10)).await.unwrap());
    expires_within(&c, &key, Duration::from_secs(10)).await;
    assert!(c.cache.expire(&key, Ttl::Persist).await.unwrap());
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    assert!(
        c.cache.expire(&key, Ttl::Persist).await.unwrap(),
        "true for an existing key"
    );
    assert!(c.cache.expire(&key, Ttl::millis(100)).await.unwrap());
    c.wait(Duration::from_millis(300)).await;
    assert!(!c.cache.exists(&key).await.unwrap());
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(c.cache.expire(&set, Ttl::secs(5)).await.unwrap());
    expires_within(&c, &set, Duration::from_secs(5)).await;
}

async fn delete_pattern_deletes_exactly_the_matches(c: Ctx) {
    let matching = ["user:1:a", "user:1:b", "user:1:c:d"];
    let others = ["user:10:a", "user:2:a", "user:1", "other:1:a"];
    for name in matching.iter().chain(&others) {
        c.cache
            .set(&c.key(name), b("v"), Ttl::secs(60))
            .await
            .unwrap();
    }
    c.cache
        .set_add(&c.key("user:1:set"), &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let deleted = c.cache.delete_pattern(&c.key("user:1:*")).await.unwrap();
    assert_eq!(deleted, 4, "three strings and one set");
    for name in matching {
        assert!(!c.cache.exists(&c.key(name)).await.unwrap(), "{name}");
    }
    for name in others {
        assert!(
            c.cache.exists(&c.key(name)).await.unwrap(),
            "{name} must survive"
        );
    }
    assert_eq!(c.cache.delete_pattern(&c.key("user:1:*")).await.unwrap(), 0);
    assert_eq!(
        c.cache.delete_pattern(&c.key("nothing:*")).await.unwrap(),
        0
    );
    assert_eq!(c.cache.delete_pattern(&c.key("*")).await.unwrap(), 4);
}

async fn delete_pattern_honours_glob_syntax(c: Ctx) {
    let names = ["a1", "a2", "a3", "b1", "a*", "a?", "ab", "[a]"];
    for name in names {
        c.cache
            .set(&c.key(name), b("v"), Ttl::secs(60))
            .await
            .unwrap();
    }
    let cases: &[(&str, &[&str])] = &[
        ("a\\*", &["a*"]),
        ("a[12]", &["a1", "a2"]),
        ("a[^0-9*?]", &["ab"]),
        ("\\[a\\]", &["[a]"]),
        ("?1", &["b1"]),
    ];
    for (pattern, expected) in cases {
        let deleted = c.cache.delete_pattern(&c.key(pattern)).await.unwrap();
        assert_eq!(deleted, expected.len() as u64, "{pattern}");
        for name in *expected {
            assert!(
                !c.cache.exists(&c.key(name)).await.unwrap(),
                "{pattern} {name}"
            );
        }
    }
    for survivor in ["a3", "a?"] {
        assert!(
            c.cache.exists(&c.key(survivor)).await.unwrap(),
            "{survivor}"
        );
    }
}

async fn delete_pattern_sweeps_many_batches(c: Ctx) {
    let keys: Vec<String> = (0..3000)
        .map(|i| c.key(&format!("{}:{i}", if i % 3 == 0 { "hit" } else { "miss" })))
        .collect();
    for chunk in keys.chunks(500) {
        let entries: Vec<(&str, Bytes)> = chunk.iter().map(|k| (k.as_str(), b("v"))).collect();
        c.cache.set_many(&entries, Ttl::secs(120)).await.unwrap();
    }
    assert_eq!(c.cache.delete_pattern(&c.key("hit:*")).await.unwrap(), 1000);
    assert_eq!(
        c.cache.delete_pattern(&c.key("miss:*")).await.unwrap(),
        2000
    );
}

async fn sets_add_remove_and_list_members(c: Ctx) {
    let key = c.key("s");
    assert!(c.cache.set_members(&key).await.unwrap().is_empty());
    assert_eq!(
        c.cache
            .set_add(&key, &[b("a"), b("b"), b("a")], Ttl::secs(60))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        c.cache
            .set_add(&key, &[b("b"), b("c")], Ttl::secs(60))
            .await
            .unwrap(),
        1
    );
    let mut members = c.cache.set_members(&key).await.unwrap();
    members.sort();
    assert_eq!(members, vec![b("a"), b("b"), b("c")]);
    assert_eq!(
        c.cache.set_remove(&key, &[b("a"), b("zz")]).await.unwrap(),
        1
    );
    assert_eq!(
        c.cache
            .set_remove(&c.key("missing"), &[b("a")])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        c.cache.set_remove(&key, &[b("b"), b("c")]).await.unwrap(),
        2
    );
    assert!(
        !c.cache.exists(&key).await.unwrap(),
        "removing the last member removes the key"
    );
}

async fn set_add_refreshes_the_ttl(c: Ctx) {
    let key = c.key("s");
    c.cache
        .set_add(&key, &[b("a")], Ttl::secs(5))
        .await
        .unwrap();
    expires_within(&c, &key, Duration::from_secs(5)).await;
    c.cache
        .set_add(&key, &[b("a")], Ttl::secs(100))
        .await
        .unwrap();
    let left = expires_within(&c, &key, Duration::from_secs(100)).await;
    assert!(
        left > Duration::from_secs(90),
        "set_add sets the TTL on every call: {left:?}"
    );
    c.cache
        .set_add(&key, &[b("b")], Ttl::Persist)
        .await
        .unwrap();
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    // Removing a member keeps the TTL of the set.
    c.cache
        .set_add(&key, &[b("c")], Ttl::secs(50))
        .await
        .unwrap();
    c.cache.set_remove(&key, &[b("c")]).await.unwrap();
    expires_within(&c, &key, Duration::from_secs(50)).await;
    c.cache.delete(&key).await.unwrap();
}

async fn sets_and_strings_do_not_mix(c: Ctx) {
    let (string, set) = (c.key("string"), c.key("set"));
    c.cache.set(&string, b("v"), Ttl::Persist).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let m = [b("m")];
    assert_eq!(
        kind(c.cache.set_add(&string, &m, Ttl::secs(9)).await),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(
        kind(c.cache.set_remove(&string, &m).await),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(
        kind(c.cache.set_members(&string).await),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(kind(c.cache.get(&set).await), Some(ErrorKind::WrongType));
    // A failed set_add changed nothing, not even the TTL.
    assert_eq!(c.cache.get(&string).await.unwrap(), Some(b("v")));
    assert_eq!(c.cache.ttl(&string).await.unwrap(), KeyTtl::Persistent);
    // set overwrites any type.
    c.cache
        .set(&set, b("now a string"), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(c.cache.get(&set).await.unwrap(), Some(b("now a string")));
    c.cache.delete(&string).await.unwrap();
}

async fn bad_keys_are_invalid_key_everywhere(c: Ctx) {
    let long = c.key(&"k".repeat(Limits::default().max_key_bytes));
    let bad = ["", "with\nnewline", "nul\0byte", "del\u{7f}", long.as_str()];
    let v = b("v");
    let t = Ttl::secs(60);
    for key in bad {
        let show = key.chars().take(20).collect::<String>();
        let results = [
            kind(c.cache.get(key).await),
            kind(c.cache.set(key, v.clone(), t).await),
            kind(c.cache.set_if_absent(key, v.clone(), t).await),
            kind(c.cache.take(key).await),
            kind(c.cache.delete(key).await),
            kind(c.cache.delete_many(&[key]).await),
            kind(c.cache.exists(key).await),
            kind(c.cache.get_many(&[key]).await),
            kind(c.cache.set_many(&[(key, v.clone())], t).await),
            kind(c.cache.increment(key, 1, None).await),
            kind(c.cache.expire(key, t).await),
            kind(c.cache.ttl(key).await),
            kind(c.cache.set_add(key, std::slice::from_ref(&v), t).await),
            kind(c.cache.set_remove(key, std::slice::from_ref(&v)).await),
            kind(c.cache.set_members(key).await),
            kind(c.cache.get_str(key).await),
            kind(c.cache.write_if(&[Condition::Absent(key)], &[]).await),
            kind(c.cache.write_if(&[], &[Write::Delete(key)]).await),
        ];
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(
                result,
                Some(ErrorKind::InvalidKey),
                "method #{i} with key {show:?}"
            );
        }
    }
    let at_limit = c.key(&"k".repeat(Limits::default().max_key_bytes - c.ns.len()));
    assert_eq!(at_limit.len(), Limits::default().max_key_bytes);
    c.cache.set(&at_limit, v, Ttl::secs(5)).await.unwrap();
    assert!(c.cache.delete(&at_limit).await.unwrap());
}

async fn zero_ttls_are_invalid_arguments_everywhere(c: Ctx) {
    let (key, v, zero) = (c.key("k"), b("v"), Ttl::secs(0));
    let results = [
        kind(c.cache.set(&key, v.clone(), zero).await),
        kind(c.cache.set_if_absent(&key, v.clone(), zero).await),
        kind(c.cache.set_many(&[(&key, v.clone())], zero).await),
        kind(c.cache.increment(&key, 1, Some(zero)).await),
        kind(c.cache.expire(&key, zero).await),
        kind(c.cache.set_add(&key, std::slice::from_ref(&v), zero).await),
        kind(
            c.cache
                .set(
                    &key,
                    v.clone(),
                    Ttl::from(Duration::from_secs(200 * 365 * 86_400)),
                )
                .await,
        ),
    ];
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result, Some(ErrorKind::InvalidArgument), "method #{i}");
    }
    assert!(!c.cache.exists(&key).await.unwrap(), "nothing was written");
}

async fn values_over_the_limit_are_too_large(c: Ctx) {
    let limit = Limits::default().max_value_bytes;
    let (key, set) = (c.key("big"), c.key("set"));
    let too_big = Bytes::from(vec![7u8; limit + 1]);
    let err = c
        .cache
        .set(&key, too_big.clone(), Ttl::secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(err.key(), Some(key.as_str()));
    assert_eq!(
        kind(
            c.cache
                .set_if_absent(&key, too_big.clone(), Ttl::secs(60))
                .await
        ),
        Some(ErrorKind::TooLarge)
    );
    assert_eq!(
        kind(c.cache.set_add(&set, &[too_big], Ttl::secs(60)).await),
        Some(ErrorKind::TooLarge)
    );
    assert!(!c.cache.exists(&key).await.unwrap());
    let at_limit = Bytes::from(vec![7u8; limit]);
    c.cache
        .set(&key, at_limit.clone(), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        c.cache.get(&key).await.unwrap().map(|v| v.len()),
        Some(limit)
    );
    c.cache.delete(&key).await.unwrap();
}

async fn empty_pattern_is_invalid_argument(c: Ctx) {
    assert_eq!(
        kind(c.cache.delete_pattern("").await),
        Some(ErrorKind::InvalidArgument)
    );
    assert_eq!(
        kind(c.cache.delete_pattern("a\nb*").await),
        Some(ErrorKind::InvalidArgument)
    );
}

async fn json_round_trips_and_corrupt_json_names_the_key(c: Ctx) {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
        roles: Vec<String>,
    }
    let key = c.key("user");
    let user = User {
        id: 7,
        name: "Ada".into(),
        roles: vec!["admin".into()],
    };
    c.cache.set_json(&key, &user, Ttl::secs(60)).await.unwrap();
    assert_eq!(c.cache.get_json::<User>(&key).await.unwrap(), Some(user));
    assert_eq!(
        c.cache.get_json::<User>(&c.key("missing")).await.unwrap(),
        None
    );

    c.cache
        .set(&key, b("{not json"), Ttl::secs(60))
        .await
        .unwrap();
    let err = c.cache.get_json::<User>(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deserialize);
    assert_eq!(err.key(), Some(key.as_str()));
    c.cache
        .set(&key, b("{\"id\":\"seven\"}"), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        kind(c.cache.get_json::<User>(&key).await),
        Some(ErrorKind::Deserialize)
    );
    c.cache
        .set(&key, Bytes::from_static(&[0xff, 0xfe]), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        kind(c.cache.get_str(&key).await),
        Some(ErrorKind::Deserialize)
    );
    c.cache.set_str(&key, "text", Ttl::secs(60)).await.unwrap();
    assert_eq!(
        c.cache.get_str(&key).await.unwrap().as_deref(),
        Some("text")
    );

    let mut bad_map = std::collections::HashMap::new();
    bad_map.insert(vec![1u8], 1);
    assert_eq!(
        kind(c.cache.set_json(&key, &bad_map, Ttl::secs(60)).await),
        Some(ErrorKind::Serialize)
    );
}

async fn take_is_exactly_once_under_contention(c: Ctx) {
    let key = c.key("token");
    c.cache
        .set(&key, b("payload"), Ttl::secs(60))
        .await
        .unwrap();
    let takers = (0..200).map(|_| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move { cache.take(&key).await })
    });
    let results = join_all(takers).await;
    let winners = results
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(Option::is_some)
        .count();
    assert_eq!(winners, 1);
}

async fn increment_is_atomic_under_contention(c: Ctx) {
    let key = c.key("counter");
    let tasks = (0..1000).map(|_| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move { cache.increment(&key, 1, Some(Ttl::secs(60))).await })
    });
    let mut seen: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=1000).collect::<Vec<_>>(),
        "every increment saw a distinct value"
    );
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("1000")));
    expires_within(&c, &key, Duration::from_secs(60)).await;
}

async fn set_if_absent_has_one_winner_under_contention(c: Ctx) {
    let key = c.key("lock");
    let tasks = (0..200).map(|i| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move {
            cache
                .set_if_absent(&key, Bytes::from(i.to_string()), Ttl::secs(60))
                .await
        })
    });
    let wins = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
}

async fn set_add_is_atomic_under_contention(c: Ctx) {
    let key = c.key("index");
    let tasks = (0..200).map(|i| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move {
            cache
                .set_add(&key, &[Bytes::from(format!("m{i}"))], Ttl::secs(60))
                .await
        })
    });
    let added: u64 = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .sum();
    assert_eq!(added, 200);
    assert_eq!(c.cache.set_members(&key).await.unwrap().len(), 200);
}

async fn write_if_applies_every_write_when_conditions_hold(c: Ctx) {
    let (a, bk, set, gone) = (
        c.tagged("a"),
        c.tagged("b"),
        c.tagged("set"),
        c.tagged("gone"),
    );
    c.cache.set(&gone, b("x"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&bk, b("old"), Ttl::secs(60)).await.unwrap();
    let members = [b("m1"), b("m2")];
    let applied = c
        .cache
        .write_if(
            &[
                Condition::Absent(&a),
                Condition::Exists(&bk),
                Condition::MissingOrBelow(&c.tagged("v"), 5),
            ],
            &[
                Write::Set(&a, b("new"), Ttl::secs(30)),
                Write::Replace(&bk, b("replaced")),
                Write::SetAdd(&set, &members, Ttl::secs(30)),
                Write::Delete(&gone),
            ],
        )
        .await
        .unwrap();
    assert!(applied);
    assert_eq!(c.cache.get(&a).await.unwrap(), Some(b("new")));
    expires_within(&c, &a, Duration::from_secs(30)).await;
    assert_eq!(c.cache.get(&bk).await.unwrap(), Some(b("replaced")));
    let mut got = c.cache.set_members(&set).await.unwrap();
    got.sort();
    assert_eq!(got, members.to_vec());
    assert!(!c.cache.exists(&gone).await.unwrap());
    assert!(
        c.cache.write_if(&[], &[]).await.unwrap(),
        "nothing to do is done"
    );
}

async fn write_if_refuses_and_writes_nothing_when_a_condition_fails(c: Ctx) {
    let (present, missing, version, target) =
        (c.tagged("p"), c.tagged("m"), c.tagged("v"), c.tagged("t"));
    c.cache.set(&present, b("x"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&version, b("10"), Ttl::secs(60)).await.unwrap();
    let failing = [
        Condition::Absent(&present),
        Condition::Exists(&missing),
        Condition::MissingOrBelow(&version, 10),
        Condition::MissingOrBelow(&version, 9),
    ];
    for condition in failing {
        let applied = c
            .cache
            .write_if(
                &[Condition::Absent(&missing), condition],
                &[Write::Set(&target, b("w"), Ttl::secs(60))],
            )
            .await
            .unwrap();
        assert!(!applied, "{condition:?}");
        assert!(
            !c.cache.exists(&target).await.unwrap(),
            "{condition:?} wrote"
        );
    }
    let applied = c
        .cache
        .write_if(
            &[Condition::MissingOrBelow(&version, 11)],
            &[Write::Set(&target, b("w"), Ttl::secs(60))],
        )
        .await
        .unwrap();
    assert!(applied);
}

async fn write_if_compares_integers_exactly(c: Ctx) {
    let k = c.key("n");
    let big = (1i64 << 60) + 1;
    let holds = |bound: i64| {
        let (cache, k) = (Arc::clone(&c.cache), k.clone());
        async move {
            cache
                .write_if(&[Condition::MissingOrBelow(&k, bound)], &[])
                .await
        }
    };
    assert!(
        holds(i64::MIN).await.unwrap(),
        "a missing key is below anything"
    );
    for (value, bound, below) in [
        (big, big + 1, true),
        (big, big, false),
        (big + 1, big, false),
        (-5, 0, true),
        (-5, -10, false),
        (-10, -5, true),
        (0, 0, false),
        (0, 1, true),
        (i64::MIN, i64::MAX, true),
        (i64::MAX, i64::MAX, false),
        (i64::MIN, i64::MIN, false),
    ] {
        c.cache
            .set(&k, Bytes::from(value.to_string()), Ttl::secs(60))
            .await
            .unwrap();
        assert_eq!(holds(bound).await.unwrap(), below, "{value} < {bound}");
    }
    for text in ["abc", "007", "1.5", "99999999999999999999", ""] {
        c.cache.set(&k, b(text), Ttl::secs(60)).await.unwrap();
        assert_eq!(kind(holds(5).await), Some(ErrorKind::WrongType), "{text:?}");
    }
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let on_set = c
        .cache
        .write_if(&[Condition::MissingOrBelow(&set, 5)], &[])
        .await;
    assert_eq!(kind(on_set), Some(ErrorKind::WrongType));
}

async fn write_if_int_equals_matches_only_that_integer(c: Ctx) {
    let k = c.key("gen");
    let big = (1i64 << 60) + 1;
    let equals = |expected: i64| {
        let (cache, k) = (Arc::clone(&c.cache), k.clone());
        async move {
            cache
                .write_if(&[Condition::IntEquals(&k, expected)], &[])
                .await
        }
    };
    assert!(!equals(0).await.unwrap(), "a missing key equals nothing");
    for (value, expected, holds) in [
        (big, big, true),
        (big, big + 1, false),
        (big + 1, big, false),
        (0, 0, true),
        (-5, -5, true),
        (-5, 5, false),
        (i64::MIN, i64::MIN, true),
        (i64::MAX, i64::MAX, true),
        (i64::MAX, i64::MIN, false),
    ] {
        c.cache
            .set(&k, Bytes::from(value.to_string()), Ttl::secs(60))
            .await
            .unwrap();
        assert_eq!(
            equals(expected).await.unwrap(),
            holds,
            "{value} == {expected}"
        );
    }
    for text in ["abc", "007", "+5", "-0", ""] {
        c.cache.set(&k, b(text), Ttl::secs(60)).await.unwrap();
        assert_eq!(
            kind(equals(5).await),
            Some(ErrorKind::WrongType),
            "{text:?}"
        );
    }
    let (gen_key, target) = (c.tagged("g"), c.tagged("t"));
    c.cache.set(&gen_key, b("7"), Ttl::secs(60)).await.unwrap();
    let fill = |expected: i64| {
        let (cache, gen_key, target) = (Arc::clone(&c.cache), gen_key.clone(), target.clone());
        async move {
            cache
                .write_if(
                    &[Condition::IntEquals(&gen_key, expected)],
                    &[
                        Write::Set(&target, b("v"), Ttl::secs(60)),
                        Write::SetInt(&gen_key, expected + 1, Ttl::secs(60)),
                    ],
                )
                .await
                .unwrap()
        }
    };
    assert!(!fill(6).await);
    assert!(!c.cache.exists(&target).await.unwrap());
    assert!(fill(7).await, "the fill of generation 7 commits");
    assert!(!fill(7).await, "and only one fill of it");
    assert_eq!(c.cache.get(&gen_key).await.unwrap(), Some(b("8")));
}

async fn write_if_replace_keeps_the_ttl_and_skips_missing_keys(c: Ctx) {
    let (k, missing) = (c.tagged("k"), c.tagged("missing"));
    c.cache.set(&k, b("v1"), Ttl::secs(20)).await.unwrap();
    let writes = [
        Write::Replace(&k, b("v2")),
        Write::Replace(&missing, b("v2")),
    ];
    assert!(c.cache.write_if(&[], &writes).await.unwrap());
    assert_eq!(c.cache.get(&k).await.unwrap(), Some(b("v2")));
    let left = expires_within(&c, &k, Duration::from_secs(20)).await;
    assert!(left > Duration::from_secs(15), "{left:?}");
    assert!(
        !c.cache.exists(&missing).await.unwrap(),
        "replace never creates a key"
    );
}

async fn write_if_set_add_extends_but_never_shortens(c: Ctx) {
    let (fresh, long, short, forever) = (
        c.tagged("fresh"),
        c.tagged("long"),
        c.tagged("short"),
        c.tagged("forever"),
    );
    let m = [b("m")];
    let n = [b("n")];
    c.cache.set_add(&long, &m, Ttl::secs(100)).await.unwrap();
    c.cache.set_add(&short, &m, Ttl::secs(5)).await.unwrap();
    c.cache.set_add(&forever, &m, Ttl::Persist).await.unwrap();
    let writes = [
        Write::SetAdd(&fresh, &n, Ttl::secs(50)),
        Write::SetAdd(&long, &n, Ttl::secs(50)),
        Write::SetAdd(&short, &n, Ttl::secs(50)),
        Write::SetAdd(&forever, &n, Ttl::secs(50)),
    ];
    assert!(c.cache.write_if(&[], &writes).await.unwrap());
    let fresh_left = expires_within(&c, &fresh, Duration::from_secs(50)).await;
    assert!(
        fresh_left > Duration::from_secs(45),
        "a new set gets the TTL: {fresh_left:?}"
    );
    let long_left = expires_within(&c, &long, Duration::from_secs(100)).await;
    assert!(
        long_left > Duration::from_secs(90),
        "a longer TTL stands: {long_left:?}"
    );
    let short_left = expires_within(&c, &short, Duration::from_secs(50)).await;
    assert!(
        short_left > Duration::from_secs(45),
        "a shorter TTL is extended: {short_left:?}"
    );
    assert_eq!(c.cache.ttl(&forever).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(c.cache.set_members(&short).await.unwrap().len(), 2);
    let persist = [Write::SetAdd(&long, &n, Ttl::Persist)];
    assert!(c.cache.write_if(&[], &persist).await.unwrap());
    assert_eq!(c.cache.ttl(&long).await.unwrap(), KeyTtl::Persistent);
}

async fn write_if_wrong_type_changes_nothing(c: Ctx) {
    let (a, string, set) = (c.tagged("a"), c.tagged("string"), c.tagged("set"));
    c.cache.set(&string, b("s"), Ttl::Persist).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let m = [b("x")];
    let attempts: [&[Write<'_>]; 2] = [
        &[
            Write::Set(&a, b("1"), Ttl::secs(60)),
            Write::Delete(&set),
            Write::SetAdd(&string, &m, Ttl::secs(9)),
        ],
        &[
            Write::Set(&a, b("1"), Ttl::secs(60)),
            Write::Delete(&set),
            Write::SetRemove(&string, &m),
        ],
    ];
    for writes in attempts {
        let result = c.cache.write_if(&[], writes).await;
        assert_eq!(kind(result), Some(ErrorKind::WrongType));
        assert!(
            !c.cache.exists(&a).await.unwrap(),
            "an earlier write was applied"
        );
        assert!(
            c.cache.exists(&set).await.unwrap(),
            "an earlier delete was applied"
        );
        assert_eq!(c.cache.ttl(&string).await.unwrap(), KeyTtl::Persistent);
    }
}

async fn write_if_applies_writes_in_order(c: Ctx) {
    let (k, s) = (c.tagged("k"), c.tagged("s"));
    c.cache.set(&k, b("string"), Ttl::secs(60)).await.unwrap();
    c.cache
        .set_add(&s, &[b("only")], Ttl::secs(60))
        .await
        .unwrap();
    let m = [b("m")];
    let only = [b("only")];
    let writes = [
        // A delete turns the string key into a set key within the same step...
        Write::Delete(&k),
        Write::SetAdd(&k, &m, Ttl::secs(60)),
        // ...and removing a set's last member leaves nothing to replace.
        Write::SetRemove(&s, &only),
        Write::Replace(&s, b("nothing")),
    ];
    assert!(c.cache.write_if(&[], &writes).await.unwrap());
    assert_eq!(c.cache.set_members(&k).await.unwrap(), vec![b("m")]);
    assert!(!c.cache.exists(&s).await.unwrap());
}

async fn write_if_has_one_winner_under_contention(c: Ctx) {
    let key = c.tagged("claim");
    let tasks = (0..200).map(|i| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move {
            let index = format!("{key}:idx");
            let writes = [
                Write::Set(&key, Bytes::from(i.to_string()), Ttl::secs(60)),
                Write::SetAdd(&index, &[Bytes::from(i.to_string())], Ttl::secs(60)),
            ];
            cache.write_if(&[Condition::Absent(&key)], &writes).await
        })
    });
    let wins = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
    let winner = c.cache.get(&key).await.unwrap().unwrap();
    assert_eq!(
        c.cache.set_members(&format!("{key}:idx")).await.unwrap(),
        vec![winner]
    );
}

/// Regression (memory backend): readers took no lock, so a reader could see one key of a
/// `write_if` or `set_many` written and the other not yet — `list_for_user` saw a session's
/// index entry before the session and pruned it as dead.
async fn multi_key_writes_are_never_seen_half_done(c: Ctx) {
    const WRITES: u64 = 10_000;
    let (a, b) = (c.tagged("a"), c.tagged("b"));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let value = |v: Option<Bytes>| -> u64 {
        v.map_or(0, |b| {
            String::from_utf8_lossy(&b).parse().unwrap_or(u64::MAX)
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, a, b, done) = (Arc::clone(&c.cache), a.clone(), b.clone(), done.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    // Written together, with increasing values: once `a` shows a write, `b`
                    // shows it or a later one; a batch read shows one write whole.
                    let first = value(cache.get(&a).await.unwrap());
                    let second = value(cache.get(&b).await.unwrap());
                    assert!(second >= first, "read a = {first}, then b = {second}");
                    let both = cache.get_many(&[&b, &a]).await.unwrap();
                    let (vb, va) = (value(both[0].clone()), value(both[1].clone()));
                    assert_eq!(va, vb, "one batch read saw a = {va} and b = {vb}");
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    for i in 1..=WRITES {
        let v = Bytes::from(i.to_string());
        if i % 2 == 0 {
            let writes = [
                Write::Set(&a, v.clone(), Ttl::secs(60)),
                Write::Set(&b, v, Ttl::secs(60)),
            ];
            assert!(c.cache.write_if(&[], &writes).await.unwrap());
        } else {
            let entries = [(a.as_str(), v.clone()), (b.as_str(), v)];
            c.cache.set_many(&entries, Ttl::secs(60)).await.unwrap();
        }
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
}

async fn ping_answers(c: Ctx) {
    let rtt = c.cache.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
}
