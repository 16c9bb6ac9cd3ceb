//! Cached reads of users, providers and accounts, and the one-time OAuth state.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestApp, assert_problem, sqlite_app};

async fn a_cached_read_does_not_touch_the_database_and_a_write_invalidates(app: &TestApp) {
    let token = app.login("u2").await;
    let first = app.get("/api/v1/users/u2", Some(&token)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["name"], "Bob");
    let before = app.queries();
    let second = app.get("/api/v1/users/u2", Some(&token)).await;
    assert_eq!(second.body, first.body);
    assert_eq!(app.queries(), before, "the second read came from the cache");

    let patched = app
        .send(
            Method::PATCH,
            "/api/v1/users/u2",
            Some(&token),
            Some(json!({ "name": "Robert" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["name"], "Robert");
    let third = app.get("/api/v1/users/u2", Some(&token)).await;
    assert_eq!(
        third.body["name"], "Robert",
        "the write invalidated the cached copy"
    );
    // Another user may read but not write.
    let carol = app.login("u3").await;
    assert_eq!(
        app.get("/api/v1/users/u2", Some(&carol)).await.status,
        StatusCode::OK
    );
    let forbidden = app
        .send(
            Method::PATCH,
            "/api/v1/users/u2",
            Some(&carol),
            Some(json!({ "name": "Mallory" })),
        )
        .await;
    assert_problem(&forbidden, StatusCode::FORBIDDEN);
    assert_problem(
        &app.get("/api/v1/users/u404", Some(&carol)).await,
        StatusCode::NOT_FOUND,
    );
    assert_problem(
        &app.get("/api/v1/users/u2", None).await,
        StatusCode::UNAUTHORIZED,
    );
}

async fn providers_accounts_and_one_time_oauth_state(app: &TestApp) {
    let alice = app.login("u1").await;
    let conn = app.get("/api/v1/providers/c1", Some(&alice)).await;
    assert_eq!(conn.status, StatusCode::OK);
    assert_eq!(conn.body["provider"], "schwab");
    let bob = app.login("u2").await;
    assert_problem(
        &app.get("/api/v1/providers/c1", Some(&bob)).await,
        StatusCode::NOT_FOUND,
    );

    let accounts = app.get("/api/v1/accounts", Some(&bob)).await;
    assert_eq!(accounts.body.as_array().unwrap().len(), 1);
    let before = app.queries();
    app.get("/api/v1/accounts", Some(&bob)).await;
    assert_eq!(app.queries(), before, "the account list is cached");
    let created = app
        .send(
            Method::POST,
            "/api/v1/accounts",
            Some(&bob),
            Some(json!({ "connection_id": "c2", "name": "Savings", "balance_cents": 100 })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        app.get("/api/v1/accounts", Some(&bob))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2,
        "invalidated"
    );
    let not_mine = app
        .send(
            Method::POST,
            "/api/v1/accounts",
            Some(&bob),
            Some(json!({ "connection_id": "c1", "name": "x" })),
        )
        .await;
    assert_problem(&not_mine, StatusCode::NOT_FOUND);

    let connect = app
        .send(
            Method::POST,
            "/api/v1/providers/fidelity/connect",
            Some(&bob),
            Some(json!({ "alias": "retirement" })),
        )
        .await;
    assert_eq!(connect.status, StatusCode::OK, "{}", connect.body);
    let state = connect.body["state"].as_str().unwrap().to_owned();
    assert!(
        connect.body["authorize_url"]
            .as_str()
            .unwrap()
            .contains(&state)
    );
    let callback = format!("/api/v1/providers/callback?state={state}&code=abc");
    let done = app.get(&callback, Some(&bob)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["user_id"], "u2");
    assert_eq!(done.body["provider"], "fidelity");
    let replay = app.get(&callback, Some(&bob)).await;
    assert_problem(&replay, StatusCode::BAD_REQUEST);
    let id = done.body["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/providers/{id}"), Some(&bob))
            .await
            .status,
        StatusCode::OK
    );
    assert_problem(
        &app.get("/api/v1/providers/callback?state=forged&code=x", None)
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_problem(
        &app.send(
            Method::POST,
            "/api/v1/providers/nowhere/connect",
            Some(&bob),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    );
}

dashcache_testkit::on_every_backend!(|backend| &super::sqlite_app(backend.url()).await;
    a_cached_read_does_not_touch_the_database_and_a_write_invalidates,
    providers_accounts_and_one_time_oauth_state,
);
