//! `dashcache serve`: the configuration of the running service, and the server itself.

use std::net::SocketAddr;
use std::sync::Arc;

use dashcache::health::{CacheStatus, probe};
use dashcache::ratelimit::RateLimiter;
use dashcache::{Cache, CacheSettings};

use crate::db::{DEMO_USERS, Db};
use crate::state::{AppState, Backend, Follow, WebOptions, follower_for, keys_for};

/// The database `serve` uses when given none: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://dashcache.db?mode=rwc";

/// A start-up failure, said plainly.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// What `serve` needs besides the cache settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The database (`sqlite://file?mode=rwc` or `postgres://…`).
    pub database_url: String,
    /// Multiplies every rate limit (1 in production; load tests raise it).
    pub rate_limit_scale: u64,
    /// `None` runs without a cache.
    pub cache: CacheChoice,
    /// Whether an empty database gets the demo users.
    pub demo: DemoData,
    /// Cookies, the operations token, the proxies whose forwarded addresses are believed.
    pub web: WebOptions,
}

/// Whether `serve` puts the demo users (with their published passwords) into an empty
/// database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoData {
    /// Only into the default SQLite file (`dashcache.db`): the first-run experience,
    /// never a database someone configured.
    #[default]
    Auto,
    /// Into whatever database is empty (asked for explicitly).
    Yes,
    /// Never.
    No,
}

impl DemoData {
    /// Whether to seed a database at `url`.
    fn applies_to(self, url: &str) -> bool {
        match self {
            DemoData::Auto => url == DEFAULT_DATABASE_URL,
            DemoData::Yes => true,
            DemoData::No => false,
        }
    }
}

