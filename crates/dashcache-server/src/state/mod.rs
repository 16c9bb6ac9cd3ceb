//! [`AppState`]: the database, the cache and every pattern built on it, shared by the handlers.

mod cached;
mod credentials;
mod follow;
mod ledger;
pub mod lookups;
mod permissions;
mod provider;
mod records;
mod warm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashcache::aside::CacheAside;
use dashcache::authz::PermissionCache;
use dashcache::compress::Compressed;
use dashcache::fallback::Fallbacks;
use dashcache::hybrid::{HybridCache, HybridStatus};
use dashcache::metrics::CacheMetrics;
use dashcache::ratelimit::{RateLimitLayer, RateLimiter, Rule, TrustedProxies};
use dashcache::sealed::Sealed;
use dashcache::session::SessionStore;
use dashcache::token::OneTimeTokens;
use dashcache::{Cache, CacheSettings, Instrumented, Keys, Ttl};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub use follow::{COHERENT_NAMESPACES, Follow, follower_for, mapping};
pub use ledger::{MAX_PAGE, TransactionPage};
pub use lookups::{SessionLookups, Verified};
pub use permissions::role_allows;
pub use provider::{ProviderAnswer, ProviderData};
pub use records::{LoadFailure, PendingConnection, ServiceSession};
pub use warm::WarmSet;

use crate::db::Db;

/// Every key namespace the service uses: the bounded set of metrics labels.
pub const NAMESPACES: [&str; 10] = [
    "user",
    "session",
    "authz",
    "oauth_state",
    "provider",
    "accounts",
    "security",
    "ratelimit",
    "upstream",
    "txn",
];

/// The service's key declarations under the configured prefix and secret.
///
/// # Errors
/// When the prefix cannot be a key prefix (the settings validated it).
pub fn keys_for(settings: &CacheSettings) -> Result<Keys, dashcache::Error> {
    let mut builder = Keys::builder(settings.key_prefix.clone()).namespaces(NAMESPACES);
    if let Some(secret) = &settings.key_secret {
        builder = builder.secret(secret.clone());
    }
    builder.build()
}

/// The shared state of the service. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cache: Arc<dyn Cache>,
    keys: Keys,
    settings: CacheSettings,
    metrics: CacheMetrics,
    aside: CacheAside,
    /// Provider answers: served stale when the provider fails, refreshed ahead of expiry.
    provider_aside: CacheAside,
    credentials: credentials::Credentials,
    sessions: SessionStore<ServiceSession>,
    oauth: OneTimeTokens<PendingConnection>,
    permissions: PermissionCache,
    session_fallbacks: Fallbacks,
    session_lookups: SessionLookups,
    rate_limits: RateLimitLayer,
    web: WebOptions,
    prometheus: PrometheusRecorder,
    prometheus_handle: PrometheusHandle,
    backend: &'static str,
    l1: Option<HybridCache>,
    /// How the backend follows the database's invalidation log, when it does.
    follow: Option<Follow>,
    /// This instance's consumer of the log, once [`AppState::follow_database`] started it.
    consumer: std::sync::OnceLock<dashcache::coherent::log::Consumer>,
    started: Instant,
    /// Added to every cache-aside load, in microseconds: a remote database's round trip, for
    /// drills and demos on a local SQLite file (0 in production).
    load_latency_micros: std::sync::atomic::AtomicU64,
}

/// The cache the service runs on, before the state instruments it.
#[derive(Clone)]
pub struct Backend {
    /// The cache: embedded, Redis, Redis with an L1, or none.
    pub cache: Arc<dyn Cache>,
    /// Its name in `/health` and the statistics: `"memory"`, `"redis"`, `"redis-cluster"` or
    /// `"none"`.
    pub name: &'static str,
    /// The hybrid cache in front of Redis, when L1 is on: its status goes into `/health`'s
    /// details and `/metrics`.
    pub l1: Option<HybridCache>,
    /// The per-namespace metrics the state counts into; the hybrid cache's L1 counters must go
    /// to the same (see [`HybridCacheBuilder::metrics`](dashcache::hybrid::HybridCacheBuilder::metrics)).
    pub metrics: CacheMetrics,
    /// How `cache` follows the database's invalidation log (`None`: it does not).
    pub follow: Option<Follow>,
}

