//! Operations routes, problem bodies and request ids.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::common::{self, TestApp, assert_problem, sqlite_app};

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
    dashcache_testkit::prometheus::check_described(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
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
    bad_input_gets_problem_bodies,
    every_answer_carries_a_request_id,
);
