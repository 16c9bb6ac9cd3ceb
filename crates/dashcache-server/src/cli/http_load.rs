//! `dashcache load`: HTTP load against a running service, reported every interval and in
//! total. The drill runs it as a second process.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashcache_testkit::load::percentile;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::CliError;

/// The environment variable `dashcache load` reads its bearer token from (or a file names it:
/// never the command line, which every local user can read).
pub const TOKEN_VAR: &str = "DASHCACHE_TOKEN";

/// What to load. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct LoadOptions {
    /// `http://host:port`.
    pub base: String,
    /// Paths to GET, in turn.
    pub paths: Vec<String>,
    /// A session token to send as a bearer token.
    pub token: Option<String>,
    /// Concurrent connections.
    pub concurrency: usize,
    /// How long.
    pub duration: Duration,
    /// Print a JSON line per interval (for the drill).
    pub report_every: Option<Duration>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("base", &self.base)
            .field("paths", &self.paths)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("concurrency", &self.concurrency)
            .field("duration", &self.duration)
            .field("report_every", &self.report_every)
            .finish()
    }
}

/// One interval's (or the whole run's) numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Interval {
    /// Seconds since the load started (at the interval's end).
    pub t: f64,
    /// Requests completed.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 429 answers.
    pub limited: u64,
    /// Other answers and transport failures.
    pub failed: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Latencies as a log histogram (bucket → count), so intervals merge into exact-to-9 %
    /// percentiles of any span.
    pub histogram: std::collections::BTreeMap<u16, u64>,
    /// The first failure, said plainly: a refused connection, or the first answer that was
    /// neither a success nor a 429 (its status and the start of its body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// Eight buckets per doubling of microseconds: about 9 % resolution.
fn bucket_of(d: Duration) -> u16 {
    let micros = d.as_micros().max(1) as f64;
    (micros.log2() * 8.0)
        .floor()
        .clamp(0.0, f64::from(u16::MAX)) as u16
}

/// The upper edge of a bucket.
pub fn bucket_edge(bucket: u16) -> Duration {
    Duration::from_micros((2f64).powf((f64::from(bucket) + 1.0) / 8.0) as u64)
}

/// The `q` quantile of merged histograms.
pub fn histogram_percentile(histogram: &std::collections::BTreeMap<u16, u64>, q: f64) -> Duration {
    let total: u64 = histogram.values().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (bucket, count) in histogram {
        seen += count;
        if seen >= rank {
            return bucket_edge(*bucket);
        }
    }
    Duration::ZERO
}

#[derive(Default)]
struct Bucket {
    latencies: Vec<Duration>,
    ok: u64,
    limited: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Bucket {
    fn summary(&mut self, t: f64) -> Interval {
        self.latencies.sort_unstable();
        let mut histogram = std::collections::BTreeMap::new();
        for d in &self.latencies {
            *histogram.entry(bucket_of(*d)).or_insert(0) += 1;
        }
        Interval {
            histogram,
            t,
            requests: self.latencies.len() as u64,
            ok: self.ok,
            limited: self.limited,
            failed: self.failed,
            p50_ms: percentile(&self.latencies, 0.50).as_secs_f64() * 1e3,
            p99_ms: percentile(&self.latencies, 0.99).as_secs_f64() * 1e3,
            first_failure: self.first_failure.clone(),
        }
    }
}

/// An error and its causes, one line (hyper's own says only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Drives the load; the totals (and, with `report_every`, a JSON line per interval on stdout).
///
/// # Errors
/// A malformed base URL.
pub async fn run(options: &LoadOptions) -> Result<Interval, CliError> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    // `health` would be glued to the port (`:8080health`) and fail as "cannot reach".
    if let Some(path) = options.paths.iter().find(|p| !p.starts_with('/')) {
        return Err(format!("--path {path:?} must start with `/` (e.g. /{path})").into());
    }
    let uris: Vec<axum::http::Uri> = options
        .paths
        .iter()
        .map(|p| format!("{}{p}", options.base).parse())
        .collect::<Result<_, _>>()?;
    let uris = Arc::new(uris);
    let interval = Arc::new(Mutex::new(Bucket::default()));
    let total = Arc::new(Mutex::new(Bucket::default()));
    let start = Instant::now();
    let end = start + options.duration;
    let workers: Vec<_> = (0..options.concurrency.max(1))
        .map(|w| {
            let (client, uris, interval, total) = (
                client.clone(),
                Arc::clone(&uris),
                Arc::clone(&interval),
                Arc::clone(&total),
            );
            let token = options.token.clone();
            // Named in failures: masked, as a URL may carry credentials.
            let base = dashcache::url::mask_url(&options.base);
            tokio::spawn(async move {
                let mut i = w;
                while Instant::now() < end {
                    let uri = uris[i % uris.len()].clone();
                    i += 1;
                    let mut request = axum::http::Request::get(uri);
                    if let Some(token) = &token {
                        request = request.header("authorization", format!("Bearer {token}"));
                    }
                    let began = Instant::now();
                    let mut failure = None;
                    let status = match request.body(Empty::new()) {
                        Ok(req) => match client.request(req).await {
                            Ok(resp) => {
                                let status = resp.status();
                                // Read the body so the connection is reused.
                                let body = resp.into_body().collect().await;
                                if !status.is_success() && status.as_u16() != 429 {
                                    let text = body
                                        .map(|b| {
                                            String::from_utf8_lossy(&b.to_bytes()).into_owned()
                                        })
                                        .unwrap_or_default();
                                    failure = Some(format!(
                                        "{status}: {}",
                                        text.chars().take(200).collect::<String>()
                                    ));
                                }
                                Some(status)
                            }
                            Err(e) => {
                                failure = Some(format!("cannot reach {base}: {}", error_chain(&e)));
                                None
                            }
                        },
                        Err(e) => {
                            failure = Some(format!("cannot build the request: {e}"));
                            None
                        }
                    };
                    let took = began.elapsed();
                    for bucket in [&interval, &total] {
                        let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
                        b.latencies.push(took);
                        match status {
                            Some(s) if s.is_success() => b.ok += 1,
                            Some(s) if s.as_u16() == 429 => b.limited += 1,
                            _ => b.failed += 1,
                        }
                        if b.first_failure.is_none() {
                            b.first_failure.clone_from(&failure);
                        }
                    }
                }
            })
        })
        .collect();
    if let Some(every) = options.report_every {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        while Instant::now() < end {
            tick.tick().await;
            let line = {
                let mut b = interval.lock().unwrap_or_else(PoisonError::into_inner);
                let summary = b.summary(start.elapsed().as_secs_f64());
                *b = Bucket::default();
                summary
            };
            println!("{}", serde_json::to_string(&line)?);
        }
    }
    for worker in workers {
        let _ = worker.await;
    }
    let summary = total
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .summary(start.elapsed().as_secs_f64());
    Ok(summary)
}
