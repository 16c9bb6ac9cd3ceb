//! Cache-aside logs a failing cache once per burst, not once per request.
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

#[test]
fn a_failing_cache_logs_once_per_burst_not_once_per_request() {
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
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
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
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings = text.lines().filter(|l| l.contains("cache-aside")).count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.contains("cache_unavailable"), "{text}");
}
