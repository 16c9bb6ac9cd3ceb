//! The second pass: cookie writes need the service's own origin, the OAuth callback is bound to
//! the user who started it, free text cannot break the database (SQLite and PostgreSQL), a
//! first page's key no cursor can name, a login limit per account, operations endpoints closed
//! on a public listener, secrets out of `Debug`, and a problem body for every error status.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use dashcache_testkit::PostgresServer;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{self, Reply, TestApp, assert_problem, sqlite_app};

/// A write with the session cookie and `headers`, from a fixed peer.
async fn cookie_write(app: &TestApp, path: &str, token: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::COOKIE, format!("session={token}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    app.raw(builder.body(Body::empty()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_writes_must_come_from_the_services_own_origin() {
    let app = sqlite_app(None).await;
    let bob = app.login("u2").await;
    let rotate = "/api/v1/users/u2/security/rotate";
    for headers in [
        &[
            ("origin", "https://evil.example"),
            ("content-type", "text/plain"),
        ][..],
        // A sibling subdomain is the same *site*: SameSite=Lax lets its requests carry the
        // cookie, the origin check does not.
        &[
            ("origin", "http://app.example.com"),
            ("host", "api.example.com"),
        ][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[("origin", "null")][..],
        // Neither header: refused too.
        &[][..],
    ] {
        let reply = cookie_write(&app, rotate, &bob, headers).await;
        assert_problem(&reply, StatusCode::FORBIDDEN);
        assert!(
            reply.body["detail"].as_str().unwrap().contains("origin"),
            "{headers:?}: {}",
            reply.body
        );
    }
    // The service's own origin, by `Origin` or by `Sec-Fetch-Site`.
    let own = cookie_write(
        &app,
        rotate,
        &bob,
        &[
            ("origin", "http://api.example.com"),
            ("host", "api.example.com"),
        ],
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    // The rotation revoked Bob's session: a new one for the rest.
    let bob = app.login("u2").await;
    let fetch = cookie_write(&app, rotate, &bob, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(fetch.status, StatusCode::OK, "{}", fetch.body);
    // A bearer token is not the browser's doing: any origin.
    let bob = app.login("u2").await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(rotate)
        .header(header::AUTHORIZATION, format!("Bearer {bob}"))
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.raw(request).await.status, StatusCode::OK);
    // Reads with the cookie are not writes: no origin needed.
    let bob = app.login("u2").await;
    let request = Request::builder()
        .uri("/api/v1/users/u2")
        .header(header::COOKIE, format!("session={bob}"))
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.raw(request).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_behind_a_proxy_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::options(&common::sqlite_url(&dir));
    options.web.allowed_origins = vec!["https://app.example".to_owned()];
    let app = common::app_with(&options, common::settings(None))
        .await
        .keeping(dir);
    let bob = app.login("u2").await;
    let reply = cookie_write(
        &app,
        "/api/v1/security/rotate",
        &bob,
        &[("origin", "https://app.example"), ("host", "internal:8080")],
    )
    .await;
    // Not an admin: past the origin check, refused by the role check.
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(!reply.body["detail"].as_str().unwrap().contains("origin"));
    // And a JSON body is JSON: `connect` refuses another content type.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/providers/plaid/connect")
        .header(header::AUTHORIZATION, format!("Bearer {bob}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"alias":"x"}"#))
        .unwrap();
    assert_problem(&app.raw(request).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn connect(app: &TestApp, token: &str) -> String {
    let reply = app
        .send(
            Method::POST,
            "/api/v1/providers/plaid/connect",
            Some(token),
            Some(json!({ "alias": "savings" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth_callback_belongs_to_the_user_who_started_it() {
    let app = sqlite_app(None).await;
    let bob = app.login("u2").await;
    let carol = app.login("u3").await;
    let callback = |state: &str| format!("/api/v1/providers/callback?state={state}&code=ok");
    // No one signed in: refused, and the state is burnt.
    let state = connect(&app, &bob).await;
    assert_problem(
        &app.get(&callback(&state), None).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_problem(
        &app.get(&callback(&state), Some(&bob)).await,
        StatusCode::BAD_REQUEST,
    );
    // Someone else: refused, and burnt for Bob too.
    let state = connect(&app, &bob).await;
    assert_problem(
        &app.get(&callback(&state), Some(&carol)).await,
        StatusCode::FORBIDDEN,
    );
    assert_problem(
        &app.get(&callback(&state), Some(&bob)).await,
        StatusCode::BAD_REQUEST,
    );
    // Bob himself, once.
    let state = connect(&app, &bob).await;
    let done = app.get(&callback(&state), Some(&bob)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["user_id"], "u2");
}

/// What keeps a PostgreSQL app's database alive (the schema before the server).
type PgKeep = Option<(dashcache_testkit::PgSchema, PostgresServer)>;

/// An app over SQLite, and one over PostgreSQL, with write limits out of the way.
async fn both_databases() -> Vec<(&'static str, TestApp, PgKeep)> {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::options(&common::sqlite_url(&dir));
    options.rate_limit_scale = 100_000;
    let sqlite = common::app_with(&options, common::settings(None))
        .await
        .keeping(dir);
    let postgres = PostgresServer::start();
    let schema = postgres.schema();
    let mut options = common::options(schema.url());
    options.rate_limit_scale = 100_000;
    let pg = common::app_with(&options, common::settings(None)).await;
    vec![
        ("sqlite", sqlite, None),
        ("postgres", pg, Some((schema, postgres))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_text_is_checked_once_and_never_breaks_the_database() {
    for (db, app, _server) in both_databases().await {
        let bob = app.login("u2").await;
        let patch = |body: Value| {
            let bob = bob.clone();
            let app = &app;
            async move {
                app.send(Method::PATCH, "/api/v1/users/u2", Some(&bob), Some(body))
                    .await
            }
        };
        for (field, value) in [
            ("name", "Bob\u{0}x"),
            ("name", "Bob\u{202e}x"),
            ("name", "Bob\u{200b}x"),
            ("name", "\u{7}"),
            ("email", "bob\u{0}@example.com"),
            ("email", "bob@exa\u{feff}mple.com"),
        ] {
            let reply = patch(json!({ field: value })).await;
            assert_problem(&reply, StatusCode::BAD_REQUEST);
            assert_eq!(reply.body["field"], field, "{db}: {}", reply.body);
        }
        for (path, body, field) in [
            (
                "/api/v1/accounts",
                json!({ "connection_id": "c2", "name": "Sav\u{0}ings" }),
                "name",
            ),
            (
                "/api/v1/accounts/a3/transactions",
                json!({ "amount_cents": 1, "description": "coffee\u{0}" }),
                "description",
            ),
        ] {
            let reply = app.send(Method::POST, path, Some(&bob), Some(body)).await;
            assert_problem(&reply, StatusCode::BAD_REQUEST);
            assert_eq!(reply.body["field"], field, "{db}: {}", reply.body);
        }
        // An e-mail address is one account's, whatever its case.
        let taken = patch(json!({ "email": "ALICE@example.com" })).await;
        assert_problem(&taken, StatusCode::CONFLICT);
        let mine = patch(json!({ "email": "Bob@Example.com" })).await;
        assert_eq!(mine.status, StatusCode::OK, "{db}: {}", mine.body);
    }
}

/// What the property test sends: arbitrary text, with the characters that break things made
/// likely, sometimes 10 kB of it.
fn hostile_text() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('\u{0}'),
        Just('\u{202e}'),
        Just('\u{200b}'),
        Just('\u{feff}'),
        Just('\u{ffff}'),
        Just('\u{1b}'),
        Just('\''),
        Just('"'),
        Just('\\'),
        Just('%'),
        Just('*'),
    ];
    let char = prop_oneof![3 => any::<char>(), 1 => special];
    prop_oneof![
        8 => prop::collection::vec(char.clone(), 0..40),
        1 => prop::collection::vec(char, 10_000..10_001),
    ]
    .prop_map(|chars| chars.into_iter().collect())
}

/// Sends `text` to every write route that takes free text; any 5xx fails.
async fn write_everywhere(app: &TestApp, bob: &str, alice: &str, text: &str) {
    let sends: [(Method, &str, &str, Value); 6] = [
        (
            Method::PATCH,
            "/api/v1/users/u2",
            bob,
            json!({ "name": text }),
        ),
        (
            Method::PATCH,
            "/api/v1/users/u2",
            bob,
            json!({ "email": text }),
        ),
        (
            Method::POST,
            "/api/v1/accounts",
            bob,
            json!({ "connection_id": "c2", "name": text }),
        ),
        (
            Method::POST,
            "/api/v1/accounts/a3/transactions",
            bob,
            json!({ "amount_cents": 1, "description": text }),
        ),
        (
            Method::POST,
            "/api/v1/providers/plaid/connect",
            bob,
            json!({ "alias": text }),
        ),
        (
            Method::POST,
            "/api/v1/users/u3/roles",
            alice,
            json!({ "role": text }),
        ),
    ];
    for (method, path, token, body) in sends {
        let reply = app.send(method, path, Some(token), Some(body)).await;
        assert!(
            !reply.status.is_server_error(),
            "{path} with {:?}: {} {}",
            text.chars().take(40).collect::<String>(),
            reply.status,
            reply.body
        );
    }
}

#[test]
fn no_string_makes_a_write_route_fail_on_either_database() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let apps = runtime.block_on(async {
        let mut out = Vec::new();
        for (db, app, server) in both_databases().await {
            let bob = app.login("u2").await;
            let alice = app.login("u1").await;
            out.push((db, app, server, bob, alice));
        }
        out
    });
    for (db, app, _server, bob, alice) in &apps {
        // JSON escapes that are no string at all: a lone surrogate.
        runtime.block_on(async {
            let raw = Request::builder()
                .method(Method::PATCH)
                .uri("/api/v1/users/u2")
                .header(header::AUTHORIZATION, format!("Bearer {bob}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"a\ud800b"}"#))
                .unwrap();
            let reply = app.raw(raw).await;
            assert!(reply.status.is_client_error(), "{db}: {}", reply.status);
        });
        let config = ProptestConfig {
            cases: 1000,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(text in hostile_text())| {
            runtime.block_on(write_everywhere(app, bob, alice, &text));
        });
        println!("{db}: 1000 strings × 6 write routes, no 5xx");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parameter_can_name_another_pages_key() {
    let app = sqlite_app(None).await;
    let bob = app.login("u2").await;
    let added = app
        .send(
            Method::POST,
            "/api/v1/accounts/a3/transactions",
            Some(&bob),
            Some(json!({ "amount_cents": 500, "description": "lunch" })),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    // Edge values of every parameter of the cached routes: never a 5xx, and never a cached
    // answer under another request's key.
    for edge in ["-", ".", "_", "@first", "%40first", "..", "a3", "*", "%2A"] {
        for path in [
            format!("/api/v1/accounts/a3/transactions?cursor={edge}"),
            format!("/api/v1/accounts/a3/transactions?cursor={edge}&limit=1"),
            format!("/api/v1/users/{edge}"),
            format!("/api/v1/providers/{edge}"),
            format!("/api/v1/accounts/{edge}/transactions"),
        ] {
            let reply = app.get(&path, Some(&bob)).await;
            assert!(!reply.status.is_server_error(), "{path}: {}", reply.status);
        }
    }
    // The first page still holds the transaction: `cursor=-` cached nothing in its place.
    let first = app
        .get("/api/v1/accounts/a3/transactions", Some(&bob))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(
        first.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["description"] == "lunch"),
        "{}",
        first.body
    );
}

/// A login attempt from `peer`.
async fn login_from(app: &TestApp, peer: &str, user: &str, password: &str) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/sessions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "user_id": user, "password": password }).to_string(),
        ))
        .unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    app.raw(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_gets_twenty_failed_logins_whatever_the_addresses() {
    let app = sqlite_app(None).await;
    for user in ["u2", "nobody"] {
        // Each guess from an address of its own: the per-address rule never triggers.
        for i in 0..20 {
            let reply = login_from(
                &app,
                &format!("198.51.{}.{i}:4000", user.len()),
                user,
                "guess",
            )
            .await;
            assert_problem(&reply, StatusCode::UNAUTHORIZED);
        }
        let refused = login_from(&app, "198.51.200.1:4000", user, "guess").await;
        assert_problem(&refused, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers.contains_key(header::RETRY_AFTER));
        assert_eq!(refused.body["detail"], "too many attempts: retry later");
    }
    // Even the right password waits: the attacker cannot learn it by trying more.
    let right = login_from(&app, "198.51.201.1:4000", "u2", "bob-password").await;
    assert_problem(&right, StatusCode::TOO_MANY_REQUESTS);
    // Another account is not affected.
    let carol = login_from(&app, "198.51.202.1:4000", "u3", "carol-password").await;
    assert_eq!(carol.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_need_the_token_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::options(&common::sqlite_url(&dir));
    options.web.loopback_only = false;
    let app = common::app_with(&options, common::settings(None))
        .await
        .keeping(dir);
    for path in ["/metrics", "/api/v1/cache/stats"] {
        let reply = app.get(path, None).await;
        assert_problem(&reply, StatusCode::FORBIDDEN);
        assert!(reply.body["detail"].as_str().unwrap().contains("token"));
    }
    // `/health` keeps answering its verdict to anyone.
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let options = dashcache_server::cli::http_load::LoadOptions {
        base: "http://127.0.0.1:8080".into(),
        paths: vec!["/".into()],
        token: Some("s3cret-token-value".into()),
        concurrency: 1,
        duration: std::time::Duration::from_secs(1),
        report_every: None,
    };
    let shown = format!("{options:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decoy_hash_is_made_at_start() {
    let _app = sqlite_app(None).await;
    assert!(dashcache_server::auth::password::decoy_is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_is_a_problem() {
    let app = sqlite_app(None).await;
    let bob = app.login("u2").await;
    // 405, 413 (a body past the limit, read raw by `connect`), 415, 404, 400 (a bad query).
    let big = vec![b'x'; dashcache_server::MAX_BODY_BYTES + 1];
    let cases = [
        (
            Method::DELETE,
            "/api/v1/accounts",
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/api/v1/providers/plaid/connect",
            Some("application/json"),
            Some(big),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/api/v1/accounts",
            Some("text/plain"),
            Some(b"{}".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (Method::GET, "/nowhere", None, None, StatusCode::NOT_FOUND),
        (
            Method::GET,
            "/api/v1/accounts/a3/transactions?limit=many",
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, content_type, body, status) in cases {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {bob}"));
        if let Some(t) = content_type {
            builder = builder.header(header::CONTENT_TYPE, t);
        }
        let request = builder.body(Body::from(body.unwrap_or_default())).unwrap();
        assert_problem(&app.raw(request).await, status);
    }
}

/// Over a real socket: more header fields than hyper's own default (100) still get our 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_a_problem_over_a_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = sqlite_app(None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashcache_server::serve::serve_on(
        listener,
        app.state.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    for fields in [80, 150] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = String::from("GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
        for i in 0..fields {
            request.push_str(&format!("x-filler-{i}: y\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431"), "{fields}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("application/problem+json"),
            "{fields}: {answer}"
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
