//! The upstream provider API behind the cache, over real HTTP: hits make no call, concurrent
//! misses make one, failures serve the last good answer with its age (or a clear problem),
//! the breaker opens and recovers, a refresh forgets; transaction pages are invalidated per
//! account in one write; provider credentials never reach Redis.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{TestApp, app_with, assert_problem, options, settings_with, sqlite_url};
use dashcache_server::upstream::{KnobSettings, RunningUpstream, client_for};
use dashcache_testkit::RedisServer;
use serde_json::json;

struct Setup {
    app: Arc<TestApp>,
    upstream: RunningUpstream,
    /// Bob's session; his account `a3` is on his plaid connection `c2`.
    token: String,
}

async fn setup(redis_url: Option<String>, extra: &[(&str, &str)], latency_ms: u64) -> Setup {
    let upstream = RunningUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        KnobSettings {
            latency_ms,
            ..KnobSettings::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&sqlite_url(&dir));
    opts.rate_limit_scale = 1000;
    opts.web.upstream = Some(client_for(&upstream.url()));
    let app = app_with(&opts, settings_with(redis_url, extra))
        .await
        .keeping(dir);
    let token = app.login("u2").await;
    // Bob connects his plaid account again: the code is exchanged for a credential.
    let reply = app
        .send(
            Method::POST,
            "/api/v1/providers/plaid/connect",
            Some(&token),
            Some(json!({"alias": "checking"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let state = reply.body["state"].as_str().unwrap().to_owned();
    let reply = app
        .get(
            &format!("/api/v1/providers/callback?state={state}&code=the-code"),
            Some(&token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], "c2");
    assert_eq!(upstream.knobs.calls().token, 1);
    Setup {
        app: Arc::new(app),
        upstream,
        token,
    }
}

const BALANCE: &str = "/api/v1/accounts/a3/balance";

fn header<'a>(reply: &'a common::Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_makes_no_upstream_call_and_a_refresh_forgets() {
    let s = setup(None, &[], 0).await;
    let first = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(header(&first, "x-cache"), "miss");
    assert_eq!(first.body["account_id"], "a3");
    for _ in 0..20 {
        let again = s.app.get(BALANCE, Some(&s.token)).await;
        assert_eq!(header(&again, "x-cache"), "hit");
        assert_eq!(again.body, first.body);
        assert!(again.headers.contains_key("age"));
    }
    assert_eq!(s.upstream.knobs.calls().balance, 1);
    let holdings = s
        .app
        .get("/api/v1/accounts/a3/holdings", Some(&s.token))
        .await;
    assert_eq!(holdings.status, StatusCode::OK);
    assert!(!holdings.body["positions"].as_array().unwrap().is_empty());
    // Someone else's account is not found, and costs no call.
    let alice = s.app.login("u1").await;
    assert_problem(
        &s.app.get(BALANCE, Some(&alice)).await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(s.upstream.knobs.calls().balance, 1);
    // A refresh forgets the connection's answers: the next read asks the provider.
    let reply = s
        .app
        .send(
            Method::POST,
            "/api/v1/providers/c2/refresh",
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let after = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(header(&after, "x-cache"), "miss");
    assert_eq!(s.upstream.knobs.calls().balance, 2);
    // Calls are counted by route in /metrics.
    let metrics = s.app.state.render_metrics();
    dashcache_testkit::prometheus::check_described(&metrics)
        .unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    assert!(
        metrics.contains("dashcache_upstream_calls_total{route=\"balance\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_upstream_call() {
    let s = setup(None, &[], 200).await;
    let readers: Vec<_> = (0..100)
        .map(|_| {
            let (app, token) = (Arc::clone(&s.app), s.token.clone());
            tokio::spawn(async move { app.get(BALANCE, Some(&token)).await })
        })
        .collect();
    for reader in readers {
        let reply = reader.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(s.upstream.knobs.calls().balance, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_with_nothing_cached_are_clear_problems_and_the_breaker_recovers() {
    let s = setup(None, &[], 0).await;
    let knobs = &s.upstream.knobs;
    // Errors: 502.
    knobs.set(KnobSettings {
        error_rate: 1.0,
        ..KnobSettings::default()
    });
    let reply = s.app.get(BALANCE, Some(&s.token)).await;
    assert_problem(&reply, StatusCode::BAD_GATEWAY);
    assert!(reply.body["detail"].as_str().unwrap().contains("plaid"));
    // Too slow: 504 at the loader's deadline.
    knobs.set(KnobSettings {
        latency_ms: 3000,
        ..KnobSettings::default()
    });
    assert_problem(
        &s.app.get(BALANCE, Some(&s.token)).await,
        StatusCode::GATEWAY_TIMEOUT,
    );
    // Down: after 5 consecutive failures the breaker opens and sheds calls (503).
    knobs.set(KnobSettings {
        down: true,
        ..KnobSettings::default()
    });
    for _ in 0..3 {
        s.app.get(BALANCE, Some(&s.token)).await;
    }
    let called = knobs.calls().balance;
    for _ in 0..10 {
        assert_problem(
            &s.app.get(BALANCE, Some(&s.token)).await,
            StatusCode::SERVICE_UNAVAILABLE,
        );
    }
    assert_eq!(
        knobs.calls().balance,
        called,
        "an open breaker calls nobody"
    );
    // Healthy again: after the open period, one probe closes it.
    knobs.set(KnobSettings::default());
    tokio::time::sleep(Duration::from_millis(5100)).await;
    let reply = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(knobs.calls().balance, called + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_ttl_the_last_good_answer_stands_in_with_its_age() {
    let s = setup(
        None,
        &[
            ("CACHE_TTL_PROVIDER_API", "10"),
            ("CACHE_TTL_JITTER_PERCENT", "0"),
        ],
        0,
    )
    .await;
    let first = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(first.status, StatusCode::OK);
    s.upstream.knobs.set(KnobSettings {
        error_rate: 1.0,
        ..KnobSettings::default()
    });
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let stale = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(stale.status, StatusCode::OK, "{}", stale.body);
    assert_eq!(header(&stale, "x-cache"), "stale");
    assert!(header(&stale, "age").parse::<u64>().unwrap() >= 10);
    assert_eq!(stale.body, first.body);
    // Slow instead of failing: the same.
    s.upstream.knobs.set(KnobSettings {
        latency_ms: 3000,
        ..KnobSettings::default()
    });
    let slow = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.body);
    assert_eq!(header(&slow, "x-cache"), "stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_transaction_misses_every_page_of_its_account_only() {
    let s = setup(None, &[], 0).await;
    let app = &s.app;
    let alice = app.login("u1").await;
    for i in 0..5 {
        let reply = app
            .send(
                Method::POST,
                "/api/v1/accounts/a3/transactions",
                Some(&s.token),
                Some(json!({"amount_cents": -100 * i, "description": format!("coffee {i}")})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        app.send(
            Method::POST,
            "/api/v1/accounts/a1/transactions",
            Some(&alice),
            Some(json!({"amount_cents": 100, "description": "dividend"})),
        )
        .await;
    }
    let page = |token: &str, path: &str| {
        let (app, token, path) = (Arc::clone(&s.app), token.to_owned(), path.to_owned());
        async move { app.get(&path, Some(&token)).await }
    };
    let first = page(&s.token, "/api/v1/accounts/a3/transactions?limit=2").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["items"][0]["description"], "coffee 4");
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second_path = format!("/api/v1/accounts/a3/transactions?limit=2&cursor={cursor}");
    let second = page(&s.token, &second_path).await;
    assert_eq!(second.body["items"][0]["description"], "coffee 2");
    let theirs = page(&alice, "/api/v1/accounts/a1/transactions?limit=2").await;
    assert_eq!(theirs.body["items"].as_array().unwrap().len(), 2);
    // Cached: no query reaches the database.
    let before = app.queries();
    for path in [
        "/api/v1/accounts/a3/transactions?limit=2",
        second_path.as_str(),
    ] {
        page(&s.token, path).await;
    }
    page(&alice, "/api/v1/accounts/a1/transactions?limit=2").await;
    assert_eq!(app.queries(), before);
    // A new transaction of a3: both its pages miss; a1's page is still cached.
    app.send(
        Method::POST,
        "/api/v1/accounts/a3/transactions",
        Some(&s.token),
        Some(json!({"amount_cents": -250, "description": "lunch"})),
    )
    .await;
    let before = app.queries();
    page(&alice, "/api/v1/accounts/a1/transactions?limit=2").await;
    assert_eq!(
        app.queries(),
        before,
        "another account's page was invalidated"
    );
    let first = page(&s.token, "/api/v1/accounts/a3/transactions?limit=2").await;
    assert_eq!(first.body["items"][0]["description"], "lunch");
    let second = page(&s.token, &second_path).await;
    assert_eq!(second.body["items"][0]["description"], "coffee 2");
    assert_eq!(app.queries(), before + 2, "both pages of a3 missed");
    // Bounds.
    for bad in ["limit=0", "limit=201", "cursor=*"] {
        assert_problem(
            &page(&s.token, &format!("/api/v1/accounts/a3/transactions?{bad}")).await,
            StatusCode::BAD_REQUEST,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_credentials_never_reach_redis_or_the_database_in_clear() {
    let server = RedisServer::start();
    let s = setup(Some(server.url()), &[], 0).await;
    let reply = s.app.get(BALANCE, Some(&s.token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Every key and every string value on the server: no access token (they start `pat_`).
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(!key.contains("pat_"), "{key}");
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if kind == "string" {
            let value: Vec<u8> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(
                !value.windows(4).any(|w| w == b"pat_"),
                "a credential in {key}"
            );
        }
    }
    // At rest, sealed.
    let sealed = s.app.state.db().sealed_credential("c2").await.unwrap();
    assert!(!sealed.unwrap().contains("pat_"));
    // And the in-memory copy is redacted in Debug.
    let credential = s.app.state.credential("c2").await.unwrap().unwrap();
    assert!(!format!("{credential:?}").contains("pat_"));
}

/// `POST /_admin/knobs` over HTTP; the status, content type and body.
async fn post_knobs(upstream: &RunningUpstream, body: &str) -> (u16, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(upstream.addr).await.unwrap();
    let request = format!(
        "POST /_admin/knobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, serde_json::from_str(body).unwrap())
}

/// The stand-in's knobs change one at a time (the others keep their value), and a bad change
/// is a problem, not a text/plain 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_knobs_change_one_at_a_time() {
    let upstream = RunningUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        KnobSettings {
            latency_ms: 7,
            ..KnobSettings::default()
        },
    )
    .await
    .unwrap();
    let (status, _, body) = post_knobs(&upstream, r#"{"down": true}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"latency_ms": 7, "error_rate": 0.0, "down": true})
    );
    let (status, _, body) = post_knobs(&upstream, r#"{"error_rate": 0.5}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"latency_ms": 7, "error_rate": 0.5, "down": true})
    );
    for bad in [r#"{"error_rate": 2}"#, r#"{"latency": 1}"#, "not json"] {
        let (status, content_type, body) = post_knobs(&upstream, bad).await;
        assert!((400..500).contains(&status), "{bad}: {status}");
        assert_eq!(content_type, "application/problem+json", "{bad}");
        assert_eq!(body["status"], status, "{bad}");
    }
    assert_eq!(upstream.knobs.settings().latency_ms, 7);
}
