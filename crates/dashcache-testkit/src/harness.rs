//! Caches for the harness's servers, and the backend matrix of scenario tests.

use crate::{RedisCluster, RedisServer};

/// A `RedisCache` for `server` with a deadline generous enough for a loaded 2-core CI machine
/// (only the deadline and breaker tests use the production defaults).
///
/// # Panics
/// When the server does not answer; the message carries its log.
pub async fn redis_cache(server: &RedisServer) -> dashcache::RedisCache {
    dashcache::RedisCache::builder(server.url())
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
}

/// A cluster `RedisCache` for `cluster`, with the same generous deadline as [`redis_cache`].
///
/// # Panics
/// When the cluster does not answer.
pub async fn cluster_cache(cluster: &RedisCluster) -> dashcache::RedisCache {
    dashcache::RedisCache::builder(cluster.url())
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A `HybridCache` over `l2` tracking every key, once its L1 serves.
///
/// # Panics
/// When L1 does not start serving within 10 s.
pub async fn hybrid_cache(l2: dashcache::RedisCache) -> dashcache::HybridCache {
    let hybrid = dashcache::HybridCache::builder(l2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        hybrid.ready(std::time::Duration::from_secs(10)).await,
        "L1 never served: {hybrid:?}"
    );
    hybrid
}

/// One backend of [`on_every_backend!`](crate::on_every_backend), with its servers, which
/// live as long as it does.
#[derive(Debug)]
pub struct Backend {
    cache: std::sync::Arc<dyn dashcache::Cache>,
    redis: Option<dashcache::RedisCache>,
    url: Option<String>,
    clock: Option<dashcache::Clock>,
    _server: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Backend {
    /// The embedded cache, on a manual clock (see [`wait`](Self::wait)).
    pub fn memory() -> Self {
        let clock = dashcache::Clock::manual();
        let cache = dashcache::MemoryCache::builder()
            .clock(clock.clone())
            .build();
        Self {
            cache: std::sync::Arc::new(cache),
            redis: None,
            url: None,
            clock: Some(clock),
            _server: None,
            _cluster: None,
        }
    }

    /// A private `redis-server`.
    ///
    /// # Panics
    /// When it does not start.
    pub async fn redis() -> Self {
        let server = RedisServer::start();
        let cache = redis_cache(&server).await;
        Self::on_redis(cache, server.url(), Some(server), None)
    }

    /// A private Redis Cluster.
    ///
    /// # Panics
    /// When it does not form.
    pub async fn cluster() -> Self {
        let cluster = RedisCluster::start();
        let cache = cluster_cache(&cluster).await;
        Self::on_redis(cache, cluster.url(), None, Some(cluster))
    }

    fn on_redis(
        cache: dashcache::RedisCache,
        url: String,
        server: Option<RedisServer>,
        cluster: Option<RedisCluster>,
    ) -> Self {
        Self {
            cache: std::sync::Arc::new(cache.clone()),
            redis: Some(cache),
            url: Some(url),
            clock: None,
            _server: server,
            _cluster: cluster,
        }
    }

    /// Its cache.
    pub fn cache(&self) -> std::sync::Arc<dyn dashcache::Cache> {
        std::sync::Arc::clone(&self.cache)
    }

    /// Its cache as a `RedisCache`, on Redis and Redis Cluster.
    pub fn redis_cache(&self) -> Option<dashcache::RedisCache> {
        self.redis.clone()
    }

    /// Lets `d` pass for the cache's TTLs: the embedded cache's clock is advanced (no sleep);
    /// a server's real time passes.
    pub async fn wait(&self, d: std::time::Duration) {
        match &self.clock {
            Some(clock) => clock.advance(d),
            None => tokio::time::sleep(d).await,
        }
    }

    /// A second, separate connection to its servers, as another process would have (the same
    /// store for the embedded cache), with the same generous deadline as [`redis_cache`].
    ///
    /// # Panics
    /// When the servers do not answer.
    pub async fn other_connection(&self) -> std::sync::Arc<dyn dashcache::Cache> {
        match &self.url {
            Some(url) => std::sync::Arc::new(
                dashcache::RedisCache::builder(url.clone())
                    .timeout(std::time::Duration::from_secs(5))
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            None => self.cache(),
        }
    }

    /// The URL a service would be given (`None`: the embedded cache).
    pub fn url(&self) -> Option<String> {
        self.url.clone()
    }

    /// What the servers hold (on every node of a cluster): each key with its string value or
    /// set members. Empty for the embedded cache. For tests that prove a secret is stored
    /// nowhere.
    ///
    /// # Panics
    /// When a server does not answer.
    pub async fn stored(&self) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut found = Vec::new();
        if let Some(url) = &self.url {
            for seed in url.split(',') {
                found.extend(stored_on(seed).await);
            }
        }
        found
    }
}

/// What the `redis-server` at `url` holds: each key with its string value or set members.
async fn stored_on(url: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A cluster replica answers reads of its own keys only when asked to (else MOVED); a
    // standalone server refuses the command, which changes nothing.
    let _: redis::RedisResult<()> = redis::cmd("READONLY").query_async(&mut conn).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut found = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let command = match kind.as_str() {
            "set" => "SMEMBERS",
            "string" => "GET",
            _ => {
                found.push((key, Vec::new()));
                continue;
            }
        };
        let values: Vec<Vec<u8>> = if command == "GET" {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            value.into_iter().collect()
        } else {
            redis::cmd(command)
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        };
        found.push((key, values));
    }
    found
}

/// Runs each scenario against every backend — the embedded cache, one Redis, a Redis Cluster:
/// one test module per scenario, with a test per backend, each with servers of its own.
/// Scenarios take the cache (`async fn(Arc<dyn Cache>)`), or whatever the `|backend| expr`
/// given first builds from the [`Backend`].
///
/// ```ignore
/// async fn round_trip(cache: Arc<dyn Cache>) { /* … */ }
/// dashcache_testkit::on_every_backend!(round_trip);
///
/// async fn login(app: &TestApp) { /* … */ }
/// dashcache_testkit::on_every_backend!(|backend| &super::app_on(backend.url()).await; login);
/// ```
#[macro_export]
macro_rules! on_every_backend {
    (|$backend:ident| $make:expr ; $($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    let $backend = $crate::Backend::memory();
                    super::$scenario($make).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let $backend = $crate::Backend::redis().await;
                    super::$scenario($make).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    let $backend = $crate::Backend::cluster().await;
                    super::$scenario($make).await;
                }
            }
        )*
    };
    ($($scenario:ident),* $(,)?) => {
        $crate::on_every_backend!(|backend| backend.cache(); $($scenario),*);
    };
}
