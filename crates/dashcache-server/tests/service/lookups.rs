//! Session lookups when the cache cannot answer: a Redis outage, a Sentinel failover or a
//! Cluster failover logs nobody out (only lookups that find no live session are charged to
//! the address), forged tokens still reach the database at most the limit's number of times,
//! and a 401 says why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use crate::common::{self, TestApp, assert_problem, sqlite_app};
use dashcache_testkit::{RedisCluster, RedisSentinels, RedisServer};

/// One address, as an office NAT would be.
const OFFICE: &str = "198.51.100.7:40000";

/// Every status an address got, counted.
type Statuses = BTreeMap<u16, usize>;

fn forged(i: u32) -> String {
    format!("{:0>22}.{:0>8}", format!("forged{i}"), "AAAAAAAA")
}

/// Several sessions of each demo user (12 tokens), as many users behind one address would
/// have.
async fn sessions(app: &TestApp) -> Vec<String> {
    let mut tokens = Vec::new();
    for user in ["u1", "u2", "u3"] {
        for _ in 0..4 {
            tokens.push(app.login(user).await);
        }
    }
    tokens
}

/// `n` reads from [`OFFICE`] with `tokens` in turn.
async fn reads(app: &TestApp, tokens: &[String], n: usize) -> Statuses {
    let mut statuses = Statuses::new();
    for i in 0..n {
        let reply = app
            .send_from(
                OFFICE,
                Method::GET,
                "/api/v1/accounts",
                Some(&tokens[i % tokens.len()]),
                None,
            )
            .await;
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
    }
    statuses
}

/// `dashcache_session_lookups_total{outcome="…"}` from `/metrics`.
fn lookups(app: &TestApp, outcome: &str) -> u64 {
    let text = app.state.render_metrics();
    let prefix = format!("dashcache_session_lookups_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Redis killed, production limits. 300 reads of valid sessions from one address: 200 or
/// 429, never 401. Then 100 forged tokens from it reach the database at most the limit's
/// number of times (60 a minute, plus what refilled while they ran), and are refused as
/// "limited" (a refusal the metrics tell from a bad token) — while the valid sessions, which
/// this instance verified, still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_logs_nobody_out_and_still_stops_forged_tokens() {
    let mut server = RedisServer::start();
    let app = sqlite_app(Some(server.url())).await;
    let tokens = sessions(&app).await;
    server.kill();

    let statuses = reads(&app, &tokens, 300).await;
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 100,
        "{statuses:?}"
    );
    assert_eq!(lookups(&app, "limited"), 0);

    let started = Instant::now();
    let before = app.queries();
    let mut limited = 0;
    for i in 0..100 {
        let reply = app
            .send_from(
                OFFICE,
                Method::GET,
                "/api/v1/accounts",
                Some(&forged(i)),
                None,
            )
            .await;
        assert_problem(&reply, StatusCode::UNAUTHORIZED);
        if reply.body["reason"] == "limited" {
            limited += 1;
        } else {
            assert_eq!(reply.body["reason"], "unknown", "{}", reply.body);
        }
    }
    let queries = app.queries() - before;
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        queries <= 60 + refilled,
        "{queries} database lookups for 100 forged tokens: the limit is 60 a minute"
    );
    assert!(queries >= 50, "the first lookups do reach the database");
    assert!(limited >= 30, "{limited} refused as limited");
    assert_eq!(lookups(&app, "limited"), limited);
    assert!(lookups(&app, "unknown") >= 50);

    // The address is out of allowance; the sessions this instance verified still work.
    let statuses = reads(&app, &tokens, 30).await;
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(lookups(&app, "memory") > 0);

    // A user who logs in now, from that address, is not refused either: the instance that
    // issued the session remembers it.
    let login = app
        .send_from(
            OFFICE,
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({"user_id": "u2", "password": "bob-password"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
    let fresh = login.body["token"].as_str().unwrap().to_owned();
    let statuses = reads(&app, &[fresh], 10).await;
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 429),
        "a session issued during the outage: {statuses:?}"
    );
}