impl Backend {
    /// `cache`, named `name`, with no L1 and fresh metrics for `keys`.
    pub fn plain(cache: Arc<dyn Cache>, name: &'static str, keys: &Keys) -> Self {
        Self {
            cache,
            name,
            l1: None,
            metrics: CacheMetrics::new(keys),
            follow: None,
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("l1", &self.l1.as_ref().map(HybridCache::status))
            .finish_non_exhaustive()
    }
}

/// How the service faces the web: cookies, who may see operational detail, where client
/// addresses come from, and the limit on session lookups that reach the database.
#[derive(Clone)]
pub struct WebOptions {
    /// Marks the session cookie `Secure` (behind TLS).
    pub secure_cookies: bool,
    /// With it as a bearer token, `/health` shows its details and `/metrics` and
    /// `/api/v1/cache/stats` answer; when set, they answer nobody else (admins see health
    /// details too).
    pub ops_token: Option<String>,
    /// The proxies whose forwarded client address is believed.
    pub trusted_proxies: TrustedProxies,
    /// Session lookups that find no live session in the database may happen at most this
    /// often per client network: forged tokens cannot hammer it (see [`lookups`]).
    pub session_lookups: Option<(RateLimiter, Rule)>,
    /// Failed logins per account (keyed by a hash of the id), whatever the address: see
    /// [`crate::login_account_limit`].
    pub login_accounts: Option<(RateLimiter, Rule)>,
    /// The origins whose cookie-authenticated writes are accepted besides the service's own
    /// (`scheme://host[:port]`, as browsers send `Origin`): behind a proxy that changes the
    /// host.
    pub allowed_origins: Vec<String>,
    /// Whether the listener is on a loopback address: only then do `/metrics` and the
    /// statistics answer without the operations token.
    pub loopback_only: bool,
    /// The upstream provider API (balances, holdings, code exchange); without one those
    /// routes answer 503 and connecting stores no credential.
    pub upstream: Option<crate::upstream::ProviderClient>,
    /// One `info` line per request (method, route pattern, status, latency, request id) under
    /// the `dashcache::access` target.
    pub access_log: bool,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            secure_cookies: false,
            ops_token: None,
            trusted_proxies: TrustedProxies::none(),
            session_lookups: None,
            login_accounts: None,
            allowed_origins: Vec::new(),
            loopback_only: true,
            upstream: None,
            access_log: true,
        }
    }
}

