//! Faults: Redis killed in the middle, and no cache at all. Every route answers, never a 5xx.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{self, sqlite_app};
use dashcache_testkit::RedisServer;

/// A request and the status it must get.
type Check<'a> = (
    Method,
    String,
    Option<&'a str>,
    Option<serde_json::Value>,
    StatusCode,
);

/// Redis dies in the middle: every route still answers from the database, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_mid_test_never_causes_a_5xx() {
    let mut server = RedisServer::start();
    let app = sqlite_app(Some(server.url())).await;
    let alice = app.login("u1").await;
    let bob = app.login("u2").await;
    app.get("/api/v1/users/u2", Some(&bob)).await;
    server.kill();

    let health = app.get("/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "degraded", "{}", health.body);

    let checks: Vec<Check<'_>> = vec![
        (
            Method::GET,
            "/api/v1/users/u2".into(),
            Some(&bob),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/accounts".into(),
            Some(&bob),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/providers/c2".into(),
            Some(&bob),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/users/u2/sessions".into(),
            Some(&bob),
            None,
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            "/api/v1/users/u2".into(),
            Some(&bob),
            Some(json!({ "name": "Bobby" })),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/accounts".into(),
            Some(&bob),
            Some(json!({ "connection_id": "c2", "name": "New" })),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/users/u3/roles".into(),
            Some(&alice),
            Some(json!({ "role": "admin" })),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/cache/stats".into(),
            None,
            None,
            StatusCode::OK,
        ),
        (Method::GET, "/metrics".into(), None, None, StatusCode::OK),
    ];
    for (method, path, token, body, expected) in checks {
        let reply = app.send(method.clone(), &path, token, body).await;
        assert_eq!(reply.status, expected, "{method} {path}: {}", reply.body);
    }
    // A login still works (the session is only in the database until the cache returns).
    let carol = app.login("u3").await;
    assert_eq!(
        app.get("/api/v1/accounts", Some(&carol)).await.status,
        StatusCode::OK
    );
    // OAuth stays one-time, kept in the database meanwhile.
    let connect = app
        .send(
            Method::POST,
            "/api/v1/providers/plaid/connect",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(connect.status, StatusCode::OK, "{}", connect.body);
    let callback = format!(
        "/api/v1/providers/callback?state={}&code=c",
        connect.body["state"].as_str().unwrap()
    );
    assert_eq!(app.get(&callback, Some(&bob)).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&callback, Some(&bob)).await.status,
        StatusCode::BAD_REQUEST,
        "replay refused"
    );
    // Revocations still bite: the session is gone for good.
    let revoke = app
        .send(
            Method::DELETE,
            "/api/v1/sessions/current",
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/accounts", Some(&carol)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The updated profile is what the database says.
    assert_eq!(
        app.get("/api/v1/users/u2", Some(&bob)).await.body["name"],
        "Bobby"
    );

    let stats = app.get("/api/v1/cache/stats", None).await;
    assert!(
        stats.body["total"]["errors"].as_u64().unwrap() > 0,
        "errors were counted"
    );
    assert!(stats.body["rate_limits"]["fail_open"].as_u64().unwrap() > 0);
}

/// `serve --cache none`: every read from the database, still correct, and `/health` honest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cache_the_service_runs_on_the_database_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("none.db").display());
    let options = dashcache_server::serve::ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: url,
        rate_limit_scale: 1,
        cache: dashcache_server::serve::CacheChoice::None,
        demo: dashcache_server::serve::DemoData::Yes,
        web: dashcache_server::state::WebOptions::default(),
    };
    let settings =
        dashcache::CacheSettings::from_sources(Vec::<(String, String)>::new(), None).unwrap();
    let state = dashcache_server::serve::build_state(&options, settings)
        .await
        .unwrap();
    let app = common::TestApp::from_state(state);
    let health = app.get("/health", None).await;
    assert_eq!(health.body["status"], "degraded");
    let bob = app.login("u2").await;
    let before = app.queries();
    assert_eq!(
        app.get("/api/v1/users/u2", Some(&bob)).await.status,
        StatusCode::OK
    );
    assert!(app.queries() > before, "read from the database");
    let connect = app
        .send(
            Method::POST,
            "/api/v1/providers/plaid/connect",
            Some(&bob),
            None,
        )
        .await;
    let callback = format!(
        "/api/v1/providers/callback?state={}&code=c",
        connect.body["state"].as_str().unwrap()
    );
    assert_eq!(app.get(&callback, Some(&bob)).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&callback, Some(&bob)).await.status,
        StatusCode::BAD_REQUEST
    );
    let revoke = app
        .send(Method::DELETE, "/api/v1/sessions/current", Some(&bob), None)
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/accounts", Some(&bob)).await.status,
        StatusCode::UNAUTHORIZED
    );
}
