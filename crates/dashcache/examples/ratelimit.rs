//! The rate-limit middleware on an axum app: login limited per address (and refused when the
//! limiter is down), account reads per user on a route with a path parameter, health checks
//! never limited. Try it:
//!
//! ```text
//! cargo run -p dashcache --features axum --example ratelimit
//! for i in $(seq 7); do curl -si -X POST localhost:3000/api/v1/sessions | grep -iE '^(HTTP|ratelimit|retry)'; done
//! ```
//!
//! With `REDIS_URL` set, the buckets live on Redis and every instance of the app shares them.

use std::net::SocketAddr;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use dashcache::Keys;
use dashcache::ratelimit::{OnError, RateLimitLayer, RateLimiter, Rule, Scope, TrustedProxies};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keys::new("example", ["ratelimit"])?;
    let limiter = match std::env::var("REDIS_URL") {
        Ok(url) => RateLimiter::redis(dashcache::RedisCache::builder(url).build()?, keys),
        Err(_) => RateLimiter::memory(keys),
    };
    let limits = RateLimitLayer::new(limiter)
        .route(
            Method::POST,
            "/api/v1/sessions",
            Rule::per_minute("login", 5)?.with_on_error(OnError::Deny),
        )
        .any_method(
            "/api/v1/accounts/{id}",
            Rule::per_minute("reads", 100)?.with_scope(Scope::User),
        )
        .default_rule(Rule::per_minute("default", 300)?)
        .skip("/health")
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"])?);
    let app = Router::new()
        .route("/api/v1/sessions", post(|| async { "logged in\n" }))
        .route("/api/v1/accounts/{id}", get(|| async { "account\n" }))
        .route("/health", get(|| async { "ok\n" }))
        .layer(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
