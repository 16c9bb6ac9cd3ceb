//! End to end on PostgreSQL (a schema of its own, dropped afterwards) with Redis: the same
//! flows as on SQLite, against the other database.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

mod common;

use axum::http::{Method, StatusCode};
use dashcache_testkit::{PostgresServer, RedisServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_postgresql_and_redis() {
    let postgres = PostgresServer::start();
    let schema = postgres.schema();
    let redis = RedisServer::start();
    let app = common::app_on(schema.url(), Some(redis.url())).await;
    assert!(app.state.db().is_postgres());

    let health = app.get("/health", None).await;
    assert_eq!(health.body["status"], "healthy", "{}", health.body);

    let bob = app.login("u2").await;
    let alice = app.login("u1").await;
    assert_eq!(
        app.get("/api/v1/users/u2", Some(&bob)).await.body["email"],
        "bob@example.com"
    );
    let before = app.queries();
    app.get("/api/v1/users/u2", Some(&bob)).await;
    assert_eq!(app.queries(), before, "cached");
    let patched = app
        .send(
            Method::PATCH,
            "/api/v1/users/u2",
            Some(&bob),
            Some(json!({ "email": "robert@example.com" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        app.get("/api/v1/users/u2", Some(&bob)).await.body["email"],
        "robert@example.com"
    );

    let connect = app
        .send(
            Method::POST,
            "/api/v1/providers/schwab/connect",
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

    let granted = app
        .send(
            Method::POST,
            "/api/v1/users/u3/roles",
            Some(&alice),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(granted.body["roles"], json!(["admin", "user"]));
    let rotated = app
        .send(
            Method::POST,
            "/api/v1/users/u2/security/rotate",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(rotated.body["version"], 1);
    assert_eq!(
        app.get("/api/v1/accounts", Some(&bob)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let all = app
        .send(
            Method::DELETE,
            "/api/v1/users/u1/sessions",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(all.body["revoked"], 1);
}

/// A PostgreSQL database starts empty: `serve`'s default (`DemoData::Auto`) seeds only the
/// default SQLite file, so no published admin password ever lands in a real database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_postgresql_database_gets_no_demo_users() {
    let postgres = PostgresServer::start();
    let schema = postgres.schema();
    let mut options = common::options(schema.url());
    options.demo = dashcache_server::serve::DemoData::Auto;
    let app = common::app_with(&options, common::settings(None)).await;
    assert!(app.state.db().is_postgres());
    assert_eq!(app.state.db().user_count().await.unwrap(), 0);
    let alice = app
        .send(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({ "user_id": "u1", "password": "alice-password" })),
        )
        .await;
    assert_eq!(alice.status, StatusCode::UNAUTHORIZED);
}