/// An app over SQLite and the Redis at `url` with the production deadlines (the test
/// settings' generous ones would hold each request through most of a failover), and no L1: an
/// L1 answers most reads through a short failover, and every request must meet it here.
async fn production_app(url: String) -> TestApp {
    use dashcache::vars::{CACHE_CONNECT_TIMEOUT_MS, CACHE_L1_MAX_ENTRIES, CACHE_TIMEOUT_MS};
    let millis = |n: dashcache::vars::Number| n.default_duration().as_millis().to_string();
    let (timeout, connect) = (millis(CACHE_TIMEOUT_MS), millis(CACHE_CONNECT_TIMEOUT_MS));
    let settings = common::settings_with(
        Some(url),
        &[
            (CACHE_TIMEOUT_MS.name, &timeout),
            (CACHE_CONNECT_TIMEOUT_MS.name, &connect),
            (CACHE_L1_MAX_ENTRIES.name, "0"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    common::app_with_settings(&common::sqlite_url(&dir), settings)
        .await
        .keeping(dir)
}

/// A reader (every 25 ms) and a writer (every 50 ms) with one valid token while the cache
/// fails over and for a while after; every status they got.
async fn under_load<F: FnOnce() + Send + 'static>(app: Arc<TestApp>, failover: F) -> Statuses {
    let token = app.login("u2").await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = |path: &'static str, method: Method, every: u64| {
        let (app, token, stop) = (Arc::clone(&app), token.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut statuses = Statuses::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = (method == Method::PATCH).then(|| json!({ "name": format!("Bob {i}") }));
                let reply = app
                    .send_from(OFFICE, method.clone(), path, Some(&token), body)
                    .await;
                *statuses.entry(reply.status.as_u16()).or_default() += 1;
                i += 1;
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
            statuses
        })
    };
    let reader = client("/api/v1/accounts", Method::GET, 25);
    let writer = client("/api/v1/users/u2", Method::PATCH, 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(failover).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = reader.await.unwrap();
    for (status, n) in writer.await.unwrap() {
        *statuses.entry(status).or_default() += n;
    }
    statuses
}

/// A Sentinel failover under a reader and a writer with a valid token: no 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_logs_nobody_out() {
    let set = Arc::new(std::sync::Mutex::new(RedisSentinels::start()));
    let url = set.lock().unwrap().url();
    let app = Arc::new(production_app(url).await);
    let failing = Arc::clone(&set);
    let statuses = under_load(Arc::clone(&app), move || {
        let mut set = failing.lock().unwrap();
        let old = set.kill_master();
        set.wait_for_new_master(old, Duration::from_secs(60));
    })
    .await;
    assert!(!statuses.contains_key(&401), "{statuses:?}");
    assert!(statuses.keys().all(|s| *s < 500), "{statuses:?}");
    assert!(statuses.contains_key(&200), "{statuses:?}");
}

/// Cluster failovers (each master killed in turn, its replica elected) under the same load: no
/// 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_logs_nobody_out() {
    let cluster = Arc::new(std::sync::Mutex::new(RedisCluster::start()));
    let url = cluster.lock().unwrap().url();
    let app = Arc::new(production_app(url).await);
    let failing = Arc::clone(&cluster);
    let statuses = under_load(Arc::clone(&app), move || {
        let mut cluster = failing.lock().unwrap();
        // Every shard in turn, so whichever holds the session's slot fails over; the killed
        // node comes back as a replica before the next. The masters are listed by node, and
        // a promoted replica sorts after the originals: the first is always a shard not yet
        // failed over.
        for _ in 0..3 {
            let killed = cluster.kill_master(0);
            cluster.wait_until_ok(Duration::from_secs(60));
            cluster.restart_node(killed);
        }
    })
    .await;
    assert!(!statuses.contains_key(&401), "{statuses:?}");
    assert!(statuses.keys().all(|s| *s < 500), "{statuses:?}");
}

