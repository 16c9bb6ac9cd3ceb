//! The reference service, route by route, with `oneshot`: on the embedded cache and on a
//! spawned Redis and on a spawned Redis Cluster, over SQLite.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{TestApp, assert_problem, sqlite_app};
use dashcache_testkit::RedisServer;
use serde_json::json;

async fn health_metrics_and_stats(app: &TestApp) {
    let health = app.get("/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.body,
        json!({ "status": "healthy" }),
        "anyone sees the verdict alone"
    );
    let bob = app.login("u2").await;
    assert_eq!(
        app.get("/health", Some(&bob)).await.body,
        json!({ "status": "healthy" })
    );
    let admin = app.login("u1").await;
    let details = app.get("/health", Some(&admin)).await;
    assert_eq!(details.body["status"], "healthy", "{}", details.body);
    assert_eq!(details.body["database"]["status"], "up");
    assert_eq!(details.body["cache"]["status"], "up");
    assert!(
        !details.body.to_string().contains("://"),
        "no URL even for admins: {}",
        details.body
    );

    let token = app.login("u2").await;
    app.get("/api/v1/users/u2", Some(&token)).await;
    app.get("/api/v1/users/u2", Some(&token)).await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().unwrap();
    dashcache_testkit::prometheus::check_text_format(text)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{text}"));
    assert_eq!(
        text.matches("# TYPE dashcache_cache_operation_duration_seconds histogram")
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("# HELP dashcache_cache_operation_duration_seconds "));
    for needle in [
        "dashcache_cache_hits_total{namespace=\"user\"} 1",
        "dashcache_cache_misses_total{namespace=\"user\"}",
        "dashcache_cache_errors_total{namespace=\"session\"} 0",
        "dashcache_ratelimit_decisions_total{outcome=\"allowed\"}",
        "dashcache_db_queries_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let stats = app.get("/api/v1/cache/stats", None).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(
        stats.body["namespaces"]["user"]["hits"], 1,
        "{}",
        stats.body
    );
    assert!(stats.body["total"]["hit_rate"].as_f64().unwrap() > 0.0);
    assert!(stats.body["db_queries"].as_u64().unwrap() > 0);
    assert_problem(
        &app.get("/no/such/route", None).await,
        StatusCode::NOT_FOUND,
    );
}

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

