//! The dashcache reference service: an axum app over a real database that uses every pattern
//! of the library — cache-aside reads, write-through sessions, one-time OAuth state, cached
//! permission checks, security-version revocation, rate limits, metrics and health.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it with `oneshot`; the
//! `dashcache` binary (`main.rs`) only loads the configuration, sets up tracing, binds and
//! serves with graceful shutdown.

pub mod auth;
pub mod cli;
pub mod db;
pub mod error;
pub(crate) mod routes;
pub mod serve;
pub mod state;
pub mod upstream;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{delete, get, post};
use dashcache::ratelimit::{OnError, RateLimitLayer, RateLimiter, Rule, Scope, TrustedProxies};

pub use error::AppError;
pub use routes::access::{MAX_HEADER_BYTES, MAX_HEADERS, REQUEST_ID};
pub use state::AppState;

/// The largest request body accepted (bigger ones get 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The service's rate limits: login 5 a minute per address; reads 100 a minute and writes 30 a
/// minute per user (per address when anonymous); OAuth callbacks 20 a minute per address;
/// everything else 300 a minute per address — each multiplied by `scale` (1 in production; the
/// drill and load tests raise it). Health and metrics are never limited. When the buckets
/// cannot be reached, login and callbacks — what an attacker would hammer — are decided on this
/// instance's own memory buckets (the limit holds per instance); every other rule fails open,
/// counted.
///
/// # Errors
/// Never in practice: the rules are constants (a bad one is a programming error reported as
/// `InvalidArgument`).
pub fn rate_limits(
    limiter: RateLimiter,
    trusted: TrustedProxies,
    scale: u64,
) -> dashcache::Result<RateLimitLayer> {
    let per_minute = |name: &str, n: u64| Rule::per_minute(name, n.saturating_mul(scale.max(1)));
    let reads = per_minute("reads", 100)?.with_scope(Scope::User);
    let writes = per_minute("writes", 30)?.with_scope(Scope::User);
    let mut layer = RateLimitLayer::new(limiter)
        .route(
            Method::POST,
            "/api/v1/sessions",
            per_minute("login", 5)?.with_on_error(OnError::Local),
        )
        .route(
            Method::GET,
            "/api/v1/providers/callback",
            per_minute("callback", 20)?.with_on_error(OnError::Local),
        )
        .default_rule(per_minute("default", 300)?)
        .skip("/health")
        .skip("/metrics")
        .trusted_proxies(trusted);
    for path in [
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/sessions",
        "/api/v1/sessions/current",
        "/api/v1/providers/{connection_id}",
        "/api/v1/accounts",
        "/api/v1/accounts/{id}/balance",
        "/api/v1/accounts/{id}/holdings",
        "/api/v1/accounts/{id}/transactions",
    ] {
        layer = layer.route(Method::GET, path, reads.clone());
    }
    for (method, path) in [
        (Method::PATCH, "/api/v1/users/{id}"),
        (Method::DELETE, "/api/v1/users/{id}/sessions"),
        (Method::DELETE, "/api/v1/users/{id}/sessions/{handle}"),
        (Method::DELETE, "/api/v1/sessions/current"),
        (Method::POST, "/api/v1/users/{id}/roles"),
        (Method::DELETE, "/api/v1/users/{id}/roles/{role}"),
        (Method::POST, "/api/v1/users/{id}/security/rotate"),
        (Method::POST, "/api/v1/security/rotate"),
        (Method::POST, "/api/v1/providers/{slug}/connect"),
        (Method::POST, "/api/v1/accounts"),
        (Method::POST, "/api/v1/accounts/{id}/transactions"),
        (Method::POST, "/api/v1/providers/{connection_id}/refresh"),
    ] {
        layer = layer.route(method, path, writes.clone());
    }
    Ok(layer)
}

/// How often one client network may present a session the cache does not have (forged,
/// expired, or the first request after a restart), `per_minute` times `scale`: only then does
/// a lookup reach the database. Decided on this instance's own buckets while the cache is down.
///
/// # Errors
/// Never in practice (a constant rule).
pub fn session_lookup_limit(
    limiter: RateLimiter,
    scale: u64,
) -> dashcache::Result<(RateLimiter, Rule)> {
    let rule = Rule::per_minute("session_lookup", 60u64.saturating_mul(scale.max(1)))?
        .with_on_error(OnError::Local);
    Ok((limiter, rule))
}

/// The service's router over `state`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(routes::ops::health))
        .route("/metrics", get(routes::ops::metrics))
        .route("/api/v1/cache/stats", get(routes::ops::stats))
        .route("/api/v1/sessions", post(routes::sessions::login))
        .route(
            "/api/v1/sessions/current",
            get(routes::sessions::current).delete(routes::sessions::logout),
        )
        .route(
            "/api/v1/users/{id}",
            get(routes::users::get).patch(routes::users::patch),
        )
        .route(
            "/api/v1/users/{id}/sessions",
            get(routes::sessions::list).delete(routes::sessions::revoke_all),
        )
        .route(
            "/api/v1/users/{id}/sessions/{handle}",
            delete(routes::sessions::revoke_one),
        )
        .route("/api/v1/users/{id}/roles", post(routes::admin::add_role))
        .route(
            "/api/v1/users/{id}/roles/{role}",
            delete(routes::admin::remove_role),
        )
        .route(
            "/api/v1/users/{id}/security/rotate",
            post(routes::admin::rotate_user),
        )
        .route(
            "/api/v1/security/rotate",
            post(routes::admin::rotate_global),
        )
        .route(
            "/api/v1/providers/callback",
            get(routes::providers::callback),
        )
        .route(
            "/api/v1/providers/{connection_id}",
            get(routes::providers::get),
        )
        .route(
            "/api/v1/providers/{slug}/connect",
            post(routes::providers::connect),
        )
        .route(
            "/api/v1/providers/{connection_id}/refresh",
            post(routes::providers::refresh),
        )
        .route(
            "/api/v1/accounts",
            get(routes::accounts::list).post(routes::accounts::create),
        )
        .route(
            "/api/v1/accounts/{id}/balance",
            get(routes::ledger::balance),
        )
        .route(
            "/api/v1/accounts/{id}/holdings",
            get(routes::ledger::holdings),
        )
        .route(
            "/api/v1/accounts/{id}/transactions",
            get(routes::ledger::transactions).post(routes::ledger::add_transaction),
        )
        .fallback(routes::ops::not_found)
        .method_not_allowed_fallback(routes::access::method_not_allowed)
        // Outermost last: the body limit, then authentication, then the rate limits (which see
        // the authenticated user), then the handler.
        .layer(state.rate_limits().clone())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::access::access,
        ))
        .with_state(state)
}
