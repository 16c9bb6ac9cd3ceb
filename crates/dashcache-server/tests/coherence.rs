//! The service follows the database, not Redis: two instances, each with its L1, on one Redis
//! (reached through a proxy that can partition it while it keeps its data) and one database
//! (SQLite and PostgreSQL). A logout, a removed role or a changed profile — made by a request,
//! with plain SQL, or by an instance that died before invalidating — is never served more
//! than Δ_db after its commit, whatever happens to Redis. Every answer is checked by one
//! history checker.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{TestApp, app_with, settings_with, sqlite_url};
use dashcache_testkit::{History, PgSchema, PostgresServer, Proxy, RedisServer};
use serde_json::json;

/// Δ_db for these instances.
const DELTA_DB: Duration = Duration::from_millis(500);

/// Where the pair's data lives.
enum Database {
    Sqlite(tempfile::TempDir),
    // The server lives as long as its schema.
    Postgres(#[allow(dead_code)] Box<PostgresServer>, PgSchema),
}

impl Database {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Self {
        let server = PostgresServer::start();
        let schema = server.schema();
        Self::Postgres(Box::new(server), schema)
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => sqlite_url(dir),
            Self::Postgres(_, schema) => schema.url().to_owned(),
        }
    }
}

/// Two instances over one database and one Redis, both through `proxy`.
struct Pair {
    a: Arc<TestApp>,
    b: Arc<TestApp>,
    proxy: Proxy,
    redis: RedisServer,
    database: Database,
}