impl std::fmt::Debug for WebOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebOptions")
            .field("secure_cookies", &self.secure_cookies)
            .field("ops_token", &self.ops_token.as_ref().map(|_| "<secret>"))
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "session_lookups",
                &self.session_lookups.as_ref().map(|(_, r)| r.name()),
            )
            .field(
                "login_accounts",
                &self.login_accounts.as_ref().map(|(_, r)| r.name()),
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("loopback_only", &self.loopback_only)
            .field("upstream", &self.upstream)
            .field("access_log", &self.access_log)
            .finish()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.inner.db)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state over `db` and the cache `backend`, configured by `settings`, limiting
    /// requests with `rate_limits` (see [`crate::rate_limits`]), facing the web as `web` says.
    ///
    /// # Errors
    /// When the key prefix or namespaces cannot be declared (the settings validated them).
    pub fn new(
        db: Db,
        backend: Backend,
        rate_limits: RateLimitLayer,
        settings: CacheSettings,
        web: WebOptions,
    ) -> Result<Self, dashcache::Error> {
        let keys = keys_for(&settings)?;
        let metrics = backend.metrics;
        let instrumented: Arc<dyn Cache> =
            Arc::new(Instrumented::new(backend.cache, metrics.clone()));
        // Session records and OAuth states are sensitive: sealed when a key is configured.
        let sensitive: Arc<dyn Cache> = match settings.keyring() {
            Some(keyring) => Arc::new(Sealed::new(Arc::clone(&instrumented), keyring)),
            None => Arc::clone(&instrumented),
        };
        // Cached records and pages: compressed when large (and the setting is on); read
        // either way, so turning it on or off needs no flush.
        let records: Arc<dyn Cache> = if settings.compression {
            Arc::new(Compressed::new(
                Arc::clone(&instrumented),
                settings.compression_config(),
            ))
        } else {
            Arc::new(Compressed::passthrough(
                Arc::clone(&instrumented),
                settings.compression_config(),
            ))
        };
        let mut aside = CacheAside::builder(Arc::clone(&records))
            .jitter(settings.jitter_fraction())
            .negative_ttl(Ttl::secs(30))
            .loader_timeout(Duration::from_secs(5))
            .metrics_over_instrumented(metrics.clone());
        if !settings.stale_for.is_zero() {
            aside = aside.stale_for(settings.stale_for);
        }
        // Provider answers: the last good one stands in for an hour past its TTL while the
        // provider fails or is slower than the loader timeout, and one read in the last fifth
        // of the TTL refreshes it in the background.
        let mut provider_aside = CacheAside::builder(Arc::clone(&records))
            .jitter(settings.jitter_fraction())
            .stale_for(Duration::from_secs(3600))
            .loader_timeout(Duration::from_millis(1500))
            .refresh_ahead(0.2)
            .metrics_over_instrumented(metrics.clone());
        if backend.name.starts_with("redis") {
            // Instances share the cache: one of them loads a missing row, the others wait
            // for it, up to the loader's own timeout (a lease outlives it a little).
            aside = aside.leases(Duration::from_secs(6), Duration::from_secs(5));
            provider_aside =
                provider_aside.leases(Duration::from_secs(2), Duration::from_millis(1600));
        }
        let credentials =
            credentials::Credentials::new(settings.keyring(), settings.ttl.credentials)?;
        let sessions = SessionStore::new(Arc::clone(&sensitive), keys.clone())
            .with_max_lifetime(settings.ttl.session.max(Duration::from_secs(60)));
        let oauth = OneTimeTokens::new(sensitive, keys.clone(), "oauth_state");
        let permissions = PermissionCache::with_config(
            Arc::clone(&instrumented),
            keys.clone(),
            "authz",
            settings.ttl.permissions,
            settings.ttl.permissions,
        )
        .with_metrics(metrics.clone());
        let session_fallbacks = Fallbacks::new("session lookup").with_metrics(metrics.clone());
        let prometheus = PrometheusBuilder::new().build_recorder();
        let prometheus_handle = prometheus.handle();
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                cache: instrumented,
                keys,
                settings,
                metrics,
                aside: aside.build(),
                provider_aside: provider_aside.build(),
                credentials,
                sessions,
                oauth,
                permissions,
                session_fallbacks,
                session_lookups: SessionLookups::new(
                    web.session_lookups.clone(),
                    Verified::default(),
                ),
                rate_limits,
                web,
                prometheus,
                prometheus_handle,
                backend: backend.name,
                l1: backend.l1,
                follow: backend.follow,
                consumer: std::sync::OnceLock::new(),
                started: Instant::now(),
                load_latency_micros: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Adds `latency` to every cache-aside load (half before the query, half after): what a
    /// database across a network costs, for drills and demos on a local file. Zero (the
    /// default) in production.
    pub fn simulate_load_latency(&self, latency: std::time::Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .load_latency_micros
            .store(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// The simulated load latency; see [`simulate_load_latency`](Self::simulate_load_latency).
    pub(crate) fn load_latency(&self) -> Option<std::time::Duration> {
        match self
            .inner
            .load_latency_micros
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            micros => Some(std::time::Duration::from_micros(micros)),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The (instrumented) cache.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.inner.cache
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// The state of the L1 in front of Redis, when there is one.
    pub fn l1_status(&self) -> Option<HybridStatus> {
        self.inner.l1.as_ref().map(HybridCache::status)
    }

    /// Whether the circuit breaker in front of Redis is open (with an L1; `false` otherwise).
    pub fn cache_breaker_open(&self) -> bool {
        self.inner
            .l1
            .as_ref()
            .is_some_and(|l1| l1.l2().is_circuit_open())
    }

    /// The key builder.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    /// Per-namespace cache metrics.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionStore<ServiceSession> {
        &self.inner.sessions
    }

    /// Where session lookups that fell back to the database are logged and counted.
    pub fn session_fallbacks(&self) -> &Fallbacks {
        &self.inner.session_fallbacks
    }

    /// Session lookups that reach the database: the per-network allowance of failures, the
    /// verified-session memory, the counts of outcomes.
    pub fn session_lookups(&self) -> &SessionLookups {
        &self.inner.session_lookups
    }

    /// OAuth states.
    pub fn oauth(&self) -> &OneTimeTokens<PendingConnection> {
        &self.inner.oauth
    }

    /// The rate-limit middleware (for the router and its statistics).
    pub fn rate_limits(&self) -> &RateLimitLayer {
        &self.inner.rate_limits
    }

    /// How the service faces the web.
    pub fn web(&self) -> &WebOptions {
        &self.inner.web
    }

    /// Whether `headers` carry the operations token (compared in constant time).
    pub fn has_ops_token(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(expected) = &self.inner.web.ops_token else {
            return false;
        };
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), expected.as_bytes()))
    }

    /// How long the service has run.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        metrics::with_local_recorder(&self.inner.prometheus, || {
            self.inner.metrics.publish();
            self.inner.rate_limits.publish();
            if let Some(upstream) = &self.inner.web.upstream {
                upstream.publish();
            }
            // Each family is described where it is set, so `# HELP` cannot drift from the value.
            let counter = |name: &'static str, help: &'static str, value: u64| {
                metrics::describe_counter!(name, help);
                metrics::counter!(name).absolute(value);
            };
            let gauge = |name: &'static str, help: &'static str, value: f64| {
                metrics::describe_gauge!(name, help);
                metrics::gauge!(name).set(value);
            };
            counter(
                "dashcache_db_queries_total",
                "Queries sent to the database.",
                self.inner.db.queries(),
            );
            metrics::describe_counter!(
                "dashcache_session_lookups_total",
                "Session lookups by outcome: cache (the cache or its L1), memory (sessions this instance verified, while the cache fails), database, or why none was found (unknown, revoked, limited: refused before the database)."
            );
            for (outcome, n) in self.inner.session_lookups.counts() {
                metrics::counter!("dashcache_session_lookups_total", "outcome" => outcome)
                    .absolute(n);
            }
            gauge(
                "dashcache_verified_sessions",
                "Sessions this instance verified recently and answers for while the cache cannot.",
                self.inner.session_lookups.verified().len() as f64,
            );
            gauge(
                "dashcache_uptime_seconds",
                "Seconds since the service started.",
                self.uptime().as_secs_f64(),
            );
            if let Some(log) = self.log_status() {
                gauge(
                    "dashcache_log_proven",
                    "1 while coherent namespaces are answered from the cache (the consumer is proven caught up).",
                    f64::from(u8::from(log.follower.proven)),
                );
                if let Some(age) = log.follower.proven_ago {
                    gauge(
                        "dashcache_log_proof_age_seconds",
                        "Seconds since the consumer's last proof.",
                        age.as_secs_f64(),
                    );
                }
                counter(
                    "dashcache_log_entries_total",
                    "Invalidation log entries read and applied to this process.",
                    log.entries,
                );
                counter(
                    "dashcache_log_applied_total",
                    "Invalidation targets applied to the shared cache (written or found applied).",
                    log.applied,
                );
                counter(
                    "dashcache_log_redis_writes_total",
                    "Invalidation targets this instance wrote to the shared cache.",
                    log.written,
                );
                counter(
                    "dashcache_log_retries_total",
                    "Attempts to apply an invalidation target that failed and were retried.",
                    log.retries,
                );
                counter(
                    "dashcache_log_sweeps_total",
                    "Sweeps of the coherent namespaces from the shared cache (a dropped backlog, a consumer that fell behind, a first consumer).",
                    log.sweeps,
                );
                gauge(
                    "dashcache_log_queued",
                    "Invalidation targets waiting for the shared cache.",
                    log.queued as f64,
                );
                gauge(
                    "dashcache_log_pending_keys",
                    "Keys whose invalidation has not reached the shared cache yet.",
                    log.follower.pending as f64,
                );
            }
            if let Some(l1) = self.l1_status() {
                gauge(
                    "dashcache_l1_serving",
                    "1 while the in-process L1 may serve (its last probe proves it fresh).",
                    if l1.serving { 1.0 } else { 0.0 },
                );
                gauge(
                    "dashcache_l1_entries",
                    "Entries in the in-process L1.",
                    l1.l1_entries as f64,
                );
                gauge(
                    "dashcache_l1_tracked_nodes",
                    "Redis servers the L1 tracks (the masters, on a cluster).",
                    l1.tracked_nodes as f64,
                );
                counter(
                    "dashcache_l1_connections_total",
                    "Tracking connections the L1 made (each flushed it before it served).",
                    l1.connections,
                );
                counter(
                    "dashcache_l1_flushes_total",
                    "Times the L1 was flushed (a new tracking connection, FLUSHALL).",
                    l1.flushes,
                );
                counter(
                    "dashcache_l1_fills_refused_total",
                    "Values read from Redis not put in L1 because their key changed meanwhile.",
                    l1.fills_refused,
                );
            }
        });
        let mut text = self.inner.prometheus_handle.render();
        text.push_str(&self.inner.metrics.render_histograms());
        text
    }
}

/// Whether `a` equals `b`, in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