/// Each 401 says why — missing, malformed, unknown or expired, revoked — in its detail and its
/// `reason`, the same whether or not an account exists; a user's session on an operations
/// endpoint is refused with 403, no token at all with 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::options(&common::sqlite_url(&dir));
    options.web.ops_token = Some("an-operations-token-of-some-length".into());
    let app = common::app_with(&options, common::settings(None))
        .await
        .keeping(dir);
    let reason = |reply: &common::Reply| {
        assert_problem(reply, StatusCode::UNAUTHORIZED);
        reply.body["reason"].as_str().unwrap_or_default().to_owned()
    };
    let with_header = |value: &'static str| {
        let mut request = common::request(Method::GET, "/api/v1/accounts", None, None);
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
        request
    };

    assert_eq!(reason(&app.get("/api/v1/accounts", None).await), "missing");
    assert_eq!(
        reason(&app.raw(with_header("Basic dTI6cHc=")).await),
        "malformed"
    );
    assert_eq!(
        reason(&app.get("/api/v1/accounts", Some("garbage")).await),
        "malformed"
    );
    let unknown = app.get("/api/v1/accounts", Some(&forged(1))).await;
    assert_eq!(reason(&unknown), "unknown");
    assert!(
        unknown.body["detail"]
            .as_str()
            .unwrap()
            .contains("log in again"),
        "{}",
        unknown.body
    );

    let bob = app.login("u2").await;
    // The scheme is case-insensitive.
    let lower = format!("bearer {bob}");
    let mut request = common::request(Method::GET, "/api/v1/accounts", None, None);
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, lower.parse().unwrap());
    assert_eq!(app.raw(request).await.status, StatusCode::OK);
    let logout = app
        .send(Method::DELETE, "/api/v1/sessions/current", Some(&bob), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reason(&app.get("/api/v1/accounts", Some(&bob)).await),
        "revoked"
    );

    // A rotated user's sessions are revoked too.
    let carol = app.login("u3").await;
    let admin = app.login("u1").await;
    let rotate = app
        .send(
            Method::POST,
            "/api/v1/users/u3/security/rotate",
            Some(&admin),
            None,
        )
        .await;
    assert!(rotate.status.is_success(), "{}", rotate.body);
    assert_eq!(
        reason(&app.get("/api/v1/accounts", Some(&carol)).await),
        "revoked"
    );

    // A valid user on an operations endpoint: 403, not 401. Without anything: 401.
    let metrics = app.get("/metrics", Some(&admin)).await;
    assert_problem(&metrics, StatusCode::FORBIDDEN);
    let stats = app.get("/api/v1/cache/stats", Some(&admin)).await;
    assert_problem(&stats, StatusCode::FORBIDDEN);
    assert_eq!(reason(&app.get("/metrics", None).await), "operations_token");
    let ops = app
        .get("/metrics", Some("an-operations-token-of-some-length"))
        .await;
    assert_eq!(ops.status, StatusCode::OK);
}

/// The verified-session memory stays within its bound under 100,000 distinct sessions.
#[test]
fn the_verified_session_memory_is_bounded() {
    use dashcache_server::state::Verified;
    let memory = Verified::default();
    let session = |i: u64| dashcache_server::state::ServiceSession {
        id: format!("h{i}"),
        user_id: format!("user{}", i % 100),
        created_at: 0,
        expires_at: i64::MAX,
        last_activity: 0,
        ip: None,
        user_agent: None,
        global_version: 0,
        user_version: 0,
    };
    for i in 0..100_000 {
        memory.remember(format!("k{i}"), session(i));
    }
    assert!(memory.len() <= Verified::CAPACITY, "{}", memory.len());
    assert!(!memory.is_empty());
    // Forgetting one user forgets only theirs.
    let before = memory.len();
    memory.forget_user("user7");
    let after = memory.len();
    assert!(
        after < before && after >= before - before / 50,
        "{before} -> {after}"
    );
    memory.forget(&[]);
    assert!(memory.is_empty());
}
