//! Tags on the embedded cache, one Redis and a Redis Cluster: values written with tags,
//! invalidated by tag in one write, fills racing a tag invalidation never served.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashcache::aside::{CacheAside, LoaderTimeout, Outcome};
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, ErrorKind, Keys, Ttl};
use dashcache_testkit::{Backend, on_every_backend};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadFailed;

impl From<LoaderTimeout> for LoadFailed {
    fn from(_: LoaderTimeout) -> Self {
        LoadFailed
    }
}

fn keys() -> Keys {
    Keys::new("t", ["user", "account"]).unwrap()
}

fn aside(cache: Arc<dyn Cache>) -> CacheAside {
    CacheAside::builder(cache)
        .jitter(0.0)
        .tag_prefix("t")
        .build()
}

async fn lookup(aside: &CacheAside, key: &str, tags: &[&str], value: &str) -> (String, Outcome) {
    let value = value.to_owned();
    let lookup = aside
        .load_tagged(key, tags, Ttl::secs(300), move || async move {
            Ok::<_, LoadFailed>(value)
        })
        .await;
    (lookup.result.unwrap(), lookup.outcome)
}

async fn a_tag_invalidation_reaches_every_value_under_it(backend: &Backend) {
    let keys = keys();
    let a = aside(backend.cache());
    let b = aside(backend.other_connection().await);
    let k: Vec<String> = (1..=5)
        .map(|i| keys.key(["account", &i.to_string()]).unwrap())
        .collect();
    let tags: [&[&str]; 5] = [
        &["user:42"],
        &["user:42"],
        &["user:42"],
        &["user:7"],
        &["user:42", "accounts"],
    ];
    for (key, tags) in k.iter().zip(tags) {
        assert_eq!(lookup(&a, key, tags, "v1").await.1, Outcome::Miss);
        assert_eq!(
            lookup(&b, key, tags, "x").await,
            ("v1".into(), Outcome::Hit)
        );
    }
    b.invalidate_tag("user:42").await.unwrap();
    for (i, (key, tags)) in k.iter().zip(tags).enumerate() {
        let expected = if i == 3 {
            ("v1".to_owned(), Outcome::Hit)
        } else {
            ("v2".to_owned(), Outcome::Miss)
        };
        assert_eq!(lookup(&a, key, tags, "v2").await, expected, "{key}");
    }
    a.invalidate_tag("accounts").await.unwrap();
    for (i, (key, tags)) in k.iter().zip(tags).enumerate() {
        let outcome = lookup(&b, key, tags, "v3").await.1;
        assert_eq!(outcome == Outcome::Miss, i == 4, "{key}");
    }
}

/// One write invalidates a thousand values: nothing is listed or deleted, each is checked on
/// its next read.
async fn one_write_invalidates_a_thousand_values(backend: &Backend) {
    let keys = keys();
    let a = aside(backend.cache());
    let all: Vec<String> = (0..1000)
        .map(|i| keys.key(["user", &i.to_string()]).unwrap())
        .collect();
    for key in &all {
        lookup(&a, key, &["every-user"], "old").await;
    }
    a.invalidate_tag("every-user").await.unwrap();
    for key in &all {
        assert_eq!(
            lookup(&a, key, &["every-user"], "new").await,
            ("new".to_owned(), Outcome::Miss)
        );
    }
}

async fn a_fill_paused_across_a_tag_invalidation_is_never_served(backend: &Backend) {
    let key = keys().key(["user", "42"]).unwrap();
    let a = aside(backend.cache());
    let b = aside(backend.other_connection().await);
    let row = Arc::new(std::sync::Mutex::new("old".to_owned()));
    let (read_tx, read_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let task = {
        let (a, key, row) = (a.clone(), key.clone(), Arc::clone(&row));
        tokio::spawn(async move {
            a.get_or_load_tagged(&key, &["user:42"], Ttl::secs(300), move || async move {
                let value = row.lock().unwrap().clone();
                let _ = read_tx.send(());
                let _ = go_rx.await;
                Ok::<_, LoadFailed>(value)
            })
            .await
        })
    };
    read_rx.await.unwrap();
    *row.lock().unwrap() = "new".to_owned();
    b.invalidate_tag("user:42").await.unwrap();
    go_tx.send(()).unwrap();
    assert_eq!(
        task.await.unwrap(),
        Ok("old".to_owned()),
        "its caller gets it"
    );
    for instance in [&a, &b] {
        assert_eq!(lookup(instance, &key, &["user:42"], "new").await.0, "new");
    }
}

async fn a_tag_invalidated_value_is_not_served_stale(backend: &Backend) {
    let key = keys().key(["user", "9"]).unwrap();
    let a = CacheAside::builder(backend.cache())
        .jitter(0.0)
        .tag_prefix("t")
        .stale_for(Duration::from_secs(600))
        .build();
    lookup(&a, &key, &["user:9"], "old").await;
    a.invalidate_tag("user:9").await.unwrap();
    let failed = a
        .load_tagged(&key, &["user:9"], Ttl::secs(300), || async {
            Err::<String, _>(LoadFailed)
        })
        .await;
    assert_eq!(failed.result, Err(LoadFailed));
}

async fn bad_tags_are_typed_errors_and_never_widen(backend: &Backend) {
    let key = keys().key(["user", "1"]).unwrap();
    let a = aside(backend.cache());
    let err = a.invalidate_tag("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // An empty tag: the loader answers and nothing is written.
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let loads = Arc::clone(&loads);
        let lookup = a
            .load_tagged(&key, &[""], Ttl::secs(300), move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, LoadFailed>("v".to_owned())
            })
            .await;
        assert_eq!(lookup.outcome, Outcome::Bypassed);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert!(backend.cache().get(&key).await.unwrap().is_none());
    // Braces, globs and separators stay inside their tag: "a" is not "a}b" nor "a*".
    let k2 = keys().key(["user", "2"]).unwrap();
    lookup(&a, &k2, &["a"], "v1").await;
    for other in ["a}b", "a*", "{a}", "a:"] {
        a.invalidate_tag(other).await.unwrap();
    }
    assert_eq!(
        lookup(&a, &k2, &["a"], "v2").await,
        ("v1".into(), Outcome::Hit)
    );
    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(lookup(&a, &k2, &too_many, "v3").await.1, Outcome::Bypassed);
}

on_every_backend!(|backend| &backend;
    a_tag_invalidation_reaches_every_value_under_it,
    one_write_invalidates_a_thousand_values,
    a_fill_paused_across_a_tag_invalidation_is_never_served,
    a_tag_invalidated_value_is_not_served_stale,
    bad_tags_are_typed_errors_and_never_widen,
);

/// With metrics: lookups of tagged values count like any other.
#[tokio::test]
async fn tagged_lookups_are_counted() {
    let keys = keys();
    let metrics = CacheMetrics::new(&keys);
    let a = CacheAside::builder(Arc::new(dashcache::MemoryCache::new()))
        .metrics(metrics.clone())
        .build();
    let key = keys.key(["user", "1"]).unwrap();
    lookup(&a, &key, &["x"], "v").await;
    lookup(&a, &key, &["x"], "v").await;
    let stats = metrics.snapshot("user");
    assert_eq!((stats.hits, stats.misses), (1, 1));
}
