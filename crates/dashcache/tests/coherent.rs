//! The cache follows the database: instances (a hybrid cache, a follower, a consumer each) over
//! one Redis and one database (SQLite and PostgreSQL), with writes made by plain SQL on another
//! connection. Every read is checked against the staleness bound Δ_db.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)] // a panic is how a test fails

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::coherent::log::{Consumer, Dialect, InvalidationLog, Mapping};
use dashcache::coherent::{Follower, Gated, Target};
use dashcache::{Cache, HybridCache, Keys, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::{History, PostgresServer, Proxy, RedisServer};
use sqlx::Connection as _;

/// The bound the tests run with.
const DELTA_DB: Duration = Duration::from_millis(500);

fn keys() -> Keys {
    Keys::new("app", ["user", "rate"]).unwrap()
}

/// `users(id, name)`: a change invalidates `app:user:<id>`.
fn log(dialect: Dialect) -> InvalidationLog {
    let keys = keys();
    let mapping = Mapping::new()
        .table("users", &["id"], move |change, out| {
            for row in &change.rows {
                let id = row.text("id").unwrap_or_default();
                out.push(Target::key(keys.key(["user", id.as_str()])?));
            }
            Ok(())
        })
        .unwrap();
    InvalidationLog::new(dialect, mapping)
}

#[derive(Debug, Clone)]
struct DbError(#[allow(dead_code)] String);

impl From<LoaderTimeout> for DbError {
    fn from(e: LoaderTimeout) -> Self {
        Self(e.to_string())
    }
}

/// A database and its URL (the schema's, on PostgreSQL).
struct Db {
    url: String,
    pool: sqlx::AnyPool,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<dashcache_testkit::PgSchema>,
}

impl Db {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        );
        Self::open(url, Some(dir), None).await
    }

    async fn postgres(server: &PostgresServer) -> Self {
        let schema = server.schema();
        Self::open(schema.url().to_owned(), None, Some(schema)).await
    }

    async fn open(
        url: String,
        dir: Option<tempfile::TempDir>,
        schema: Option<dashcache_testkit::PgSchema>,
    ) -> Self {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        if url.starts_with("sqlite") {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let db = Self {
            url,
            pool,
            _dir: dir,
            _schema: schema,
        };
        db.log().install(&db.pool).await.unwrap();
        db
    }

    fn log(&self) -> InvalidationLog {
        log(Dialect::of_url(&self.url).unwrap())
    }

    async fn set_name(&self, id: &str, name: &str) {
        sqlx::query(
            "INSERT INTO users (id, name) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        )
        .bind(id.to_owned())
        .bind(name.to_owned())
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

/// One instance: a hybrid cache over Redis (possibly through a proxy), following the log.
struct Instance {
    aside: CacheAside,
    consumer: Consumer,
    pool: sqlx::AnyPool,
}

impl Instance {
    async fn start(redis_url: &str, db: &Db) -> Self {
        let l2 = RedisCache::builder(redis_url)
            .timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
        let hybrid = HybridCache::builder(l2.clone())
            .track_namespaces(&keys(), ["user"])
            .unwrap()
            .staleness(Duration::from_millis(500))
            .follow(follower.clone())
            .build()
            .unwrap();
        let consumer = Consumer::builder(db.log(), db.url.clone(), follower)
            .shared(Arc::new(l2))
            .local(hybrid.clone())
            .sweep_pause(Duration::from_millis(50))
            .start()
            .unwrap();
        assert!(
            consumer.ready(Duration::from_secs(20)).await,
            "{consumer:?}"
        );
        let aside = CacheAside::builder(Arc::new(hybrid.clone()) as Arc<dyn Cache>)
            .jitter(0.0)
            .build();
        Self {
            aside,
            consumer,
            pool: db.pool.clone(),
        }
    }

    /// The user's name, cache-aside.
    async fn name(&self, id: &str) -> Option<String> {
        let key = keys().key(["user", id]).unwrap();
        let pool = self.pool.clone();
        let id = id.to_owned();
        self.aside
            .get_or_load_optional(&key, Ttl::secs(3600), move || async move {
                let row: Option<(String,)> = sqlx::query_as("SELECT name FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                    .map_err(|e| DbError(e.to_string()))?;
                Ok::<_, DbError>(row.map(|r| r.0))
            })
            .await
            .unwrap()
    }
}

/// Reads `id` on every instance until `stop`, recording each read.
fn readers(
    instances: &[Arc<Instance>],
    history: &Arc<History>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let (instance, history, stop) =
                (Arc::clone(instance), Arc::clone(history), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let began = Instant::now();
                    let got = instance.name("u1").await;
                    let version = got
                        .and_then(|v| v.strip_prefix('v')?.parse().ok())
                        .unwrap_or(0);
                    history.read(began, version, &format!("instance {i}"));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

/// Two instances; plain SQL changes the row on another connection; `fault` does what it does
/// to Redis meanwhile; no read on either instance is stale beyond Δ_db.
async fn plain_sql_changes_reach_every_instance(db: Db, fault: Fault) {
    let server = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap());
    db.set_name("u1", "v0").await;
    let a = Arc::new(Instance::start(&proxy.redis_url(), &db).await);
    let b = Arc::new(Instance::start(&server.url(), &db).await);
    assert_eq!(a.name("u1").await.as_deref(), Some("v0"));
    assert_eq!(b.name("u1").await.as_deref(), Some("v0"));
    let history = Arc::new(History::new(DELTA_DB));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = readers(&[Arc::clone(&a), Arc::clone(&b)], &history, &stop);
    for version in 1..=30u64 {
        if version == 10 {
            fault.begin(&server, &proxy).await;
        }
        if version == 20 {
            fault.end(&server, &proxy).await;
        }
        db.set_name("u1", &format!("v{version}")).await;
        history.wrote(version);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Long enough after the last write for every instance to have caught up.
    tokio::time::sleep(DELTA_DB * 3).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    history.assert_clean();
    for instance in [&a, &b] {
        assert_eq!(instance.name("u1").await.as_deref(), Some("v30"));
        let status = instance.consumer.status();
        assert!(status.entries >= 30, "{status:?}");
    }
    println!(
        "{fault:?}: {} reads; a {:?}; b {:?}",
        history.reads(),
        a.consumer.status(),
        b.consumer.status()
    );
    drop(db);
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Instance A's link to Redis is partitioned (Redis keeps its data).
    Partition,
    /// Redis is frozen (SIGSTOP).
    Freeze,
    /// `CLIENT PAUSE … WRITE`, as a failover does to the old primary.
    PauseWrites,
}

impl Fault {
    async fn begin(self, server: &RedisServer, proxy: &Proxy) {
        match self {
            Fault::None => {}
            Fault::Partition => proxy.blackhole(),
            Fault::Freeze => server.freeze(),
            Fault::PauseWrites => {
                let _: () = server
                    .command(&[b"CLIENT", b"PAUSE", b"3000", b"WRITE"])
                    .await;
            }
        }
    }

    async fn end(self, server: &RedisServer, proxy: &Proxy) {
        match self {
            Fault::None | Fault::PauseWrites => {}
            Fault::Partition => proxy.restore(),
            Fault::Freeze => server.thaw(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_plain_sql_changes_reach_every_instance() {
    plain_sql_changes_reach_every_instance(Db::sqlite().await, Fault::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_partition_from_redis_serves_nothing_stale() {
    plain_sql_changes_reach_every_instance(Db::sqlite().await, Fault::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plain_sql_changes_reach_every_instance() {
    let server = PostgresServer::start();
    plain_sql_changes_reach_every_instance(Db::postgres(&server).await, Fault::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_partition_from_redis_serves_nothing_stale() {
    let server = PostgresServer::start();
    plain_sql_changes_reach_every_instance(Db::postgres(&server).await, Fault::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_frozen_redis_serves_nothing_stale() {
    let server = PostgresServer::start();
    plain_sql_changes_reach_every_instance(Db::postgres(&server).await, Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_paused_writes_serve_nothing_stale() {
    plain_sql_changes_reach_every_instance(Db::sqlite().await, Fault::PauseWrites).await;
}

/// Two transactions commit in the opposite order of their sequence numbers: the consumer
/// applies both, and no sequence number is skipped, through a killed connection and a
/// restarted server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_entries_committed_out_of_order_are_all_applied_without_gaps() {
    let mut server = PostgresServer::start();
    let db = Db::postgres(&server).await;
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let consumer = {
        let seen = Arc::clone(&seen);
        Consumer::builder(db.log(), db.url.clone(), follower.clone())
            .shared(Arc::clone(&cache))
            .sweep_pause(Duration::from_millis(10))
            .on_entry(move |seq| {
                seen.lock().unwrap().insert(seq);
            })
            .start()
            .unwrap()
    };
    assert!(consumer.ready(Duration::from_secs(20)).await);

    // T1 takes the lower sequence number and commits last.
    let mut t1 = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut t2 = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut t1).await.unwrap();
    sqlx::query("INSERT INTO users (id, name) VALUES ('first', 'v1')")
        .execute(&mut t1)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut t2).await.unwrap();
    sqlx::query("INSERT INTO users (id, name) VALUES ('second', 'v1')")
        .execute(&mut t2)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut t2).await.unwrap();
    wait_for(|| seen.lock().unwrap().len() == 1, "the second commit").await;
    // The consumer has read past T1's sequence number; T1 commits now.
    sqlx::query("COMMIT").execute(&mut t1).await.unwrap();
    wait_for(|| seen.lock().unwrap().len() == 2, "the first commit").await;

    // The consumer's connection is killed, then the server restarts, while rows change.
    for i in 0..20 {
        db.set_name(&format!("k{i}"), "v").await;
        if i == 5 {
            server.terminate("dashcache-consumer");
        }
    }
    // The test server runs with `synchronous_commit=off`: flush what committed, so the restart
    // loses nothing (a restart that loses commits is a database going back: tested apart).
    server.exec("CHECKPOINT");
    server.restart();
    let db = Db {
        pool: sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&db.url)
            .await
            .unwrap(),
        ..db
    };
    for i in 20..40 {
        db.set_name(&format!("k{i}"), "v").await;
    }
    let want: BTreeSet<i64> =
        sqlx::query_as::<_, (i64,)>("SELECT seq FROM dashcache_invalidations ORDER BY seq")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
    assert_eq!(want.len(), 42, "every commit survived the restart");
    wait_for(
        || seen.lock().unwrap().is_superset(&want),
        "every entry after a killed connection and a restart",
    )
    .await;
    assert!(
        consumer.ready(Duration::from_secs(20)).await,
        "the proof came back: {consumer:?}"
    );
    assert!(consumer.status().connections >= 3, "{consumer:?}");
}

/// A gated embedded cache: the proof lapses while the database is away, and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_embedded_cache_follows_the_log_and_lapses_without_it() {
    let db = Db::sqlite().await;
    let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
    let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let gated: Arc<dyn Cache> = Arc::new(Gated::new(Arc::clone(&memory), follower.clone()));
    let consumer = Consumer::builder(db.log(), db.url.clone(), follower.clone())
        .shared(Arc::clone(&memory))
        .sweep_pause(Duration::from_millis(10))
        .start()
        .unwrap();
    proven_and_swept(&consumer).await;
    let key = keys().key(["user", "u1"]).unwrap();
    gated
        .set(&key, bytes::Bytes::from_static(b"cached"), Ttl::secs(60))
        .await
        .unwrap();
    assert!(gated.get(&key).await.unwrap().is_some());
    db.set_name("u1", "v1").await;
    consumer.wake();
    wait_for_async(
        || async { gated.get(&key).await.unwrap().is_none() },
        "eviction",
    )
    .await;
    // Without the consumer, the proof lapses: nothing coherent is answered.
    gated
        .set(&key, bytes::Bytes::from_static(b"cached"), Ttl::secs(60))
        .await
        .unwrap();
    drop(consumer);
    tokio::time::sleep(DELTA_DB * 2).await;
    assert!(!follower.proven());
    assert_eq!(gated.get(&key).await.unwrap(), None);
    assert!(
        memory.get(&key).await.unwrap().is_some(),
        "still held, not served"
    );
}

/// Retention keeps what a live consumer still needs and removes the rest; a consumer that was
/// forgotten (away past the liveness window) drops what it cannot prove before it serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_follows_live_consumers_and_a_forgotten_one_sweeps() {
    let db = Db::sqlite().await;
    let count = |pool: sqlx::AnyPool, table: &'static str| async move {
        sqlx::query_as::<_, (i64,)>(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap()
            .0
    };
    let start = |liveness: Duration| {
        let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
        let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
        Consumer::builder(db.log(), db.url.clone(), follower)
            .shared(memory)
            .sweep_pause(Duration::from_millis(10))
            .liveness(liveness)
            .retention_every(Duration::from_millis(200))
            .start()
            .unwrap()
    };
    // A consumer that stops early: registered, never past the first entries.
    let gone = start(Duration::from_secs(600));
    assert!(gone.ready(Duration::from_secs(20)).await);
    drop(gone);
    let live = start(Duration::from_secs(2));
    assert!(live.ready(Duration::from_secs(20)).await);
    for i in 0..10 {
        db.set_name(&format!("r{i}"), "v").await;
    }
    live.wake();
    wait_for(|| live.status().entries >= 10, "the entries").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        count(db.pool.clone(), "dashcache_invalidations").await,
        10,
        "kept for the stopped consumer while it may come back"
    );
    // Past the liveness window it is forgotten, and what only it needed goes.
    let started = Instant::now();
    while count(db.pool.clone(), "dashcache_invalidations").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "{live:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(db.pool.clone(), "dashcache_consumers").await, 1);
    // The live one is forgotten too (as if it had been away): it sweeps and proves again.
    let sweeps = live.status().sweeps;
    sqlx::query("DELETE FROM dashcache_consumers")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for(|| live.status().sweeps > sweeps, "a sweep").await;
    assert!(live.ready(Duration::from_secs(20)).await, "{live:?}");
    assert_eq!(count(db.pool.clone(), "dashcache_consumers").await, 1);
}

/// An entry appended in the caller's transaction commits with it, and never without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_explicit_entries_commit_with_their_transaction() {
    let server = PostgresServer::start();
    let db = Db::postgres(&server).await;
    let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
    let consumer = Consumer::builder(db.log(), db.url.clone(), follower)
        .shared(Arc::clone(&memory))
        .sweep_pause(Duration::from_millis(10))
        .start()
        .unwrap();
    proven_and_swept(&consumer).await;
    let key = keys().key(["user", "x"]).unwrap();
    let version = keys().key(["rate", "v"]).unwrap();
    for k in [&key, &version] {
        memory
            .set(k, bytes::Bytes::from_static(b"1"), Ttl::secs(60))
            .await
            .unwrap();
    }
    let targets = [
        Target::key(key.clone()),
        Target::version(version.clone(), Ttl::secs(60)),
    ];
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    db.log().append(&mut conn, &targets).await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    tokio::time::sleep(DELTA_DB).await;
    assert!(
        memory.exists(&key).await.unwrap(),
        "a rolled-back entry applies nothing"
    );
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    db.log().append(&mut conn, &targets).await.unwrap();
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    wait_for_async(
        || async { !memory.exists(&key).await.unwrap() },
        "the committed entry",
    )
    .await;
    assert_ne!(
        memory.get(&version).await.unwrap(),
        Some(bytes::Bytes::from_static(b"1")),
        "the version was replaced"
    );
}

/// Regression: an entry whose key no cache takes (empty, or over the key limit) was retried
/// for ever, and every entry after it waited behind it: the whole fleet stopped catching up.
/// Now it is swept over, and the entries after it are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_no_cache_takes_is_swept_over_not_retried_for_ever() {
    let db = Db::sqlite().await;
    let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
    let consumer = Consumer::builder(db.log(), db.url.clone(), follower.clone())
        .shared(Arc::clone(&memory))
        .sweep_pause(Duration::from_millis(10))
        .start()
        .unwrap();
    assert!(consumer.ready(Duration::from_secs(20)).await);
    let sweeps = consumer.status().sweeps;
    for bad in [
        r#"{"k":[""],"v":[]}"#.to_owned(),
        format!(r#"{{"k":["{}"],"v":[]}}"#, "x".repeat(2000)),
    ] {
        sqlx::query("INSERT INTO dashcache_invalidations (source, op, data, created_at) VALUES ('', 'X', $1, 0)")
            .bind(bad)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let key = keys().key(["user", "after"]).unwrap();
    memory
        .set(&key, bytes::Bytes::from_static(b"old"), Ttl::secs(60))
        .await
        .unwrap();
    db.set_name("after", "v").await;
    consumer.wake();
    wait_for_async(
        || async { !memory.exists(&key).await.unwrap() },
        "the entry after",
    )
    .await;
    wait_for(
        || consumer.status().sweeps > sweeps,
        "a sweep over the bad entries",
    )
    .await;
    wait_for(
        || consumer.status().queued == 0 && !consumer.status().follower.overflow,
        "the queue drained",
    )
    .await;
    assert!(
        consumer.ready(Duration::from_secs(20)).await,
        "{consumer:?}"
    );
}

/// A burst larger than the queue's bound: memory stays bounded (the backlog is swept instead),
/// nothing is left pending, and the proof comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_bound_is_swept_and_the_proof_comes_back() {
    let db = Db::sqlite().await;
    let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
    let consumer = Consumer::builder(db.log(), db.url.clone(), follower.clone())
        .shared(Arc::clone(&memory))
        .sweep_pause(Duration::from_millis(10))
        .max_queued(20)
        .page(50)
        .start()
        .unwrap();
    assert!(consumer.ready(Duration::from_secs(20)).await);
    let sweeps = consumer.status().sweeps;
    let mut tx = db.pool.begin().await.unwrap();
    for i in 0..500 {
        sqlx::query("INSERT INTO users (id, name) VALUES ($1, 'v')")
            .bind(format!("burst{i}"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    consumer.wake();
    wait_for(|| consumer.status().entries >= 500, "the burst read").await;
    wait_for(|| consumer.status().sweeps > sweeps, "a sweep").await;
    wait_for(
        || {
            let s = consumer.status();
            s.queued <= 20 && s.follower.pending == 0 && !s.follower.overflow
        },
        "the queue drained and overflow over",
    )
    .await;
    assert!(
        consumer.ready(Duration::from_secs(20)).await,
        "{consumer:?}"
    );
}

/// A database replaced by an older copy (its log's newest entry is behind the cursor): the
/// consumer drops what it cannot prove and follows the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_went_back_is_followed_again() {
    let db = Db::sqlite().await;
    let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let follower = Follower::for_namespaces(&keys(), ["user"], DELTA_DB).unwrap();
    let consumer = Consumer::builder(db.log(), db.url.clone(), follower)
        .shared(Arc::clone(&memory))
        .sweep_pause(Duration::from_millis(10))
        .start()
        .unwrap();
    assert!(consumer.ready(Duration::from_secs(20)).await);
    for i in 0..5 {
        db.set_name(&format!("b{i}"), "v").await;
    }
    consumer.wake();
    wait_for(|| consumer.status().entries >= 5, "the entries").await;
    let sweeps = consumer.status().sweeps;
    // What an older copy looks like: a shorter log.
    sqlx::query("DELETE FROM dashcache_invalidations")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'dashcache_invalidations'")
        .execute(&db.pool)
        .await
        .unwrap();
    let key = keys().key(["user", "b0"]).unwrap();
    memory
        .set(&key, bytes::Bytes::from_static(b"old"), Ttl::secs(60))
        .await
        .unwrap();
    db.set_name("b0", "new").await;
    consumer.wake();
    wait_for(|| consumer.status().sweeps > sweeps, "a sweep").await;
    wait_for_async(
        || async { !memory.exists(&key).await.unwrap() },
        "the change after",
    )
    .await;
    assert!(
        consumer.ready(Duration::from_secs(20)).await,
        "{consumer:?}"
    );
}

/// Three instances install the log at once on a fresh PostgreSQL schema, then again: none
/// fails, and the second time no DDL runs (no lock on the mapped tables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_installs_all_succeed() {
    let server = PostgresServer::start();
    let schema = server.schema();
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(6)
        .connect(schema.url())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let log = log(Dialect::Postgres);
    for _ in 0..2 {
        let installs = (0..3).map(|_| log.install(&pool));
        for result in futures::future::join_all(installs).await {
            result.unwrap();
        }
    }
    // A long transaction on the table does not stop an instance that finds the log in place.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS SHARE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), log.install(&pool))
        .await
        .expect("no wait for the table's lock")
        .unwrap();
    holder.rollback().await.unwrap();
}

/// Four instances apply each entry: Redis is written about once per target, not four times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_write_each_entry_about_once() {
    let server = RedisServer::start();
    let db = Db::sqlite().await;
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(Instance::start(&server.url(), &db).await);
    }
    for i in 0..200 {
        db.set_name(&format!("w{i}"), "v").await;
    }
    wait_for(
        || instances.iter().all(|i| i.consumer.status().applied >= 200),
        "every instance applied every entry",
    )
    .await;
    let written: u64 = instances.iter().map(|i| i.consumer.status().written).sum();
    let per_entry = written as f64 / 200.0;
    println!("Redis writes per log entry with 4 instances: {per_entry:.2}");
    assert!(per_entry < 2.0, "{per_entry} writes per entry");
}

/// Waits until `consumer` is proven and its first sweep is done. The first consumer of a log
/// sweeps the shared cache once; readers are kept off the cache meanwhile, but a test that puts
/// a value there itself must wait, or the sweep may take it.
async fn proven_and_swept(consumer: &Consumer) {
    assert!(
        consumer.ready(Duration::from_secs(20)).await,
        "{consumer:?}"
    );
    wait_for(
        || consumer.status().queued == 0 && !consumer.status().follower.overflow,
        "the first sweep",
    )
    .await;
}

async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_async<F, Fut>(mut done: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
