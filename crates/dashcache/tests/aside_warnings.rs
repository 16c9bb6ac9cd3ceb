//! Cache-aside logs a failing cache once per burst, not once per request, and the invalidation
//! log's consumer once per burst, not once per retry.
//!
//! A test binary of its own: `tracing` caches each call site's interest process-wide, and a
//! test elsewhere hitting the same warning with no subscriber installed could race this one.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::{RedisCache, Ttl};
use dashcache_testkit::RedisServer;

#[derive(Debug, Clone, PartialEq)]
struct LoadError;

impl From<LoaderTimeout> for LoadError {
    fn from(_: LoaderTimeout) -> Self {
        LoadError
    }
}

async fn redis(server: &RedisServer, timeout: Duration) -> RedisCache {
    RedisCache::builder(server.url())
        .timeout(timeout)
        .connect()
        .await
        .unwrap()
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `work` on a one-thread runtime (so every task it spawns runs where the subscriber is the
/// default) and returns its output with the warnings logged meanwhile.
fn with_warnings<T>(work: impl std::future::Future<Output = T>) -> (T, String) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = tracing::subscriber::with_default(subscriber, || rt.block_on(work));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[test]
fn a_failing_cache_logs_once_per_burst_not_once_per_request() {
    let ((), text) = with_warnings(async {
        let mut server = RedisServer::start();
        let cache = Arc::new(redis(&server, Duration::from_millis(250)).await);
        server.kill();
        let aside = CacheAside::builder(cache).build();
        for _ in 0..50 {
            let value = aside
                .get_or_load("t:user:1", Ttl::secs(60), || async {
                    Ok::<_, LoadError>(1u8)
                })
                .await;
            assert_eq!(value, Ok(1));
        }
    });
    let warnings = text.lines().filter(|l| l.contains("cache-aside")).count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.contains("cache_unavailable"), "{text}");
}

/// Redis down while entries keep arriving: the consumer retries every one (about once a
/// second each) but says so once per burst window (10 s), not once per retry.
#[cfg(feature = "database")]
#[test]
fn the_log_consumer_warns_once_per_burst_while_redis_is_down() {
    use dashcache::Keys;
    use dashcache::coherent::log::{Consumer, Dialect, InvalidationLog, Mapping};
    use dashcache::coherent::{Follower, Target};

    let ((down_for, retries), text) = with_warnings(async {
        let keys = Keys::new("app", ["user"]).unwrap();
        let mapping_keys = keys.clone();
        let mapping = Mapping::new()
            .table("users", &["id"], move |change, out| {
                for row in &change.rows {
                    let id = row.text("id").unwrap_or_default();
                    out.push(Target::key(mapping_keys.key(["user", id.as_str()])?));
                }
                Ok(())
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        );
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let log = InvalidationLog::new(Dialect::of_url(&url).unwrap(), mapping);
        log.install(&pool).await.unwrap();
        let mut server = RedisServer::start();
        let shared = Arc::new(redis(&server, Duration::from_millis(200)).await);
        let follower =
            Follower::for_namespaces(&keys, ["user"], Duration::from_millis(500)).unwrap();
        let consumer = Consumer::builder(log, url, follower)
            .shared(shared)
            .start()
            .unwrap();
        assert!(
            consumer.ready(Duration::from_secs(20)).await,
            "{consumer:?}"
        );

        server.kill();
        let down = std::time::Instant::now();
        for i in 0..30 {
            sqlx::query("INSERT INTO users (id, name) VALUES ($1, 'x')")
                .bind(format!("u{i}"))
                .execute(&pool)
                .await
                .unwrap();
            consumer.wake();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every entry is still waiting: the consumer kept retrying, it did not give up.
        let retries = consumer.status().retries;
        assert!(consumer.status().queued > 0, "{consumer:?}");
        (down.elapsed(), retries)
    });
    let warnings = text
        .lines()
        .filter(|l| l.contains("invalidation log: the shared cache refused an invalidation"))
        .count();
    assert!(retries >= 2, "{retries} retries in {down_for:?}\n{text}");
    // One line per 10 s window (more only if the machine stretched the test past a window).
    let windows = 1 + down_for.as_secs() / 10;
    assert!(
        (1..=windows as usize).contains(&warnings),
        "{warnings} warnings for {retries} retries in {down_for:?}:\n{text}"
    );
}
