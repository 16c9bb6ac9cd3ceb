//! [`AppState`]: the database, the cache and every pattern built on it, shared by the handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::authz::PermissionCache;
use dashcache::metrics::CacheMetrics;
use dashcache::ratelimit::RateLimitLayer;
use dashcache::sealed::Sealed;
use dashcache::session::{SessionRecord, SessionStore};
use dashcache::token::OneTimeTokens;
use dashcache::{Cache, CacheSettings, Instrumented, Keys, Ttl};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::{Deserialize, Serialize};

use crate::db::{Account, Connection, Db, DbError, SecurityVersions, SessionRow, User};
use crate::error::AppError;

/// Every key namespace the service uses: the bounded set of metrics labels.
pub const NAMESPACES: [&str; 8] = [
    "user",
    "session",
    "authz",
    "oauth_state",
    "provider",
    "accounts",
    "security",
    "ratelimit",
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

/// A session as the service keeps it: the database row's fields, cached write-through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSession {
    /// Session id.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// Unix ms.
    pub last_activity: i64,
    /// Client address.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Global security version at issue.
    pub global_version: i64,
    /// User security version at issue.
    pub user_version: i64,
}

fn to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl SessionRecord for ServiceSession {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn user_id(&self) -> &str {
        &self.user_id
    }
    fn created_at(&self) -> SystemTime {
        to_time(self.created_at)
    }
    fn expires_at(&self) -> SystemTime {
        to_time(self.expires_at)
    }
    fn record_activity(&mut self, at: SystemTime, ip: Option<std::net::IpAddr>) {
        self.last_activity = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if let Some(ip) = ip {
            self.ip = Some(ip.to_string());
        }
    }
}

impl From<SessionRow> for ServiceSession {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_activity: r.created_at,
            ip: r.ip,
            user_agent: r.user_agent,
            global_version: r.global_version,
            user_version: r.user_version,
        }
    }
}

/// What an OAuth state carries from `connect` to `callback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConnection {
    /// Who is connecting.
    pub user_id: String,
    /// To which provider.
    pub provider: String,
    /// Under which name.
    pub alias: String,
}

/// A loader failure, shared by every caller of one single-flight load.
#[derive(Debug, Clone)]
pub struct LoadFailure(Arc<str>);

impl From<DbError> for LoadFailure {
    fn from(e: DbError) -> Self {
        Self(e.to_string().into())
    }
}

impl From<LoaderTimeout> for LoadFailure {
    fn from(e: LoaderTimeout) -> Self {
        Self(e.to_string().into())
    }
}

impl From<LoadFailure> for AppError {
    fn from(e: LoadFailure) -> Self {
        AppError::Internal(e.0.to_string())
    }
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
    sessions: SessionStore<ServiceSession>,
    oauth: OneTimeTokens<PendingConnection>,
    permissions: PermissionCache,
    rate_limits: RateLimitLayer,
    prometheus: PrometheusRecorder,
    prometheus_handle: PrometheusHandle,
    backend: &'static str,
    started: Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.inner.db)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// Cache-aside wants `'static` loaders: they get their own handle on the database.
type Loaded<T> = Result<T, LoadFailure>;

