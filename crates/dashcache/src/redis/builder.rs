//! [`RedisCacheBuilder`]: the URL, deadlines, breaker and limits of a [`RedisCache`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::cluster::ClusterRouter;
use super::conn::Backend;
use super::deadline::Deadlines;
use super::scripts::Scripts;
use super::sentinel::{SentinelRouter, SentinelUrl, parse_url as parse_sentinel_url};
use super::tls::{TlsOptions, connection_infos};
use super::{BreakerConfig, Breakers, Inner, RedisCache};
use crate::cache::Cache;
use crate::cache::Limits;
use crate::error::{Error, Result};
use crate::url::{cluster_seeds, mask_url};
use crate::vars;

/// Configures a [`RedisCache`]; see [`RedisCache::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisCacheBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Option<Duration>,
    sweep_timeout: Option<Duration>,
    breaker: BreakerConfig,
    limits: Limits,
    scan_count: u32,
    cluster: bool,
    tls: TlsOptions,
    sentinel_auth: Option<SentinelAuth>,
}

/// How the sentinels themselves are logged in to (not the master: the URL says that).
#[derive(Clone)]
struct SentinelAuth {
    username: Option<String>,
    password: String,
}

impl fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("url", &mask_url(&self.url))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("sweep_timeout", &self.sweep_timeout)
            .field("breaker", &self.breaker)
            .field("limits", &self.limits)
            .field("scan_count", &self.scan_count)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .field(
                "sentinel_auth",
                &self
                    .sentinel_auth
                    .as_ref()
                    .map(|auth| (auth.username.as_deref().unwrap_or("default"), "********")),
            )
            .finish()
    }
}

