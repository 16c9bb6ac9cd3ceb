//! Fenced fills, on the embedded cache, one Redis and a Redis Cluster: a loader paused between
//! its read of the source of truth and its commit, while another instance updates the source
//! and invalidates the key. The stale value must never be served afterwards.
//!
//! "Instances" are separate `CacheAside`s (separate single-flight tables) over separate
//! connections to the same servers, as two processes would be.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashcache::aside::{CacheAside, LoaderTimeout, Outcome};
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, Keys, Ttl};
use dashcache_testkit::{Backend, on_every_backend};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq)]
struct TimedOut;

impl From<LoaderTimeout> for TimedOut {
    fn from(_: LoaderTimeout) -> Self {
        TimedOut
    }
}

fn keys() -> Keys {
    Keys::new("t", ["user"]).unwrap()
}

/// The source of truth: one row per id, and how many times it was read.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<String, String>>,
    reads: AtomicUsize,
}

impl Db {
    fn read(&self, id: &str) -> String {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.rows
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn write(&self, id: &str, value: &str) {
        self.rows
            .lock()
            .unwrap()
            .insert(id.to_owned(), value.to_owned());
    }
}

fn aside(cache: Arc<dyn Cache>, metrics: &CacheMetrics) -> CacheAside {
    CacheAside::builder(cache)
        .jitter(0.0)
        .metrics(metrics.clone())
        .build()
}

/// A load of `key` from `db` that reads, says so, and waits for `go` before it returns.
fn paused_load(
    aside: &CacheAside,
    db: &Arc<Db>,
    key: &str,
) -> (
    tokio::task::JoinHandle<dashcache::aside::Lookup<String, TimedOut>>,
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
) {
    let (read_tx, read_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (aside, db, key) = (aside.clone(), Arc::clone(db), key.to_owned());
    let task = tokio::spawn(async move {
        aside
            .load(&key, Ttl::secs(300), move || async move {
                let row = db.read("42");
                let _ = read_tx.send(());
                let _ = go_rx.await;
                Ok(row)
            })
            .await
    });
    (task, read_rx, go_tx)
}

/// What the cache serves for `key` now, through a fresh `CacheAside` whose loader reads `db`.
async fn served(cache: Arc<dyn Cache>, db: &Arc<Db>, key: &str) -> String {
    let db = Arc::clone(db);
    CacheAside::builder(cache)
        .build()
        .get_or_load(key, Ttl::secs(300), move || async move {
            Ok::<_, TimedOut>(db.read("42"))
        })
        .await
        .unwrap()
}

async fn a_fill_paused_across_an_invalidation_is_not_committed(backend: &Backend) {
    let key = keys().key(["user", "42"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let db = Arc::new(Db::default());
    db.write("42", "old");
    let a = aside(backend.cache(), &metrics);
    let b = aside(backend.other_connection().await, &metrics);

    let (task, read, go) = paused_load(&a, &db, &key);
    read.await.unwrap();
    // Instance B updates the row and invalidates while A holds the old row.
    db.write("42", "new");
    b.invalidate(&key).await.unwrap();
    go.send(()).unwrap();
    let lookup = task.await.unwrap();
    assert_eq!(
        lookup.result,
        Ok("old".to_owned()),
        "A's caller gets its value"
    );
    assert_eq!(lookup.outcome, Outcome::Miss);
    let stats = metrics.snapshot("user");
    assert_eq!((stats.fills_committed, stats.fills_rejected), (0, 1));

    assert!(
        backend.cache().get(&key).await.unwrap().is_none(),
        "the stale fill landed"
    );
    assert_eq!(
        served(backend.other_connection().await, &db, &key).await,
        "new"
    );
    assert_eq!(served(backend.cache(), &db, &key).await, "new");
}

async fn a_fill_that_began_after_the_invalidation_commits(backend: &Backend) {
    let key = keys().key(["user", "42"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let db = Arc::new(Db::default());
    db.write("42", "v1");
    let a = aside(backend.cache(), &metrics);
    let b = aside(backend.other_connection().await, &metrics);
    b.invalidate(&key).await.unwrap();
    let (task, read, go) = paused_load(&a, &db, &key);
    read.await.unwrap();
    go.send(()).unwrap();
    assert_eq!(task.await.unwrap().result, Ok("v1".to_owned()));
    assert_eq!(metrics.snapshot("user").fills_committed, 1);
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(served(backend.cache(), &db, &key).await, "v1");
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads,
        "served from the cache"
    );
    assert!(b.invalidate(&key).await.unwrap(), "the value was there");
    assert!(!b.invalidate(&key).await.unwrap(), "and is gone");
}

async fn one_fill_commits_per_generation(backend: &Backend) {
    let key = keys().key(["user", "42"]).unwrap();
    let metrics = CacheMetrics::new(&keys());
    let db = Arc::new(Db::default());
    db.write("42", "v1");
    let a = aside(backend.cache(), &metrics);
    let b = aside(backend.other_connection().await, &metrics);
    let (first, read_a, go_a) = paused_load(&a, &db, &key);
    let (second, read_b, go_b) = paused_load(&b, &db, &key);
    read_a.await.unwrap();
    read_b.await.unwrap();
    go_a.send(()).unwrap();
    first.await.unwrap();
    go_b.send(()).unwrap();
    second.await.unwrap();
    let stats = metrics.snapshot("user");
    assert_eq!((stats.fills_committed, stats.fills_rejected), (1, 1));
}

async fn a_bulk_fill_loses_only_the_invalidated_keys(backend: &Backend) {
    let keys = keys();
    let ids = ["1", "2", "3"];
    let all: Vec<String> = ids.iter().map(|i| keys.key(["user", i]).unwrap()).collect();
    let metrics = CacheMetrics::new(&keys);
    let a = aside(backend.cache(), &metrics);
    let b = aside(backend.other_connection().await, &metrics);
    let (read_tx, read_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let task = {
        let (a, all) = (a.clone(), all.clone());
        tokio::spawn(async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            a.get_many_or_load(&refs, Ttl::secs(300), move |missing| async move {
                let rows: HashMap<String, String> =
                    missing.into_iter().map(|k| (k, "old".to_owned())).collect();
                let _ = read_tx.send(());
                let _ = go_rx.await;
                Ok::<_, TimedOut>(rows)
            })
            .await
        })
    };
    read_rx.await.unwrap();
    b.invalidate(&all[1]).await.unwrap();
    go_tx.send(()).unwrap();
    let values = task.await.unwrap().unwrap();
    assert_eq!(values, vec![Some("old".to_owned()); 3]);
    let stored = backend
        .cache()
        .get_many(&all.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(stored[0].is_some() && stored[2].is_some());
    assert!(stored[1].is_none(), "the invalidated key was filled");
    let stats = metrics.snapshot("user");
    assert_eq!((stats.fills_committed, stats.fills_rejected), (2, 1));
}

/// Without the fence the same race writes the old value back: the test above can fail.
async fn unfenced_fills_write_the_stale_value_back(backend: &Backend) {
    let key = keys().key(["user", "42"]).unwrap();
    let db = Arc::new(Db::default());
    db.write("42", "old");
    let a = CacheAside::builder(backend.cache()).unfenced().build();
    let b = CacheAside::builder(backend.other_connection().await)
        .unfenced()
        .build();
    let (task, read, go) = paused_load(&a, &db, &key);
    read.await.unwrap();
    db.write("42", "new");
    b.invalidate(&key).await.unwrap();
    go.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(served(backend.cache(), &db, &key).await, "old");
}

on_every_backend!(|backend| &backend;
    a_fill_paused_across_an_invalidation_is_not_committed,
    a_fill_that_began_after_the_invalidation_commits,
    one_fill_commits_per_generation,
    a_bulk_fill_loses_only_the_invalidated_keys,
    unfenced_fills_write_the_stale_value_back,
);
