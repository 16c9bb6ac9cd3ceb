//! `dashcache drill`: the service on a private Redis under load from a second process, while
//! Redis is killed, restarted, frozen and resumed; per phase, the requests, the failures (429s
//! apart), p50 / p99, and how long the hit rate took to recover.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashcache::CacheSettings;
use dashcache_testkit::process::RedisProcess;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::CliError;
use super::http_load::TOKEN_VAR;
use super::http_load::{Interval, histogram_percentile};
use crate::serve::{ServeOptions, build_state, serve_on};

/// How to drill.
#[derive(Debug, Clone, Copy)]
pub struct DrillOptions {
    /// Length of each phase.
    pub phase: Duration,
    /// Concurrent connections of the load.
    pub concurrency: usize,
}

const PHASES: [&str; 5] = [
    "baseline",
    "redis killed",
    "restarted",
    "redis frozen",
    "resumed",
];

/// Runs the drill; the report.
///
/// # Errors
/// When the service or the load cannot start.
pub async fn run(options: DrillOptions) -> Result<String, CliError> {
    let mut redis = RedisProcess::start(&[])?;
    let dir = tempfile::tempdir()?;
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("drill.db").display()
    );
    // Production deadlines and breaker; rate limits raised so the drill measures the cache, not
    // the limiter.
    let settings = CacheSettings::from_sources([("REDIS_URL".to_owned(), redis.url())], None)?;
    let serve = ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        database_url,
        rate_limit_scale: 10_000,
        cache: crate::serve::CacheChoice::Auto,
        demo: crate::serve::DemoData::Yes,
        web: crate::state::WebOptions::default(),
    };
    let state = build_state(&serve, settings).await?;
    let listener = tokio::net::TcpListener::bind(serve.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let token = login(&base).await?;

    // Hit-rate samples from the service's own counters.
    let samples: Arc<Mutex<Vec<(Instant, u64, u64)>>> = Arc::default();
    let sampler = {
        let (samples, metrics) = (Arc::clone(&samples), state.metrics().clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let total = metrics.total();
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Instant::now(), total.hits, total.misses));
            }
        })
    };

    let total = options.phase * PHASES.len() as u32 + Duration::from_secs(1);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        // The token in the environment, never in the arguments (which any local user can read).
        .env(TOKEN_VAR, &token)
        .args(["load", "--url", &base])
        .args([
            "--path",
            "/api/v1/users/u2",
            "--path",
            "/api/v1/accounts",
            "--path",
            "/api/v1/providers/c2",
        ])
        .args(["--concurrency", &options.concurrency.to_string()])
        .args([
            "--duration-secs",
            &total.as_secs().to_string(),
            "--report-every-ms",
            "250",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the load process has no stdout")?;
    let intervals: Arc<Mutex<Vec<(Instant, Interval)>>> = Arc::default();
    let reader = {
        let intervals = Arc::clone(&intervals);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(interval) = serde_json::from_str::<Interval>(&line) {
                    intervals
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((Instant::now(), interval));
                }
            }
        })
    };

    let mut starts = Vec::new();
    for (i, phase) in PHASES.iter().enumerate() {
        match i {
            1 => redis.kill(),
            // A failed step stops the load first, so no process outlives the drill.
            2 => redis.restart().or_else(|e| stop(&mut child, e))?,
            3 => redis.freeze().or_else(|e| stop(&mut child, e))?,
            4 => redis.thaw().or_else(|e| stop(&mut child, e))?,
            _ => {}
        }
        eprintln!("drill: {phase}");
        starts.push(Instant::now());
        tokio::time::sleep(options.phase).await;
    }
    let end = Instant::now();
    let _ = child.wait().await;
    let _ = reader.await;
    sampler.abort();
    let _ = stop_tx.send(());
    let _ = server.await;

    let intervals = intervals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let samples = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(report(&starts, end, &intervals, &samples))
}