/// The namespaces read through L1 when Redis has one in front: the read-mostly records whose
/// changes must still reach every instance within the bound. One-time tokens (taken once)
/// and rate-limit buckets (written on every request) would only cost invalidation pushes.
pub const L1_NAMESPACES: [&str; 8] = [
    "session", "security", "authz", "user", "accounts", "provider", "upstream", "txn",
];

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
    // The decoy hash costs a whole Argon2 hashing: made now, not on the first login of an
    // unknown user (which would take three times as long as a known user's, once).
    tokio::task::spawn_blocking(|| {
        crate::auth::password::decoy();
    })
    .await?;
    if options.demo.applies_to(&options.database_url)
        && db.seed_demo_if_empty(crate::auth::password::hash).await?
    {
        let accounts: Vec<String> = DEMO_USERS
            .iter()
            .map(|(id, name, _, _, roles)| format!("{id} ({name}, {})", roles.join("+")))
            .collect();
        tracing::warn!(
            accounts = accounts.join(", "),
            "DEMO DATA: this database now has demo users with PUBLISHED PASSWORDS, one of them an \
             admin. Never expose it; start from an empty database with --demo no, and create \
             users with `dashcache users create`."
        );
    }
    let users = db.user_count().await?;
    let database = dashcache::url::mask_url(&options.database_url);
    if users == 0 {
        tracing::warn!(
            database,
            "this database has no users: nobody can log in. Create one with `dashcache users \
             create <id> --name … --email … --admin --database-url <this URL>` (or start with \
             --demo yes for demo users)"
        );
    } else {
        tracing::info!(database, users, "database");
    }
    let keys = keys_for(&settings)?;
    // The namespaces whose truth is in the database follow its invalidation log (an
    // in-memory database has no log another connection could read).
    let follower = match db.shared_url() {
        Some(_) if options.cache != CacheChoice::None => follower_for(&settings, &keys)?,
        _ => None,
    };
    let (backend, limiter) = match settings.redis_cache_builder() {
        _ if options.cache == CacheChoice::None => (
            Backend::plain(Arc::new(DisabledCache), "none", &keys),
            RateLimiter::memory(keys.clone()),
        ),
        Some(builder) => {
            let redis = builder.build()?;
            match redis.check_version().await {
                Ok(version) => tracing::info!(version, url = redis.url(), "Redis server"),
                // Too old (or a refused password): one clear error at start, not failures
                // later.
                Err(e) if e.kind() == dashcache::ErrorKind::Misconfigured => {
                    return Err(format!(
                        "cannot use the Redis at {} (REDIS_URL or --redis-url): {e}",
                        redis.url()
                    )
                    .into());
                }
                // Unreachable: served degraded (reported below); the first ping that reaches
                // it checks the version.
                Err(_) => {}
            }
            let name = if redis.is_cluster() {
                "redis-cluster"
            } else {
                "redis"
            };
            // Rate limiting stays one limit across instances: its buckets live on Redis,
            // never in L1. Hot buckets reserve tokens ahead (CACHE_RATE_LIMIT_BATCH), so most
            // of their checks need no round trip, and no instance admits a token it has not
            // taken from the shared bucket.
            let limiter = RateLimiter::new(
                Arc::new(settings.rate_limit_buckets(redis.clone())),
                keys.clone(),
            );
            let backend = match settings.hybrid_cache_builder(redis.clone()) {
                Some(hybrid) => {
                    let metrics = dashcache::metrics::CacheMetrics::new(&keys);
                    let mut hybrid = hybrid
                        .track_namespaces(&keys, L1_NAMESPACES)?
                        .metrics(metrics.clone());
                    if let Some(follower) = &follower {
                        hybrid = hybrid.follow(follower.clone());
                    }
                    let l1 = hybrid.build()?;
                    tracing::info!(
                        staleness_ms = settings.l1_staleness.as_millis() as u64,
                        max_entries = settings.l1_max_entries,
                        namespaces = L1_NAMESPACES.join(","),
                        "L1 on: reads of these namespaces are answered in process, kept \
                         coherent by Redis within the staleness bound"
                    );
                    let follow = follower.map(|follower| Follow {
                        follower,
                        shared: Arc::new(redis.clone()),
                        local: Some(l1.clone()),
                    });
                    Backend {
                        cache: Arc::new(l1.clone()),
                        name,
                        l1: Some(l1),
                        metrics,
                        follow,
                    }
                }
                None => gated(Arc::new(redis), name, &keys, follower),
            };
            (backend, limiter)
        }
        None => {
            let memory = settings.memory_cache_builder().build();
            (
                gated(Arc::new(memory), "memory", &keys, follower),
                RateLimiter::memory(keys.clone()),
            )
        }
    };
    let report = probe(backend.cache.as_ref(), std::time::Duration::from_millis(50)).await;
    let cache_url = settings
        .redis_url
        .as_deref()
        .map(dashcache::url::mask_url)
        .unwrap_or_default();
    match report.status {
        CacheStatus::Down => tracing::error!(
            backend = backend.name,
            url = cache_url,
            error = report.detail.as_deref().unwrap_or_default(),
            "THE CACHE IS UNREACHABLE: serving from the database only (degraded) until it answers"
        ),
        _ => tracing::info!(
            backend = backend.name,
            latency_ms = report.latency.map(crate::routes::access::millis),
            "cache ready"
        ),
    }
    let limiter_for_lookups = limiter.clone();
    let rate_limits = crate::rate_limits(
        limiter,
        options.web.trusted_proxies.clone(),
        options.rate_limit_scale,
    )?;
    let mut web = options.web.clone();
    if web.login_accounts.is_none() {
        web.login_accounts = Some(crate::login_account_limit(
            limiter_for_lookups.clone(),
            options.rate_limit_scale,
        )?);
    }
    if web.session_lookups.is_none() {
        web.session_lookups = Some(crate::session_lookup_limit(
            limiter_for_lookups,
            options.rate_limit_scale,
        )?);
    }
    if settings.key_secret.is_none() {
        tracing::warn!(
            "CACHE_KEY_SECRET is not set: session handles and opaque keys are keyed by the key \
             prefix alone. Set a secret of 16 bytes or more in production."
        );
    }
    let state = AppState::new(db, backend, rate_limits, settings, web)?;
    state.follow_database().await?;
    if options.demo.applies_to(&options.database_url) {
        let given = state.stand_in_demo_credentials().await?;
        if given > 0 {
            tracing::info!(
                connections = given,
                "demo connections given stand-in provider credentials (the stand-in provider \
                 accepts them): their balances and holdings answer"
            );
        }
    }
    Ok(state)
}

/// A one-tier backend `cache`, its coherent namespaces gated by `follower` when there is one
/// (the log's entries are applied to `cache` itself).
fn gated(
    cache: Arc<dyn Cache>,
    name: &'static str,
    keys: &dashcache::Keys,
    follower: Option<dashcache::coherent::Follower>,
) -> Backend {
    let Some(follower) = follower else {
        return Backend::plain(cache, name, keys);
    };
    let gated = dashcache::coherent::Gated::new(Arc::clone(&cache), follower.clone());
    let mut backend = Backend::plain(Arc::new(gated), name, keys);
    backend.follow = Some(Follow {
        follower,
        shared: cache,
        local: None,
    });
    backend
}

/// Serves the app on `options.listen` until SIGINT or SIGTERM, then finishes the requests in
/// flight.
///
/// # Errors
/// When the address cannot be bound.
pub async fn run(options: ServeOptions, state: AppState) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                ": another process listens there; stop it, or pick another address with \
                 --listen"
            } else {
                ""
            };
            format!("cannot listen on {}: {e}{hint}", options.listen)
        })?;
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
    // hyper's own header limit (100) would answer a bare 431 before the service sees the
    // request; raised far above ours (`MAX_HEADERS`), so every 431 is ours, a problem body.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_headers(HYPER_MAX_HEADERS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, a reset before accept: the next one may work.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection = http.serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is no error of ours.
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The most header fields hyper parses before it answers 431 itself.
const HYPER_MAX_HEADERS: usize = 1024;

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
    /// No cache at all: every read goes to the database (`DisabledCache`).
    None,
}