async fn login_session_revoke_and_revoke_all(app: &TestApp) {
    let bad = app
        .send(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({ "user_id": "u2", "password": "wrong" })),
        )
        .await;
    assert_problem(&bad, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.body["detail"], "invalid credentials");
    let unknown = app
        .send(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({ "user_id": "nobody", "password": "x" })),
        )
        .await;
    assert_problem(&unknown, StatusCode::UNAUTHORIZED);

    let login = app
        .send(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({ "user_id": "u2", "password": "bob-password" })),
        )
        .await;
    assert_eq!(login.status, StatusCode::CREATED);
    let cookie = login
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let token = login.body["token"].as_str().unwrap().to_owned();
    let handle = login.body["session"].as_str().unwrap().to_owned();
    assert_ne!(token, handle, "the handle is not the token");
    assert_eq!(
        login.headers.get(header::WWW_AUTHENTICATE),
        None,
        "only 401s challenge"
    );
    assert_eq!(
        bad.headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap()),
        Some("Bearer"),
    );
    assert_eq!(bad.body["detail"], unknown.body["detail"], "same answer");

    // The cookie authenticates too.
    let by_cookie = app
        .raw(
            Request::builder()
                .uri("/api/v1/accounts")
                .header(header::COOKIE, cookie.split(';').next().unwrap())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::OK);

    let session = app.get("/api/v1/sessions/current", Some(&token)).await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    assert_eq!(session.body["user_id"], "u2");
    assert_eq!(session.body["handle"], handle.as_str());
    let listed = app.get("/api/v1/users/u2/sessions", Some(&token)).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["handle"], handle.as_str());
    assert!(
        !listed.body.to_string().contains(&token),
        "a listing never shows a token"
    );
    // A handle does not authenticate.
    assert_problem(
        &app.get("/api/v1/accounts", Some(&handle)).await,
        StatusCode::UNAUTHORIZED,
    );

    let logout = app
        .send(
            Method::DELETE,
            "/api/v1/sessions/current",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let expired = logout
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(expired.contains("Max-Age=0"), "{expired}");
    assert_problem(
        &app.get("/api/v1/accounts", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
    );

    // One session ended by the handle a listing shows.
    let (a, b) = (app.login("u2").await, app.login("u2").await);
    let listed = app.get("/api/v1/users/u2/sessions", Some(&a)).await;
    let handles: Vec<String> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["handle"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(handles.len(), 2);
    let b_handle = app.get("/api/v1/sessions/current", Some(&b)).await.body["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(handles.contains(&b_handle));
    let one = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/u2/sessions/{b_handle}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::NO_CONTENT, "{}", one.body);
    assert_problem(
        &app.get("/api/v1/accounts", Some(&b)).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(
        app.get("/api/v1/accounts", Some(&a)).await.status,
        StatusCode::OK
    );

    let c = app.login("u2").await;
    let all = app
        .send(Method::DELETE, "/api/v1/users/u2/sessions", Some(&a), None)
        .await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["revoked"], 2);
    for t in [&a, &c] {
        assert_problem(
            &app.get("/api/v1/accounts", Some(t)).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    // Someone else's sessions are not yours to see or end.
    let carol = app.login("u3").await;
    let bob = app.login("u2").await;
    let bob_handle = app.get("/api/v1/sessions/current", Some(&bob)).await.body["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_problem(
        &app.get("/api/v1/users/u2/sessions", Some(&carol)).await,
        StatusCode::FORBIDDEN,
    );
    let ended = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/u2/sessions/{bob_handle}"),
            Some(&carol),
            None,
        )
        .await;
    assert_problem(&ended, StatusCode::NOT_FOUND);
    let ended = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/u3/sessions/{bob_handle}"),
            Some(&carol),
            None,
        )
        .await;
    assert_problem(&ended, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/v1/accounts", Some(&bob)).await.status,
        StatusCode::OK
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
    let done = app.get(&callback, None).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["user_id"], "u2");
    assert_eq!(done.body["provider"], "fidelity");
    let replay = app.get(&callback, None).await;
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

async fn a_role_change_takes_effect_on_the_next_request(app: &TestApp) {
    let alice = app.login("u1").await;
    let bob = app.login("u2").await;
    let grant = |token: String, user: &'static str| async move {
        app.send(
            Method::POST,
            &format!("/api/v1/users/{user}/roles"),
            Some(&token),
            Some(json!({ "role": "admin" })),
        )
        .await
    };
    assert_problem(&grant(bob.clone(), "u3").await, StatusCode::FORBIDDEN);
    // Twice, so the denial is cached.
    assert_problem(&grant(bob.clone(), "u3").await, StatusCode::FORBIDDEN);
    let granted = grant(alice.clone(), "u2").await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    assert_eq!(granted.body["roles"], json!(["admin", "user"]));
    assert_eq!(
        grant(bob.clone(), "u3").await.status,
        StatusCode::OK,
        "bob is admin now"
    );
    let revoke = app
        .send(
            Method::DELETE,
            "/api/v1/users/u2/roles/admin",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::OK);
    assert_problem(&grant(bob, "u3").await, StatusCode::FORBIDDEN);
    let profile = app.get("/api/v1/users/u2", Some(&alice)).await;
    assert_eq!(
        profile.body["roles"],
        json!(["user"]),
        "the cached profile was invalidated"
    );
}

async fn a_bumped_security_version_revokes_sessions(app: &TestApp) {
    let alice = app.login("u1").await;
    let bob = app.login("u2").await;
    let carol = app.login("u3").await;
    let mine = app
        .send(
            Method::POST,
            "/api/v1/users/u2/security/rotate",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    assert_problem(
        &app.get("/api/v1/accounts", Some(&bob)).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(
        app.get("/api/v1/accounts", Some(&carol)).await.status,
        StatusCode::OK
    );
    assert_problem(
        &app.send(Method::POST, "/api/v1/security/rotate", Some(&carol), None)
            .await,
        StatusCode::FORBIDDEN,
    );
    let global = app
        .send(Method::POST, "/api/v1/security/rotate", Some(&alice), None)
        .await;
    assert_eq!(global.status, StatusCode::OK);
    for t in [&alice, &carol] {
        assert_problem(
            &app.get("/api/v1/accounts", Some(t)).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    let fresh = app.login("u2").await;
    assert_eq!(
        app.get("/api/v1/accounts", Some(&fresh)).await.status,
        StatusCode::OK
    );
}

async fn logins_are_rate_limited_per_address(app: &TestApp) {
    let attempt = |peer: &'static str| async move {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/sessions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "user_id": "u2", "password": "wrong" }).to_string(),
            ))
            .unwrap();
        let addr: std::net::SocketAddr = format!("{peer}:5000").parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        app.raw(req).await
    };
    for i in 0..5 {
        let r = attempt("198.51.100.7").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(r.headers.get("ratelimit-limit").unwrap(), "5");
    }
    let limited = attempt("198.51.100.7").await;
    assert_problem(&limited, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.get(header::RETRY_AFTER).is_some());
    assert_eq!(limited.headers.get("ratelimit-remaining").unwrap(), "0");
    assert_eq!(
        attempt("198.51.100.8").await.status,
        StatusCode::UNAUTHORIZED,
        "another address"
    );
}

async fn bad_input_gets_problem_bodies(app: &TestApp) {
    let token = app.login("u2").await;
    let send_raw = |method: Method, path: &'static str, body: String| {
        let token = token.clone();
        async move {
            app.raw(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
        }
    };
    let malformed = send_raw(Method::PATCH, "/api/v1/users/u2", "{not json".into()).await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST);
    let wrong_type = send_raw(
        Method::PATCH,
        "/api/v1/users/u2",
        json!({ "name": 42 }).to_string(),
    )
    .await;
    assert_problem(&wrong_type, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_field = send_raw(
        Method::PATCH,
        "/api/v1/users/u2",
        json!({ "admin": true }).to_string(),
    )
    .await;
    assert_problem(&unknown_field, StatusCode::UNPROCESSABLE_ENTITY);
    let empty_name = send_raw(
        Method::PATCH,
        "/api/v1/users/u2",
        json!({ "name": " " }).to_string(),
    )
    .await;
    assert_problem(&empty_name, StatusCode::BAD_REQUEST);
    let huge = send_raw(
        Method::PATCH,
        "/api/v1/users/u2",
        json!({ "name": "x".repeat(200_000) }).to_string(),
    )
    .await;
    assert_problem(&huge, StatusCode::PAYLOAD_TOO_LARGE);
    let bad_id = app.get("/api/v1/users/not%20an%20id", Some(&token)).await;
    assert_problem(&bad_id, StatusCode::BAD_REQUEST);
    let glob_id = app.get("/api/v1/users/u*", Some(&token)).await;
    assert_problem(&glob_id, StatusCode::BAD_REQUEST);
    let no_user = app
        .send(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({ "user_id": "", "password": "x" })),
        )
        .await;
    assert_problem(&no_user, StatusCode::BAD_REQUEST);
    let missing_field = app
        .send(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({ "user_id": "u2" })),
        )
        .await;
    assert_problem(&missing_field, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_query = app.get("/api/v1/providers/callback?state=x", None).await;
    assert_problem(&bad_query, StatusCode::BAD_REQUEST);
    let forged_token = app.get("/api/v1/accounts", Some("not-a-session-id")).await;
    assert_problem(&forged_token, StatusCode::UNAUTHORIZED);
    assert_eq!(
        forged_token.headers.get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    // A method the route does not take, and oversized headers: problems too.
    let wrong_method = app.send(Method::PUT, "/api/v1/accounts", None, None).await;
    assert_problem(&wrong_method, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.headers.contains_key(header::ALLOW));
    let huge = "x".repeat(dashcache_server::MAX_HEADER_BYTES + 1);
    let request = Request::builder()
        .uri("/api/v1/accounts")
        .header("x-padding", huge)
        .body(Body::empty())
        .unwrap();
    assert_problem(
        &app.raw(request).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    );
}

/// Every answer carries a request id: a proxy's sane one is kept, anything else replaced.
async fn every_answer_carries_a_request_id(app: &TestApp) {
    let id_of = |reply: &common::Reply| {
        reply
            .headers
            .get(dashcache_server::REQUEST_ID)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap()
    };
    let fresh = id_of(&app.get("/health", None).await);
    assert_eq!(fresh.len(), 16, "{fresh}");
    assert_ne!(fresh, id_of(&app.get("/health", None).await));
    let kept = Request::builder()
        .uri("/no/such/route")
        .header(dashcache_server::REQUEST_ID, "edge-7f3a.1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(id_of(&app.raw(kept).await), "edge-7f3a.1");
    let forged = Request::builder()
        .uri("/health")
        .header(dashcache_server::REQUEST_ID, "a b\" status=500")
        .body(Body::empty())
        .unwrap();
    assert_ne!(id_of(&app.raw(forged).await), "a b\" status=500");
}

dashcache_testkit::on_every_backend!(|backend| &super::sqlite_app(backend.url()).await;
    health_metrics_and_stats,
    a_cached_read_does_not_touch_the_database_and_a_write_invalidates,
    login_session_revoke_and_revoke_all,
    providers_accounts_and_one_time_oauth_state,
    a_role_change_takes_effect_on_the_next_request,
    a_bumped_security_version_revokes_sessions,
    logins_are_rate_limited_per_address,
    bad_input_gets_problem_bodies,
    every_answer_carries_a_request_id,
);

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
    assert_eq!(app.get(&callback, None).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&callback, None).await.status,
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
    assert_eq!(app.get(&callback, None).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&callback, None).await.status,
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