impl Pair {
    async fn start(database: Database) -> Self {
        let redis = RedisServer::start();
        let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap());
        let url = database.url();
        let mut options = common::options(&url);
        // Far above this test's requests: it is about staleness, not the limiter.
        options.rate_limit_scale = 100;
        let settings = || {
            settings_with(
                Some(proxy.redis_url()),
                &[
                    ("CACHE_TIMEOUT_MS", "300"),
                    ("CACHE_CONNECT_TIMEOUT_MS", "300"),
                    ("CACHE_L1_STALENESS_MS", "300"),
                    ("CACHE_DB_STALENESS_MS", &DELTA_DB.as_millis().to_string()),
                ],
            )
        };
        let a = Arc::new(app_with(&options, settings()).await);
        let b = Arc::new(app_with(&options, settings()).await);
        for app in [&a, &b] {
            let consumer = app.state.log_consumer().unwrap();
            assert!(
                consumer.ready(Duration::from_secs(20)).await,
                "{consumer:?}"
            );
        }
        Self {
            a,
            b,
            proxy,
            redis,
            database,
        }
    }

    /// Asks `ask` on both instances until `stop`, recording each answer's version.
    fn watch<F, Fut>(
        &self,
        history: &Arc<History>,
        stop: &Arc<AtomicBool>,
        ask: F,
    ) -> Vec<tokio::task::JoinHandle<()>>
    where
        F: Fn(Arc<TestApp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = u64> + Send,
    {
        [("a", Arc::clone(&self.a)), ("b", Arc::clone(&self.b))]
            .into_iter()
            .map(|(name, app)| {
                let (history, stop, ask) = (Arc::clone(history), Arc::clone(stop), ask.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        let version = ask(Arc::clone(&app)).await;
                        history.read(began, version, name);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect()
    }

    /// Waits until both consumers have nothing left for Redis.
    async fn settled(&self) {
        let start = Instant::now();
        for app in [&self.a, &self.b] {
            let consumer = app.state.log_consumer().unwrap();
            while consumer.status().queued > 0 || consumer.status().follower.pending > 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the consumer never caught up: {consumer:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Bob's name as `app` shows it, as a version (`v<n>` is n).
async fn bobs_name(app: &TestApp, token: &str) -> u64 {
    let reply = app.get("/api/v1/users/u2", Some(token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["name"]
        .as_str()
        .and_then(|n| n.strip_prefix('v')?.parse().ok())
        .unwrap_or(0)
}

async fn stop_all(stop: &Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
}

/// Partition Redis, log Bob out and take Alice's admin role away, heal: neither the session
/// nor the role is accepted on either instance later than Δ_db after its commit — during the
/// partition, after the heal, and for good (the old service accepted the session for 45 s
/// and the role for 300 s after the heal).
async fn a_partition_undoes_neither_a_logout_nor_a_role_removal(database: Database) {
    let pair = Pair::start(database).await;
    let bob = pair.a.login("u2").await;
    let alice = pair.a.login("u1").await;
    // Both instances hold the session and the permission (in L1 and Redis).
    for app in [&pair.a, &pair.b] {
        for _ in 0..3 {
            assert_eq!(
                app.get("/api/v1/users/u2", Some(&bob)).await.status,
                StatusCode::OK
            );
            let listed = app.get("/api/v1/users/u2/sessions", Some(&alice)).await;
            assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        }
    }
    let session = Arc::new(History::named("Bob's session", DELTA_DB));
    let role = Arc::new(History::named("Alice's admin role", DELTA_DB));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = {
        let bob = bob.clone();
        pair.watch(&session, &stop, move |app| {
            let bob = bob.clone();
            async move {
                let status = app.get("/api/v1/users/u2", Some(&bob)).await.status;
                assert!(
                    matches!(status, StatusCode::OK | StatusCode::UNAUTHORIZED),
                    "{status}"
                );
                u64::from(status == StatusCode::UNAUTHORIZED)
            }
        })
    };
    tasks.extend({
        let alice = alice.clone();
        pair.watch(&role, &stop, move |app| {
            let alice = alice.clone();
            async move {
                let status = app
                    .get("/api/v1/users/u2/sessions", Some(&alice))
                    .await
                    .status;
                assert!(
                    matches!(status, StatusCode::OK | StatusCode::FORBIDDEN),
                    "{status}"
                );
                u64::from(status == StatusCode::FORBIDDEN)
            }
        })
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    pair.proxy.blackhole();
    let logout = pair
        .a
        .send(Method::DELETE, "/api/v1/sessions/current", Some(&bob), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.body);
    session.wrote(1);
    let demoted = pair
        .a
        .send(
            Method::DELETE,
            "/api/v1/users/u1/roles/admin",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.body);
    role.wrote(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pair.proxy.restore();
    pair.settled().await;
    // Long past the heal: the replayed invalidations reached Redis.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_all(&stop, tasks).await;
    session.assert_clean();
    role.assert_clean();
    assert!(session.reads() > 20 && role.reads() > 20);
    for app in [&pair.a, &pair.b] {
        assert_eq!(
            app.get("/api/v1/users/u2", Some(&bob)).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.get("/api/v1/users/u2/sessions", Some(&alice))
                .await
                .status,
            StatusCode::FORBIDDEN
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_partition_undoes_neither_a_logout_nor_a_role_removal() {
    a_partition_undoes_neither_a_logout_nor_a_role_removal(Database::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_partition_undoes_neither_a_logout_nor_a_role_removal() {
    a_partition_undoes_neither_a_logout_nor_a_role_removal(Database::postgres()).await;
}

/// How the profile changes while both instances read it.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// `PATCH` on instance A, with Redis frozen until the breaker is open.
    PatchWhileFrozen,
    /// `PATCH`es on A every 50 ms during `CLIENT PAUSE … WRITE`.
    PatchWhilePaused,
    /// `UPDATE users` on another connection: plain SQL, no service involved.
    PlainSql,
    /// A's own query, then A dies before it invalidates anything.
    InstanceDiesAfterCommit,
}

async fn profile_changes_are_served_within_delta(database: Database, writer: Writer) {
    let pair = Pair::start(database).await;
    let bob = pair.a.login("u2").await;
    let history = Arc::new(History::new(DELTA_DB));
    let stop = Arc::new(AtomicBool::new(false));
    let patch = |app: Arc<TestApp>, version: u64| {
        let bob = bob.clone();
        async move {
            let reply = app
                .send(
                    Method::PATCH,
                    "/api/v1/users/u2",
                    Some(&bob),
                    Some(json!({ "name": format!("v{version}") })),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    };
    patch(Arc::clone(&pair.a), 1).await;
    history.wrote(1);
    let tasks = {
        let bob = bob.clone();
        pair.watch(&history, &stop, move |app| {
            let bob = bob.clone();
            async move { bobs_name(&app, &bob).await }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut a = Some(Arc::clone(&pair.a));
    match writer {
        Writer::PatchWhileFrozen => {
            pair.redis.freeze();
            // Until A's breaker is open: its invalidation is then never sent.
            while !pair.a.state.cache_breaker_open() {
                let _ = bobs_name(&pair.a, &bob).await;
            }
            patch(Arc::clone(&pair.a), 2).await;
            history.wrote(2);
            tokio::time::sleep(Duration::from_millis(1000)).await;
            pair.redis.thaw();
        }
        Writer::PatchWhilePaused => {
            let _: () = pair
                .redis
                .command(&[b"CLIENT", b"PAUSE", b"2000", b"WRITE"])
                .await;
            for version in 2..=20 {
                patch(Arc::clone(&pair.a), version).await;
                history.wrote(version);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Writer::PlainSql => {
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&pair.database.url())
                .await
                .unwrap();
            for version in 2..=10 {
                sqlx::query("UPDATE users SET name = $1 WHERE id = 'u2'")
                    .bind(format!("v{version}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                history.wrote(version);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Writer::InstanceDiesAfterCommit => {
            // Its readers stop with it; B's go on.
            let dying = a.take().unwrap();
            assert!(
                dying
                    .state
                    .db()
                    .update_user("u2", Some("v2"), None)
                    .await
                    .unwrap()
            );
            history.wrote(2);
        }
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    pair.settled().await;
    stop_all(&stop, tasks).await;
    history.assert_clean();
    let last = match writer {
        Writer::PatchWhileFrozen | Writer::InstanceDiesAfterCommit => 2,
        Writer::PatchWhilePaused => 20,
        Writer::PlainSql => 10,
    };
    for app in [&pair.a, &pair.b] {
        assert_eq!(bobs_name(app, &bob).await, last, "{writer:?}");
    }
    println!("{writer:?}: {} reads checked", history.reads());
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_patch_while_the_breaker_is_open_is_served_within_delta() {
    profile_changes_are_served_within_delta(Database::sqlite(), Writer::PatchWhileFrozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_patch_while_the_breaker_is_open_is_served_within_delta() {
    profile_changes_are_served_within_delta(Database::postgres(), Writer::PatchWhileFrozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_patches_during_paused_writes_are_served_within_delta() {
    profile_changes_are_served_within_delta(Database::sqlite(), Writer::PatchWhilePaused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_patches_during_paused_writes_are_served_within_delta() {
    profile_changes_are_served_within_delta(Database::postgres(), Writer::PatchWhilePaused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_plain_sql_reaches_every_instance_within_delta() {
    profile_changes_are_served_within_delta(Database::sqlite(), Writer::PlainSql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plain_sql_reaches_every_instance_within_delta() {
    profile_changes_are_served_within_delta(Database::postgres(), Writer::PlainSql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_instance_dying_after_its_commit_is_covered_by_the_other() {
    profile_changes_are_served_within_delta(Database::sqlite(), Writer::InstanceDiesAfterCommit)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_instance_dying_after_its_commit_is_covered_by_the_other() {
    profile_changes_are_served_within_delta(Database::postgres(), Writer::InstanceDiesAfterCommit)
        .await;
}

/// A role deleted with plain SQL stops working on both instances within Δ_db.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_role_deleted_with_plain_sql_stops_working_within_delta() {
    let pair = Pair::start(Database::sqlite()).await;
    let alice = pair.a.login("u1").await;
    for app in [&pair.a, &pair.b] {
        let listed = app.get("/api/v1/users/u2/sessions", Some(&alice)).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    }
    let history = Arc::new(History::new(DELTA_DB));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = {
        let alice = alice.clone();
        pair.watch(&history, &stop, move |app| {
            let alice = alice.clone();
            async move {
                let status = app
                    .get("/api/v1/users/u2/sessions", Some(&alice))
                    .await
                    .status;
                u64::from(status == StatusCode::FORBIDDEN)
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&pair.database.url())
        .await
        .unwrap();
    sqlx::query("DELETE FROM user_roles WHERE user_id = 'u1' AND role = 'admin'")
        .execute(&pool)
        .await
        .unwrap();
    history.wrote(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_all(&stop, tasks).await;
    history.assert_clean();
}

/// Changes the service never makes but SQL can, each caught by the mapping within Δ_db: a role
/// granted (the profile lists roles), a session made to expire, and on PostgreSQL a whole
/// table truncated (no row trigger fires for it).
async fn sql_only_changes_are_followed(database: Database) {
    let postgres = matches!(database, Database::Postgres(..));
    let pair = Pair::start(database).await;
    let bob = pair.a.login("u2").await;
    let carol = pair.a.login("u3").await;
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&pair.database.url())
        .await
        .unwrap();
    // Everything cached on both instances first.
    for app in [&pair.a, &pair.b] {
        assert_eq!(
            app.get("/api/v1/users/u2", Some(&bob)).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/api/v1/users/u3", Some(&carol)).await.status,
            StatusCode::OK
        );
    }
    let roles = Arc::new(History::named("Bob's roles in his profile", DELTA_DB));
    let expiry = Arc::new(History::named("Carol's expired session", DELTA_DB));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = {
        let bob = bob.clone();
        pair.watch(&roles, &stop, move |app| {
            let bob = bob.clone();
            async move {
                let reply = app.get("/api/v1/users/u2", Some(&bob)).await;
                let admin = reply.body["roles"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == "admin"));
                u64::from(admin)
            }
        })
    };
    tasks.extend({
        let carol = carol.clone();
        pair.watch(&expiry, &stop, move |app| {
            let carol = carol.clone();
            async move {
                let status = app.get("/api/v1/users/u3", Some(&carol)).await.status;
                u64::from(status == StatusCode::UNAUTHORIZED)
            }
        })
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ('u2', 'admin')")
        .execute(&pool)
        .await
        .unwrap();
    roles.wrote(1);
    sqlx::query("UPDATE sessions SET expires_at = 1 WHERE user_id = 'u3'")
        .execute(&pool)
        .await
        .unwrap();
    expiry.wrote(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_all(&stop, tasks).await;
    roles.assert_clean();
    expiry.assert_clean();
    if postgres {
        let truncated = Arc::new(History::named("sessions truncated", DELTA_DB));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = {
            let bob = bob.clone();
            pair.watch(&truncated, &stop, move |app| {
                let bob = bob.clone();
                async move {
                    let status = app.get("/api/v1/users/u2", Some(&bob)).await.status;
                    u64::from(status == StatusCode::UNAUTHORIZED)
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("TRUNCATE sessions")
            .execute(&pool)
            .await
            .unwrap();
        truncated.wrote(1);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop_all(&stop, tasks).await;
        truncated.assert_clean();
    }
    // What the consumers did is in /metrics, each family described.
    pair.settled().await;
    let metrics = pair.a.state.render_metrics();
    dashcache_testkit::prometheus::check_text_format(&metrics)
        .unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    dashcache_testkit::prometheus::check_described(&metrics)
        .unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    for needle in [
        "dashcache_log_proven 1",
        "dashcache_log_entries_total",
        "dashcache_log_queued 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sql_only_changes_are_followed() {
    sql_only_changes_are_followed(Database::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sql_only_changes_are_followed() {
    sql_only_changes_are_followed(Database::postgres()).await;
}

/// With Redis cut off, both instances vouch for Bob's session from their memory of sessions
/// they verified. Revoked with plain SQL, it is refused by both within Δ_db (the session's key
/// is pending until Redis has the change, so the gate sends its lookups to the database), and
/// the log makes each memory forget it rather than vouch for it for the rest of its minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_session_revoked_with_sql_while_redis_is_cut_off_is_refused_within_delta() {
    let pair = Pair::start(Database::sqlite()).await;
    let bob = pair.a.login("u2").await;
    pair.proxy.cut();
    for app in [&pair.a, &pair.b] {
        for _ in 0..3 {
            let reply = app.get("/api/v1/accounts", Some(&bob)).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    }
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&pair.database.url())
        .await
        .unwrap();
    sqlx::query("UPDATE sessions SET revoked_at = 1 WHERE user_id = 'u2'")
        .execute(&pool)
        .await
        .unwrap();
    let revoked = Instant::now();
    for app in [&pair.a, &pair.b] {
        loop {
            let reply = app.get("/api/v1/accounts", Some(&bob)).await;
            if reply.status == StatusCode::UNAUTHORIZED {
                assert_eq!(reply.body["reason"], "revoked", "{}", reply.body);
                break;
            }
            // Δ_db plus a loaded machine's slack: far below the memory's minute.
            assert!(
                revoked.elapsed() < DELTA_DB + Duration::from_secs(15),
                "still served {:?} after the revocation",
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for app in [&pair.a, &pair.b] {
        assert!(app.state.session_lookups().verified().is_empty());
    }
}