impl RedisCacheBuilder {
    /// The deadline of every operation, connection included (default 250 ms). For
    /// `delete_pattern` it bounds each `SCAN` / `UNLINK` step; see
    /// [`sweep_timeout`](Self::sweep_timeout) for the whole.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = dashcache::RedisCache::builder("redis://127.0.0.1").timeout(Duration::from_millis(100));
    /// # let _ = b;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of one connection attempt (default: the operation deadline).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The deadline of a whole `delete_pattern` or [`RedisCache::sweep`] (default 30 s; `None`:
    /// unbounded, for an operator's tool that reports progress). Past it the sweep stops with
    /// `Timeout`; what it deleted stays deleted.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = dashcache::RedisCache::builder("redis://127.0.0.1")
    ///     .sweep_timeout(Some(Duration::from_secs(5)));
    /// # let _ = b;
    /// ```
    pub fn sweep_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.sweep_timeout = timeout.into();
        self
    }

    /// The circuit breaker's thresholds (default: open after 5 consecutive transient failures,
    /// probe after 500 ms).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// The key and value size limits (default 1 KiB keys, 8 MiB values).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The `COUNT` hint of each `SCAN` step of `delete_pattern` (default 1000, at least 500):
    /// large enough to sweep quickly, small enough that each step stays short on the server.
    pub fn scan_count(mut self, count: u32) -> Self {
        self.scan_count = count.max(500);
        self
    }

    /// Talks to a Redis Cluster, the URL being one seed node (several comma-separated seeds,
    /// or a `redis+cluster://` URL, select the cluster too). See the module docs for what each
    /// method guarantees there.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// TLS settings for a `rediss://` URL: a CA bundle, a client certificate (see
    /// [`TlsOptions`]). A `rediss://` URL without them verifies the server against the
    /// system's roots.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The credentials the sentinels of a `redis+sentinel://` URL ask for (their own
    /// `requirepass` or ACL user), when they differ from none. The URL's credentials are the
    /// master's; sentinels are asked with these, or without any when they are not given.
    ///
    /// ```
    /// let b = dashcache::RedisCache::builder("redis+sentinel://:master-pw@10.0.0.1:26379/mymaster")
    ///     .sentinel_credentials(None, "sentinel-pw");
    /// assert!(!format!("{b:?}").contains("sentinel-pw"));
    /// ```
    pub fn sentinel_credentials(mut self, username: Option<&str>, password: &str) -> Self {
        self.sentinel_auth = Some(SentinelAuth {
            username: username.map(str::to_owned),
            password: password.to_owned(),
        });
        self
    }

    /// Builds the cache without any I/O; the connection is made by the first operation. Use
    /// this when the service must start even while Redis is down (fail-open), and check
    /// [`Cache::ping`] to report it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a malformed URL,
    /// TLS settings that cannot be used (see [`TlsOptions`]), or when called outside a Tokio
    /// runtime (the connection's driver task needs one).
    pub fn build(self) -> Result<RedisCache> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::invalid_argument(
                "RedisCache must be built inside a Tokio runtime",
            ));
        }
        let display_url = mask_url(&self.url);
        if let Some(sentinel) = parse_sentinel_url(&self.url) {
            return self.build_sentinel(sentinel, display_url);
        }
        if self.sentinel_auth.is_some() {
            return Err(Error::invalid_argument(format!(
                "sentinel credentials are given but {display_url} is not a redis+sentinel:// URL"
            )));
        }
        let (seeds, cluster) = cluster_seeds(&self.url);
        let connect_timeout = self.connect_timeout.unwrap_or(self.timeout);
        let invalid = |e: redis::RedisError| {
            Error::invalid_argument(format!("invalid Redis URL {display_url}")).with_source(e)
        };
        let cluster = cluster || self.cluster;
        let infos = connection_infos(&seeds, &self.tls)?;
        let config = self.manager_config(connect_timeout);
        let (backend, single) = if cluster {
            // Connects on first use: a cluster that is down at start is reported by the first
            // operation (and `ping`), not by a failed start.
            let router = ClusterRouter::new(infos, config, self.timeout).map_err(invalid)?;
            (Backend::Cluster(router), None)
        } else {
            let info = infos.into_iter().next().ok_or_else(|| {
                Error::invalid_argument(format!("invalid Redis URL {display_url}"))
            })?;
            let client = redis::Client::open(info).map_err(invalid)?;
            let info = client.get_connection_info().clone();
            let manager =
                ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
            (Backend::Single(manager), Some(info))
        };
        Ok(self.finish(backend, single, cluster, display_url))
    }

    /// One attempt per reconnect: retries would keep callers waiting on a backoff schedule
    /// past their deadline. The breaker paces the attempts instead, and our own deadline
    /// covers every operation, connecting included.
    fn manager_config(&self, connect_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None)
    }

    fn build_sentinel(
        self,
        sentinel: std::result::Result<SentinelUrl, String>,
        display_url: String,
    ) -> Result<RedisCache> {
        let sentinel = sentinel.map_err(|e| {
            Error::invalid_argument(format!("invalid Sentinel URL {display_url}: {e}"))
        })?;
        let connect_timeout = self.connect_timeout.unwrap_or(self.timeout);
        let mut sentinels = connection_infos(&sentinel.sentinels, &self.tls)?;
        if let Some(auth) = &self.sentinel_auth {
            sentinels = sentinels
                .into_iter()
                .map(|info| {
                    let mut settings = info.redis_settings().clone().set_password(&auth.password);
                    if let Some(username) = &auth.username {
                        settings = settings.set_username(username);
                    }
                    info.set_redis_settings(settings)
                })
                .collect();
        }
        let template = connection_infos(&[sentinel.master_template], &self.tls)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::invalid_argument(format!("invalid Sentinel URL {display_url}"))
            })?;
        let router = SentinelRouter::new(
            sentinels,
            sentinel.master_name,
            template,
            self.manager_config(connect_timeout),
            self.timeout,
        )
        .map_err(|e| {
            Error::invalid_argument(format!("invalid Sentinel URL {display_url}")).with_source(e)
        })?;
        Ok(self.finish(Backend::Sentinel(router), None, false, display_url))
    }

    fn finish(
        self,
        backend: Backend,
        single: Option<redis::ConnectionInfo>,
        cluster: bool,
        display_url: String,
    ) -> RedisCache {
        let connect_timeout = self.connect_timeout.unwrap_or(self.timeout);
        if self.tls.is_insecure() {
            tracing::warn!(
                url = %display_url,
                "TLS certificate checks are OFF for this Redis connection: anyone on the path \
                 can read and change the traffic"
            );
        }
        RedisCache {
            inner: Arc::new(Inner {
                backend,
                single,
                timeout: self.timeout,
                connect_timeout,
                deadlines: Deadlines::new(self.timeout),
                sweep_timeout: self.sweep_timeout,
                breaker: Breakers::new(self.breaker, cluster),
                limits: self.limits,
                scan_count: self.scan_count,
                scripts: Scripts::new(),
                display_url,
                version_checked: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Builds the cache and checks that the server answers and is new enough (Redis 7.0 or
    /// later, see [`RedisCache::check_version`]).
    ///
    /// # Errors
    /// As [`build`](Self::build), and the error of the first `PING` (`Unavailable`, `Timeout`,
    /// `Misconfigured` for a refused authentication or a server older than 7.0).
    pub async fn connect(self) -> Result<RedisCache> {
        let cache = self.build()?;
        cache.ping().await?;
        Ok(cache)
    }
}

impl RedisCache {
    /// Starts configuring a cache for `url` (`redis://[user:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            timeout: vars::CACHE_TIMEOUT_MS.default_duration(),
            connect_timeout: None,
            sweep_timeout: Some(vars::CACHE_SWEEP_TIMEOUT_MS.default_duration()),
            breaker: BreakerConfig::default(),
            limits: Limits::default(),
            scan_count: 1000,
            cluster: false,
            tls: TlsOptions::default(),
            sentinel_auth: None,
        }
    }

    /// Connects to `url` with the default deadline and breaker, and checks that it answers.
    ///
    /// # Errors
    /// As [`RedisCacheBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).connect().await
    }
}
