//! `dashcache serve`: the configuration of the running service, and the server itself.

use std::net::SocketAddr;
use std::sync::Arc;

use dashcache::health::{CacheStatus, probe};
use dashcache::ratelimit::{RateLimiter, TrustedProxies};
use dashcache::{Cache, CacheSettings};

use crate::db::Db;
use crate::state::{AppState, keys_for};

/// A start-up failure, said plainly.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// What `serve` needs besides the cache settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The database (`sqlite://file?mode=rwc` or `postgres://…`).
    pub database_url: String,
    /// Proxies whose forwarded addresses are believed.
    pub trusted_proxies: TrustedProxies,
    /// Multiplies every rate limit (1 in production; load tests raise it).
    pub rate_limit_scale: u64,
    /// `None` runs without a cache.
    pub cache: CacheChoice,
}

/// Builds the state: the database (migrated, seeded), the cache — Redis when the settings name
/// one, else the embedded cache — and the rate limits on the same backend.
///
/// A Redis that cannot be reached at start is logged loudly; the service starts anyway and
/// serves from the database (`/health` says `degraded`) until it can.
///
/// # Errors
/// When the database cannot be reached or migrated, or the settings are unusable.
pub async fn build_state(
    options: &ServeOptions,
    settings: CacheSettings,
) -> Result<AppState, StartError> {
    let db = Db::connect(&options.database_url).await?;
    let keys = keys_for(&settings)?;
    let (cache, backend, limiter): (Arc<dyn Cache>, &'static str, RateLimiter) =
        match settings.redis_cache_builder() {
            _ if options.cache == CacheChoice::None => {
                (Arc::new(DisabledCache), "none", RateLimiter::memory(keys))
            }
            Some(builder) => {
                let redis = builder.build()?;
                let backend = if redis.is_cluster() {
                    "redis-cluster"
                } else {
                    "redis"
                };
                (
                    Arc::new(redis.clone()),
                    backend,
                    RateLimiter::redis(redis, keys),
                )
            }
            None => {
                let memory = settings.memory_cache_builder().build();
                (Arc::new(memory), "memory", RateLimiter::memory(keys))
            }
        };
    let report = probe(cache.as_ref(), std::time::Duration::from_millis(50)).await;
    match report.status {
        CacheStatus::Down => tracing::error!(
            backend,
            error = report.detail.as_deref().unwrap_or_default(),
            "THE CACHE IS UNREACHABLE: serving from the database only (degraded) until it answers"
        ),
        _ => tracing::info!(
            backend,
            latency_ms = report.latency.map(|d| d.as_secs_f64() * 1e3),
            "cache ready"
        ),
    }
    let rate_limits = crate::rate_limits(
        limiter,
        options.trusted_proxies.clone(),
        options.rate_limit_scale,
    )?;
    Ok(AppState::new(db, cache, backend, rate_limits, settings)?)
}

/// Serves the app on `options.listen` until SIGINT or SIGTERM, then finishes the requests in
/// flight.
///
/// # Errors
/// When the address cannot be bound.
pub async fn run(options: ServeOptions, state: AppState) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    serve_on(listener, state, shutdown_signal()).await
}

/// Serves the app on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
///
/// # Errors
/// When serving fails.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    tracing::info!(address = %listener.local_addr()?, backend = state.backend(), "dashcache serving");
    let app = crate::app(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The cache of `serve --cache none`: every operation fails at once as unavailable, so the
/// service runs on its fail-open paths alone — every read from the database. For measuring
/// what the cache is worth, and as a kill switch.
#[derive(Debug, Clone, Copy, Default)]
pub struct DisabledCache;

fn disabled<T>() -> dashcache::Result<T> {
    Err(dashcache::Error::new(
        dashcache::ErrorKind::Unavailable,
        "the cache is disabled (--cache none)",
    ))
}

#[async_trait::async_trait]
impl Cache for DisabledCache {
    async fn get(&self, _: &str) -> dashcache::Result<Option<bytes::Bytes>> {
        disabled()
    }
    async fn set(&self, _: &str, _: bytes::Bytes, _: dashcache::Ttl) -> dashcache::Result<()> {
        disabled()
    }
    async fn set_if_absent(
        &self,
        _: &str,
        _: bytes::Bytes,
        _: dashcache::Ttl,
    ) -> dashcache::Result<bool> {
        disabled()
    }
    async fn take(&self, _: &str) -> dashcache::Result<Option<bytes::Bytes>> {
        disabled()
    }
    async fn delete(&self, _: &str) -> dashcache::Result<bool> {
        disabled()
    }
    async fn delete_many(&self, _: &[&str]) -> dashcache::Result<u64> {
        disabled()
    }
    async fn exists(&self, _: &str) -> dashcache::Result<bool> {
        disabled()
    }
    async fn get_many(&self, _: &[&str]) -> dashcache::Result<Vec<Option<bytes::Bytes>>> {
        disabled()
    }
    async fn set_many(
        &self,
        _: &[(&str, bytes::Bytes)],
        _: dashcache::Ttl,
    ) -> dashcache::Result<()> {
        disabled()
    }
    async fn increment(
        &self,
        _: &str,
        _: i64,
        _: Option<dashcache::Ttl>,
    ) -> dashcache::Result<i64> {
        disabled()
    }
    async fn expire(&self, _: &str, _: dashcache::Ttl) -> dashcache::Result<bool> {
        disabled()
    }
    async fn ttl(&self, _: &str) -> dashcache::Result<dashcache::KeyTtl> {
        disabled()
    }
    async fn delete_pattern(&self, _: &str) -> dashcache::Result<u64> {
        disabled()
    }
    async fn set_add(
        &self,
        _: &str,
        _: &[bytes::Bytes],
        _: dashcache::Ttl,
    ) -> dashcache::Result<u64> {
        disabled()
    }
    async fn set_remove(&self, _: &str, _: &[bytes::Bytes]) -> dashcache::Result<u64> {
        disabled()
    }
    async fn set_members(&self, _: &str) -> dashcache::Result<Vec<bytes::Bytes>> {
        disabled()
    }
    async fn write_if(
        &self,
        _: &[dashcache::Condition<'_>],
        _: &[dashcache::Write<'_>],
    ) -> dashcache::Result<bool> {
        disabled()
    }
    async fn ping(&self) -> dashcache::Result<std::time::Duration> {
        disabled()
    }
}

/// Which cache `serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CacheChoice {
    /// Redis when `REDIS_URL` is set, else the embedded cache.
    #[default]
    Auto,
    /// No cache at all (see [`DisabledCache`]).
    None,
}
