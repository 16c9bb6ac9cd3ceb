//! `CacheAside::warm` on every backend: batches, what is left alone, failed batches, TTLs, and
//! a warm that races an invalidation.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::{Cache, KeyTtl, Ttl};
use dashcache_testkit::on_every_backend;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failed;

impl From<LoaderTimeout> for Failed {
    fn from(_: LoaderTimeout) -> Self {
        Failed
    }
}

fn key_list(ns: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{ns}:user:{i}")).collect()
}

/// Every key but those ending in 7 exists, with value "v1:<key>".
fn rows(keys: &[String]) -> HashMap<String, String> {
    keys.iter()
        .filter(|k| !k.ends_with('7'))
        .map(|k| (k.clone(), format!("v1:{k}")))
        .collect()
}

async fn warms_in_batches_and_leaves_fresh_keys_alone(cache: Arc<dyn Cache>) {
    let aside = CacheAside::builder(cache.clone()).jitter(0.0).build();
    let keys = key_list("warm1", 250);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let calls = AtomicUsize::new(0);
    let report = aside
        .warm(&refs, Ttl::secs(120), 100, |missing| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert!(missing.len() <= 100);
            async move { Ok::<_, Failed>(rows(&missing)) }
        })
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        (
            report.keys,
            report.cached,
            report.loaded,
            report.not_found,
            report.failed,
            report.batches
        ),
        (250, 0, 225, 25, 0, 3),
        "{report:?}"
    );
    // Warmed keys are hits, with the TTL asked for.
    let v: Result<String, Failed> = aside
        .get_or_load("warm1:user:5", Ttl::secs(120), || async {
            panic!("a warmed key was loaded again")
        })
        .await;
    assert_eq!(v.unwrap(), "v1:warm1:user:5");
    match cache.ttl("warm1:user:5").await.unwrap() {
        KeyTtl::Expires(d) => assert!(d.as_secs() <= 120 && d.as_secs() >= 100, "{d:?}"),
        other => panic!("{other:?}"),
    }
    // Warming again reads, and loads only what is still missing.
    let again = aside
        .warm(&refs, Ttl::secs(120), 100, |missing| async move {
            assert!(missing.iter().all(|k| k.ends_with('7')), "{missing:?}");
            Ok::<_, Failed>(rows(&missing))
        })
        .await;
    assert_eq!((again.cached, again.loaded, again.not_found), (225, 0, 25));
}

async fn a_failed_batch_is_counted_and_warming_goes_on(cache: Arc<dyn Cache>) {
    let aside = CacheAside::builder(cache.clone()).jitter(0.0).build();
    let keys = key_list("warm2", 30);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let call = AtomicUsize::new(0);
    let report = aside
        .warm(&refs, Ttl::secs(60), 10, |missing| {
            let n = call.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 1 {
                    Err(Failed)
                } else {
                    Ok(rows(&missing))
                }
            }
        })
        .await;
    assert_eq!(
        (
            report.loaded,
            report.not_found,
            report.failed,
            report.batches
        ),
        (18, 2, 10, 3),
        "{report:?}"
    );
    // Nothing was written for the failed batch.
    for key in &keys[10..20] {
        assert!(!cache.exists(key).await.unwrap(), "{key}");
    }
    assert!(cache.exists(&keys[20]).await.unwrap());
}

async fn a_warm_overtaken_by_an_invalidation_does_not_write_back(cache: Arc<dyn Cache>) {
    let aside = CacheAside::builder(cache.clone()).jitter(0.0).build();
    let keys = key_list("warm3", 5);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let writer = aside.clone();
    let report = aside
        .warm(&refs, Ttl::secs(60), 10, |missing| {
            let writer = writer.clone();
            async move {
                // The rows are read, then another request updates warm3:user:1 and
                // invalidates it, before the warm commits.
                let old = rows(&missing);
                writer.invalidate("warm3:user:1").await.unwrap();
                Ok::<_, Failed>(old)
            }
        })
        .await;
    assert_eq!(report.loaded, 5, "{report:?}");
    let v: Result<String, Failed> = aside
        .get_or_load("warm3:user:1", Ttl::secs(60), || async {
            Ok("v2:warm3:user:1".to_owned())
        })
        .await;
    assert_eq!(
        v.unwrap(),
        "v2:warm3:user:1",
        "the warm wrote back a stale row"
    );
    let v: Result<String, Failed> = aside
        .get_or_load("warm3:user:2", Ttl::secs(60), || async {
            panic!("an untouched key was not warmed")
        })
        .await;
    assert_eq!(v.unwrap(), "v1:warm3:user:2");
}

on_every_backend!(
    warms_in_batches_and_leaves_fresh_keys_alone,
    a_failed_batch_is_counted_and_warming_goes_on,
    a_warm_overtaken_by_an_invalidation_does_not_write_back,
);
