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
            write_if_differs_holds_until_the_marker_is_there,
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

pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The error kind of a result, for compact assertions.
pub(super) fn kind<T: std::fmt::Debug>(r: dashcache::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

pub(super) async fn expires_within(c: &Ctx, key: &str, max: Duration) -> Duration {
    match c.cache.ttl(key).await.unwrap() {
        KeyTtl::Expires(d) => {
            assert!(d <= max, "{key}: ttl {d:?} above {max:?}");
            d
        }
        other => panic!("{key}: expected a TTL, got {other:?}"),
    }
}

// The cases, by subject.
mod atomic;
mod basic;
mod sets;

use atomic::*;
use basic::*;
use sets::*;
