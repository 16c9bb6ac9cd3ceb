//! `dashcache log-bench`: what the invalidation log costs and how fast it is — the time from
//! a commit made outside the service to its visibility on an instance that had the old value
//! cached (p50 / p99), and what its trigger adds to a write, side by side with the same write
//! to a table without one.

use std::time::{Duration, Instant};

use dashcache::CacheSettings;
use dashcache_testkit::process::RedisProcess;
use sqlx::Connection as _;

use super::CliError;
use crate::serve::{ServeOptions, build_state};

/// What to measure.
#[derive(Debug, Clone)]
pub struct LogBenchOptions {
    /// The database (a temporary SQLite file when `None`).
    pub database_url: Option<String>,
    /// Commits measured.
    pub samples: usize,
}

/// Runs the measurement on a private Redis; the report.
///
/// # Errors
/// When Redis, the database or an instance cannot start.
pub async fn run(options: &LogBenchOptions) -> Result<String, CliError> {
    let redis = RedisProcess::start(&[])?;
    let dir = tempfile::tempdir()?;
    let url = match &options.database_url {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("log-bench.db").display()
        ),
    };
    let serve = ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        database_url: url.clone(),
        rate_limit_scale: 10_000,
        cache: crate::serve::CacheChoice::Auto,
        demo: crate::serve::DemoData::Yes,
        web: crate::state::WebOptions::default(),
    };
    let settings = || CacheSettings::from_sources([("REDIS_URL".to_owned(), redis.url())], None);
    // Two instances: the writer's and the one that must see the change.
    let writer = build_state(&serve, settings()?).await?;
    let reader = build_state(&serve, settings()?).await?;
    let mut conn = sqlx::AnyConnection::connect(&url).await?;
    let samples = options.samples.max(10);
    let mut visible = Vec::with_capacity(samples);
    for i in 0..samples {
        let name = format!("log-bench {i}");
        // Cached on the reader (and in its L1) before the change.
        reader.user("u2").await?;
        // Commits fall anywhere in the consumers' poll period, as real ones do (right after a
        // visibility was seen they would all wait a whole period).
        let poll = reader.settings().db_staleness / 4;
        tokio::time::sleep(poll.mul_f64(rand::random::<f64>())).await;
        sqlx::query("UPDATE users SET name = $1 WHERE id = 'u2'")
            .bind(name.clone())
            .execute(&mut conn)
            .await?;
        let committed = Instant::now();
        loop {
            if reader.user("u2").await?.is_some_and(|u| u.name == name) {
                visible.push(committed.elapsed());
                break;
            }
            if committed.elapsed() > Duration::from_secs(10) {
                return Err(format!("commit {i} was not visible within 10 s").into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    visible.sort();
    // The write's own cost, with no consumer reacting to it (each would read the log at
    // every NOTIFY, on the same cores).
    drop((writer, reader));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = write_cost(&mut conn).await?;
    let dialect = if url.starts_with("postgres") {
        "PostgreSQL (LISTEN/NOTIFY wake-ups)"
    } else {
        "SQLite (polling every Δ_db/4)"
    };
    Ok(format!(
        "invalidation log on {dialect}, Δ_db {} ms\n\
         commit → visible on another instance ({} commits): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         a write with the log's trigger: {:.1} µs, without: {:.1} µs ({:.2}×; {} interleaved rounds)",
        settings()?.db_staleness.as_millis(),
        visible.len(),
        ms(percentile(&visible, 0.50)),
        ms(percentile(&visible, 0.99)),
        ms(visible.last().copied().unwrap_or_default()),
        writes.0,
        writes.1,
        writes.0 / writes.1.max(f64::MIN_POSITIVE),
        ROUNDS,
    ))
}

const ROUNDS: usize = 6;

/// The mean time of an `UPDATE` of `users` (with the trigger: one more insert, and a `NOTIFY`
/// on PostgreSQL) and of the same update of a table without one, each in its own transaction,
/// in microseconds, measured in interleaved rounds.
async fn write_cost(conn: &mut sqlx::AnyConnection) -> Result<(f64, f64), CliError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS log_bench_plain (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM log_bench_plain")
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO log_bench_plain (id, name) VALUES ('u2', 'x')")
        .execute(&mut *conn)
        .await?;
    let per_round = 200;
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        for table in if round % 2 == 0 {
            ["users", "log_bench_plain"]
        } else {
            ["log_bench_plain", "users"]
        } {
            let sql = format!("UPDATE {table} SET name = $1 WHERE id = 'u2'");
            let started = Instant::now();
            for i in 0..per_round {
                sqlx::query(&sql)
                    .bind(format!("w{round}-{i}"))
                    .execute(&mut *conn)
                    .await?;
            }
            let took = started.elapsed();
            if table == "users" {
                with += took;
            } else {
                without += took;
            }
        }
    }
    sqlx::query("DROP TABLE log_bench_plain")
        .execute(&mut *conn)
        .await?;
    let n = (ROUNDS * per_round) as f64;
    Ok((
        with.as_secs_f64() * 1e6 / n,
        without.as_secs_f64() * 1e6 / n,
    ))
}

/// The `q` quantile of `sorted`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
