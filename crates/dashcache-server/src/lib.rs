//! The dashcache reference service: an axum app over a real database that uses every pattern
//! of the library — cache-aside reads, write-through sessions, one-time OAuth state, cached
//! permission checks, security-version revocation, rate limits, metrics and health.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it with `oneshot`; the
//! `dashcache` binary (`main.rs`) only loads the configuration, sets up tracing, binds and
//! serves with graceful shutdown.

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub(crate) mod ids;
pub(crate) mod routes;
pub mod serve;
pub mod state;
pub(crate) mod text;
pub mod upstream;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use dashcache::ratelimit::{OnError, RateLimitLayer, RateLimiter, Rule, Scope, TrustedProxies};

pub use error::AppError;
pub use routes::access::{MAX_HEADER_BYTES, MAX_HEADERS, REQUEST_ID};
pub use state::AppState;

/// The largest request body accepted (bigger ones get 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The service's rate limits, from the route table (each route declares its rule): login 5 a
/// minute per address; reads 100 a minute and writes 30 a minute per user (per address when
/// anonymous); OAuth callbacks 20 a minute per address; operations routes and anything
/// unrouted 300 a minute per address — each multiplied by `scale` (1 in production; the drill
/// and load tests raise it). Health and metrics are never limited. When the buckets cannot be
/// reached, login and callbacks — what an attacker would hammer — are decided on this
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
    use routes::Limit;
    let per_minute = |name: &str, n: u64| Rule::per_minute(name, n.saturating_mul(scale.max(1)));
    let login = per_minute("login", 5)?.with_on_error(OnError::Local);
    let callback = per_minute("callback", 20)?.with_on_error(OnError::Local);
    let reads = per_minute("reads", 100)?.with_scope(Scope::User);
    let writes = per_minute("writes", 30)?.with_scope(Scope::User);
    let default = per_minute("default", 300)?;
    let mut layer = RateLimitLayer::new(limiter)
        .default_rule(default.clone())
        .trusted_proxies(trusted);
    for endpoint in routes::endpoints() {
        let (method, path) = (endpoint.method, endpoint.path);
        layer = match endpoint.limit {
            Limit::Login => layer.route(method, path, login.clone()),
            Limit::Callback => layer.route(method, path, callback.clone()),
            Limit::Reads => layer.route(method, path, reads.clone()),
            Limit::Writes => layer.route(method, path, writes.clone()),
            Limit::Ops => layer.route(method, path, default.clone()),
            Limit::Never => layer.skip(path),
        };
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

/// Failed logins per account: 20 per 15 minutes (times `scale`), whatever the address they
/// come from — the per-address login rule alone lets an attacker with many addresses guess
/// one account's password without end. Kept per instance while the cache is down. Only
/// failures count, so an attacker cannot lock a user out by logging in as them with the right
/// password (they cannot), and a user's own logins never use it up.
///
/// # Errors
/// Never in practice (a constant rule).
pub fn login_account_limit(
    limiter: RateLimiter,
    scale: u64,
) -> dashcache::Result<(RateLimiter, Rule)> {
    let tries = 20u64.saturating_mul(scale.max(1));
    let rule = Rule::new(
        "login_account",
        tries,
        tries,
        std::time::Duration::from_secs(15 * 60),
    )?
    .with_on_error(OnError::Local);
    Ok((limiter, rule))
}

/// Every route of the service, as (method, path pattern): what the README's route table must
/// list (a test holds them to each other).
pub fn route_table() -> Vec<(axum::http::Method, &'static str)> {
    routes::endpoints()
        .into_iter()
        .map(|e| (e.method, e.path))
        .collect()
}

/// The service's router over `state`: every route of the route table.
pub fn app(state: AppState) -> Router {
    let router = routes::endpoints()
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path, endpoint.handler)
        });
    router
        .fallback(routes::ops::not_found)
        .method_not_allowed_fallback(routes::access::method_not_allowed)
        // Outermost last: the body limit, then authentication, then the origin of cookie
        // writes, then the rate limits (which see the authenticated user), then the handler.
        .layer(state.rate_limits().clone())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::same_origin,
        ))
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