async fn login(base: &str) -> Result<String, CliError> {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let body = serde_json::json!({ "user_id": "u2", "password": "bob-password" }).to_string();
    let request = axum::http::Request::post(format!("{base}/api/v1/sessions"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = client.request(request).await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes)?;
    json["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("login failed: {json}").into())
}

/// The phase an instant belongs to.
fn phase_of(starts: &[Instant], at: Instant) -> Option<usize> {
    starts.iter().rposition(|s| *s <= at)
}

fn report(
    starts: &[Instant],
    end: Instant,
    intervals: &[(Instant, Interval)],
    samples: &[(Instant, u64, u64)],
) -> String {
    #[derive(Default)]
    struct Phase {
        requests: u64,
        failed: u64,
        limited: u64,
        histogram: BTreeMap<u16, u64>,
    }
    let mut phases: Vec<Phase> = PHASES.iter().map(|_| Phase::default()).collect();
    for (at, interval) in intervals {
        // An interval is reported at its end: it belongs to the phase it mostly covered.
        let middle = at.checked_sub(Duration::from_millis(125)).unwrap_or(*at);
        if middle > end {
            continue;
        }
        if let Some(p) = phase_of(starts, middle) {
            let phase = &mut phases[p];
            phase.requests += interval.requests;
            phase.failed += interval.failed;
            phase.limited += interval.limited;
            for (bucket, count) in &interval.histogram {
                *phase.histogram.entry(*bucket).or_insert(0) += count;
            }
        }
    }
    let baseline_rate = hit_rate(samples, starts[0] + Duration::from_millis(500), starts[1]);
    let recovery = |from: Instant| recovery_time(samples, from, baseline_rate.unwrap_or(0.0));
    let mut out = vec![
        "| phase | requests | non-2xx (besides 429) | 429 | p50 | p99 |".to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    for (name, phase) in PHASES.iter().zip(&phases) {
        out.push(format!(
            "| {name} | {} | {} | {} | {:.2} ms | {:.2} ms |",
            phase.requests,
            phase.failed,
            phase.limited,
            histogram_percentile(&phase.histogram, 0.50).as_secs_f64() * 1e3,
            histogram_percentile(&phase.histogram, 0.99).as_secs_f64() * 1e3,
        ));
    }
    let show = |d: Option<Duration>| {
        d.map_or_else(
            || "not recovered".to_owned(),
            |d| format!("{:.2} s", d.as_secs_f64()),
        )
    };
    out.push(String::new());
    out.push(format!(
        "baseline hit rate {:.1} %; recovered (≥ 90 % of it over 250 ms) {} after the restart, {} after the resume",
        baseline_rate.unwrap_or(0.0) * 100.0,
        show(recovery(starts[2])),
        show(recovery(starts[4])),
    ));
    let failures: u64 = phases.iter().map(|p| p.failed).sum();
    let frozen_p99 = histogram_percentile(&phases[3].histogram, 0.99);
    out.push(format!(
        "goals: 0 non-2xx besides 429 ({}); p99 while frozen ≤ 300 ms ({:.0} ms); hit rate back within 2 s of the restart ({})",
        if failures == 0 { "met" } else { "MISSED" },
        frozen_p99.as_secs_f64() * 1e3,
        if recovery(starts[2]).is_some_and(|d| d <= Duration::from_secs(2)) { "met" } else { "MISSED" },
    ));
    out.join("\n")
}

/// Hits over lookups between two instants, from the cumulative samples.
fn hit_rate(samples: &[(Instant, u64, u64)], from: Instant, to: Instant) -> Option<f64> {
    let first = samples.iter().find(|s| s.0 >= from)?;
    let last = samples.iter().rev().find(|s| s.0 <= to)?;
    let hits = last.1.checked_sub(first.1)?;
    let lookups = hits + last.2.checked_sub(first.2)?;
    (lookups > 0).then(|| hits as f64 / lookups as f64)
}

/// How long after `from` a 250 ms window first reached 90 % of the baseline hit rate.
fn recovery_time(
    samples: &[(Instant, u64, u64)],
    from: Instant,
    baseline: f64,
) -> Option<Duration> {
    samples.iter().filter(|s| s.0 >= from).find_map(|s| {
        let window_end = s.0 + Duration::from_millis(250);
        let rate = hit_rate(samples, s.0, window_end)?;
        (rate >= 0.9 * baseline).then(|| window_end.duration_since(from))
    })
}

/// Ends the load before a failed drill step is reported.
fn stop(child: &mut tokio::process::Child, error: String) -> Result<(), CliError> {
    let _ = child.start_kill();
    Err(error.into())
}
