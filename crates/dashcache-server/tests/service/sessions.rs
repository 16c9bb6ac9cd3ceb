//! Logins, sessions, revocation, roles and the login limit.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::common::{TestApp, assert_problem, sqlite_app};

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
    // Nobody to rotate: 404, not a version for a user who does not exist.
    assert_problem(
        &app.send(
            Method::POST,
            "/api/v1/users/nosuch/security/rotate",
            Some(&alice),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
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
    // The sessions the bumps cut off are not listed as live: only the fresh one is.
    let listed = app.get("/api/v1/users/u2/sessions", Some(&fresh)).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
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

dashcache_testkit::on_every_backend!(|backend| &super::sqlite_app(backend.url()).await;
    login_session_revoke_and_revoke_all,
    a_role_change_takes_effect_on_the_next_request,
    a_bumped_security_version_revokes_sessions,
    logins_are_rate_limited_per_address,
);
