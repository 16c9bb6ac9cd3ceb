//! `RateLimitLayer` over a real axum router: headers, 429 problems, path-parameter routes, the
//! skip list, trusted proxies, and failing open or closed when Redis is gone.

#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use axum::routing::{get, post};
use dashcache::Keys;
use dashcache::ratelimit::{
    AuthenticatedUser, OnError, RateLimitLayer, RateLimiter, Rule, Scope, TrustedProxies,
};
use dashcache_testkit::{RedisServer, redis_cache};
use tower::ServiceExt;

fn keys() -> Keys {
    Keys::new("t", ["ratelimit"]).unwrap()
}

fn layer(limiter: RateLimiter) -> RateLimitLayer {
    RateLimitLayer::new(limiter)
        .route(
            Method::POST,
            "/api/v1/sessions",
            Rule::per_minute("login", 5).unwrap(),
        )
        .any_method(
            "/api/v1/accounts/{id}",
            Rule::per_minute("accounts", 3)
                .unwrap()
                .with_scope(Scope::User),
        )
        .default_rule(Rule::per_minute("default", 100).unwrap())
        .skip("/health")
        .trusted_proxies(TrustedProxies::parse(["10.0.0.0/8"]).unwrap())
}

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/api/v1/sessions", post(|| async { "session" }))
        .route("/api/v1/accounts/{id}", get(|| async { "account" }))
        .route("/health", get(|| async { "ok" }))
        .layer(layer)
}

fn request(method: Method, path: &str, peer: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let addr: SocketAddr = format!("{peer}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

fn header(resp: &Response<Body>, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

async fn body_json(resp: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn headers_count_down_then_429_with_a_problem() {
    let app = app(layer(RateLimiter::memory(keys())));
    let mut last = u64::MAX;
    for i in 0..5 {
        let resp = app
            .clone()
            .oneshot(request(Method::POST, "/api/v1/sessions", "203.0.113.1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert_eq!(header(&resp, "ratelimit-limit"), Some(5));
        let remaining = header(&resp, "ratelimit-remaining").unwrap();
        assert!(
            remaining < last && remaining <= 5,
            "remaining decrements: {remaining}"
        );
        last = remaining;
        let reset = header(&resp, "ratelimit-reset").unwrap();
        assert!((1..=60).contains(&reset), "seconds until full: {reset}");
        assert!(resp.headers().get("retry-after").is_none());
    }
    let resp = app
        .clone()
        .oneshot(request(Method::POST, "/api/v1/sessions", "203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "ratelimit-remaining"), Some(0));
    let retry = header(&resp, "retry-after").unwrap();
    assert!(
        (1..=12).contains(&retry),
        "5 a minute: a token every 12 s, got {retry}"
    );
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let body = body_json(resp).await;
    assert_eq!(body["status"], 429);
    assert_eq!(body["title"], "Too Many Requests");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    // Another address has its own bucket.
    let other = app
        .oneshot(request(Method::POST, "/api/v1/sessions", "203.0.113.2"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn routes_with_path_parameters_are_limited_as_a_pattern() {
    let app = app(layer(RateLimiter::memory(keys())));
    // Different ids, one route pattern, one bucket (per user).
    for id in ["1", "2", "3"] {
        let mut req = request(
            Method::GET,
            &format!("/api/v1/accounts/{id}"),
            "203.0.113.1",
        );
        req.extensions_mut().insert(AuthenticatedUser("u1".into()));
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let mut req = request(Method::GET, "/api/v1/accounts/4", "203.0.113.1");
    req.extensions_mut().insert(AuthenticatedUser("u1".into()));
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another user on the same address is not affected: the rule is per user.
    let mut req = request(Method::GET, "/api/v1/accounts/4", "203.0.113.1");
    req.extensions_mut().insert(AuthenticatedUser("u2".into()));
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_skip_list_is_never_limited() {
    let limiter = RateLimiter::memory(keys());
    let app = app(layer(limiter).default_rule(Rule::per_minute("default", 1).unwrap()));
    for _ in 0..20 {
        let resp = app
            .clone()
            .oneshot(request(Method::GET, "/health", "203.0.113.1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let app = app(layer(RateLimiter::memory(keys())));
    let login = |peer: &str, xff: &str| {
        let mut req = request(Method::POST, "/api/v1/sessions", peer);
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        req
    };
    // An untrusted client spoofing a new address each time changes nothing.
    for i in 0..5 {
        let resp = app
            .clone()
            .oneshot(login("203.0.113.9", &format!("198.51.100.{i}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = app
        .clone()
        .oneshot(login("203.0.113.9", "198.51.100.99"))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the spoofed header was ignored"
    );

    // Behind our proxy the forwarded client is the one limited.
    for _ in 0..5 {
        let resp = app
            .clone()
            .oneshot(login("10.0.0.5", "192.0.2.50"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = app
        .clone()
        .oneshot(login("10.0.0.5", "192.0.2.50"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let resp = app.oneshot(login("10.0.0.5", "192.0.2.51")).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "another client behind the same proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_open_or_closed_per_rule() {
    let mut server = RedisServer::start();
    let cache = redis_cache(&server).await;
    let limiter = RateLimiter::redis(
        dashcache::RedisCache::builder(server.url())
            .timeout(Duration::from_millis(250))
            .connect()
            .await
            .unwrap(),
        keys(),
    );
    drop(cache);
    let layer = RateLimitLayer::new(limiter)
        .route(
            Method::POST,
            "/api/v1/sessions",
            Rule::per_minute("login", 5)
                .unwrap()
                .with_on_error(OnError::Deny),
        )
        .default_rule(
            Rule::per_minute("default", 100)
                .unwrap()
                .with_on_error(OnError::Allow),
        );
    let app = app(layer.clone());
    assert_eq!(
        app.clone()
            .oneshot(request(Method::GET, "/api/v1/accounts/1", "203.0.113.1"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    server.kill();
    for _ in 0..3 {
        let open = app
            .clone()
            .oneshot(request(Method::GET, "/api/v1/accounts/1", "203.0.113.1"))
            .await
            .unwrap();
        assert_eq!(
            open.status(),
            StatusCode::OK,
            "fail-open rule lets the request through"
        );
        let closed = app
            .clone()
            .oneshot(request(Method::POST, "/api/v1/sessions", "203.0.113.1"))
            .await
            .unwrap();
        assert_eq!(
            closed.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "fail-closed rule refuses"
        );
        assert_eq!(
            closed.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
    }
    let stats = layer.stats();
    assert_eq!(
        (stats.fail_open, stats.fail_closed, stats.allowed),
        (3, 3, 1)
    );
}
