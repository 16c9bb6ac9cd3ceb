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
//! With `--once`, it sends those seven logins itself instead of serving (what CI runs).

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use dashcache::Keys;
use dashcache::ratelimit::{OnError, RateLimitLayer, RateLimiter, Rule, Scope, TrustedProxies};

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keys::new("ex-ratelimit", ["ratelimit"])?;
    let redis = common::redis().await?;
    let limiter = match &redis {
        Some(redis) => RateLimiter::redis(redis.clone(), keys.clone()),
        None => RateLimiter::memory(keys.clone()),
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
    if std::env::args().any(|a| a == "--once") {
        use tower::ServiceExt;
        let peer: SocketAddr = "127.0.0.1:40000".parse()?;
        for i in 1..=7 {
            let mut request =
                axum::http::Request::post("/api/v1/sessions").body(axum::body::Body::empty())?;
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = app.clone().oneshot(request).await?;
            println!("login {i}: {}", response.status());
        }
    } else {
        serve(app).await?;
    }
    if let Some(redis) = &redis {
        common::clean_up(redis, keys.prefix()).await?;
    }
    Ok(())
}

/// Serves `app` on port 3000 until Ctrl-C.
async fn serve(app: Router) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