impl AppState {
    /// The state over `db` and the cache `backend_cache` (`backend` names it: `"memory"`,
    /// `"redis"`, `"redis-cluster"` or `"none"`), configured by `settings`, limiting requests
    /// with `rate_limits` (see [`crate::rate_limits`]).
    ///
    /// # Errors
    /// When the key prefix or namespaces cannot be declared (the settings validated them).
    pub fn new(
        db: Db,
        backend_cache: Arc<dyn Cache>,
        backend: &'static str,
        rate_limits: RateLimitLayer,
        settings: CacheSettings,
    ) -> Result<Self, dashcache::Error> {
        let keys = keys_for(&settings)?;
        let metrics = CacheMetrics::new(&keys);
        let instrumented: Arc<dyn Cache> =
            Arc::new(Instrumented::new(backend_cache, metrics.clone()));
        // Session records and OAuth states are sensitive: sealed when a key is configured.
        let sensitive: Arc<dyn Cache> = match settings.keyring() {
            Some(keyring) => Arc::new(Sealed::new(Arc::clone(&instrumented), keyring)),
            None => Arc::clone(&instrumented),
        };
        let mut aside = CacheAside::builder(Arc::clone(&instrumented))
            .jitter(settings.jitter_fraction())
            .negative_ttl(Ttl::secs(30))
            .loader_timeout(Duration::from_secs(5))
            .metrics_over_instrumented(metrics.clone());
        if !settings.stale_for.is_zero() {
            aside = aside.stale_for(settings.stale_for);
        }
        let sessions = SessionStore::new(Arc::clone(&sensitive), keys.clone())
            .with_max_lifetime(settings.ttl.session.max(Duration::from_secs(60)));
        let oauth = OneTimeTokens::new(sensitive, keys.clone(), "oauth_state");
        let permissions = PermissionCache::with_config(
            Arc::clone(&instrumented),
            keys.clone(),
            "authz",
            settings.ttl.permissions,
            settings.ttl.permissions,
        );
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
                sessions,
                oauth,
                permissions,
                rate_limits,
                prometheus,
                prometheus_handle,
                backend,
                started: Instant::now(),
            }),
        })
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

    /// OAuth states.
    pub fn oauth(&self) -> &OneTimeTokens<PendingConnection> {
        &self.inner.oauth
    }

    /// The rate-limit middleware (for the router and its statistics).
    pub fn rate_limits(&self) -> &RateLimitLayer {
        &self.inner.rate_limits
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
            metrics::counter!("dashcache_db_queries_total").absolute(self.inner.db.queries());
            metrics::gauge!("dashcache_uptime_seconds").set(self.uptime().as_secs_f64());
        });
        self.inner.prometheus_handle.render()
    }

    fn key(&self, parts: &[&str]) -> Result<String, AppError> {
        self.inner
            .keys
            .key(parts.iter().copied())
            .map_err(|e| AppError::BadRequest(format!("malformed id: {e}")))
    }

    /// Invalidates a cached entry after a write to the database. A failure is logged, not
    /// returned: the write happened, and the entry expires within its TTL.
    async fn invalidate(&self, key: &str) {
        if let Err(e) = self.inner.aside.invalidate(key).await {
            tracing::warn!(
                key,
                code = e.code(),
                "could not invalidate a cached entry; it expires with its TTL"
            );
        }
    }

    /// A user, cache-aside (a missing id is cached briefly too).
    ///
    /// # Errors
    /// Database errors.
    pub async fn user(&self, id: &str) -> Result<Option<User>, AppError> {
        let key = self.key(&["user", id])?;
        let db = self.inner.db.clone();
        let id = id.to_owned();
        let ttl = Ttl::from(self.inner.settings.ttl.user);
        let loaded: Loaded<Option<User>> = self
            .inner
            .aside
            .get_or_load_optional(&key, ttl, move || async move { Ok(db.user(&id).await?) })
            .await;
        Ok(loaded?)
    }

    /// Forgets the cached copy of user `id`.
    pub async fn invalidate_user(&self, id: &str) {
        if let Ok(key) = self.key(&["user", id]) {
            self.invalidate(&key).await;
        }
    }

    /// A provider connection, cache-aside.
    ///
    /// # Errors
    /// Database errors.
    pub async fn connection(&self, id: &str) -> Result<Option<Connection>, AppError> {
        let key = self.key(&["provider", "connection", id])?;
        let db = self.inner.db.clone();
        let id = id.to_owned();
        let ttl = Ttl::from(self.inner.settings.ttl.provider_connection);
        let loaded: Loaded<Option<Connection>> = self
            .inner
            .aside
            .get_or_load_optional(
                &key,
                ttl,
                move || async move { Ok(db.connection(&id).await?) },
            )
            .await;
        Ok(loaded?)
    }

    /// Forgets the cached copy of connection `id`.
    pub async fn invalidate_connection(&self, id: &str) {
        if let Ok(key) = self.key(&["provider", "connection", id]) {
            self.invalidate(&key).await;
        }
    }

    /// A user's accounts, cache-aside.
    ///
    /// # Errors
    /// Database errors.
    pub async fn accounts(&self, user: &str) -> Result<Vec<Account>, AppError> {
        let key = self.key(&["accounts", "user", user])?;
        let db = self.inner.db.clone();
        let user = user.to_owned();
        let ttl = Ttl::from(self.inner.settings.ttl.accounts_list);
        let loaded: Loaded<Vec<Account>> = self
            .inner
            .aside
            .get_or_load(&key, ttl, move || async move {
                Ok(db.accounts_of(&user).await?)
            })
            .await;
        Ok(loaded?)
    }

    /// Forgets the cached account list of `user`.
    pub async fn invalidate_accounts(&self, user: &str) {
        if let Ok(key) = self.key(&["accounts", "user", user]) {
            self.invalidate(&key).await;
        }
    }

    /// The security versions a session of `user` must not be older than: the global one and
    /// the user's, looked up together (one round trip) and cached for `CACHE_TTL_SECURITY_CONFIG`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn security_versions(&self, user: &str) -> Result<SecurityVersions, AppError> {
        let global = self.key(&["security", "global"])?;
        let mine = self.key(&["security", "user", user])?;
        let db = self.inner.db.clone();
        let owner = user.to_owned();
        let (g, u) = (global.clone(), mine.clone());
        let ttl = Ttl::from(self.inner.settings.ttl.security_config);
        let loaded: Loaded<Vec<Option<i64>>> = self
            .inner
            .aside
            .get_many_or_load(
                &[&global, &mine],
                ttl,
                move |_missing: Vec<String>| async move {
                    let v = db.security_versions(&owner).await?;
                    Ok::<_, LoadFailure>(HashMap::from([(g, v.global), (u, v.user)]))
                },
            )
            .await;
        let versions = loaded?;
        Ok(SecurityVersions {
            global: versions.first().copied().flatten().unwrap_or(0),
            user: versions.get(1).copied().flatten().unwrap_or(0),
        })
    }

    /// Bumps the global security version (`None`) or a user's, revoking every session issued
    /// under the old one: at once through this cache, within `CACHE_TTL_SECURITY_CONFIG` for
    /// instances with their own.
    ///
    /// # Errors
    /// Database errors.
    pub async fn bump_security_version(&self, user: Option<&str>) -> Result<i64, AppError> {
        let version = self.inner.db.bump_security_version(user).await?;
        let key = match user {
            Some(u) => self.key(&["security", "user", u])?,
            None => self.key(&["security", "global"])?,
        };
        self.invalidate(&key).await;
        Ok(version)
    }

    /// Whether `user` may `action` on `resource`: cached, invalidated on role changes; a failing
    /// cache falls through to the database.
    ///
    /// # Errors
    /// Database errors.
    pub async fn allowed(
        &self,
        user: &str,
        resource: &str,
        action: &str,
    ) -> Result<bool, AppError> {
        let db = self.inner.db.clone();
        let who = user.to_owned();
        let (resource_owned, action_owned) = (resource.to_owned(), action.to_owned());
        let allowed = self
            .inner
            .permissions
            .check(user, resource, action, || async move {
                let roles = db.roles(&who).await?;
                Ok::<_, DbError>(crate::auth::role_allows(
                    &roles,
                    &resource_owned,
                    &action_owned,
                ))
            })
            .await?;
        Ok(allowed)
    }

    /// Makes `user`'s cached permission checks obsolete (after a role change).
    pub async fn invalidate_permissions(&self, user: &str) {
        if let Err(e) = self.inner.permissions.invalidate_user(user).await {
            // The answers expire within CACHE_TTL_PERMISSIONS; meanwhile the old grant stands,
            // so say so loudly.
            tracing::error!(
                user,
                code = e.code(),
                "could not invalidate cached permissions"
            );
        }
    }
}
