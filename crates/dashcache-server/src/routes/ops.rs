//! `/health`, `/metrics`, `/api/v1/cache/stats`, and the 404 fallback.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashcache::health::{CacheStatus, probe};
use dashcache::metrics::Stats;

use crate::error::problem;
use crate::state::AppState;

/// A cache answering slower than this makes the service `degraded`.
const SLOW_CACHE: Duration = Duration::from_millis(50);

/// `GET /health`: `healthy`; `degraded` (200) when the cache is down or slow — the service
/// still serves, from the database; `unhealthy` (503) when the database is down.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let (cache, database) =
        tokio::join!(probe(state.cache().as_ref(), SLOW_CACHE), state.db().ping());
    let db = match &database {
        Ok(rtt) => serde_json::json!({ "status": "up", "latency_ms": rtt.as_secs_f64() * 1e3 }),
        Err(e) => serde_json::json!({ "status": "down", "error": e.to_string() }),
    };
    let (status, code) = match (&database, cache.status) {
        (Err(_), _) => ("unhealthy", StatusCode::SERVICE_UNAVAILABLE),
        (Ok(_), CacheStatus::Up) => ("healthy", StatusCode::OK),
        (Ok(_), _) => ("degraded", StatusCode::OK),
    };
    let body = serde_json::json!({
        "status": status,
        "cache": { "backend": state.backend(), "probe": cache },
        "database": db,
        "uptime_s": state.uptime().as_secs(),
    });
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.render_metrics(),
    )
        .into_response()
}

fn stats_json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "hits": s.hits,
        "misses": s.misses,
        "stale": s.stale,
        "bypassed": s.bypassed,
        "errors": s.errors,
        "hit_rate": s.hit_rate(),
        "operations": s.operations,
        "mean_latency_us": s.mean_latency().map(|d| d.as_secs_f64() * 1e6),
    })
}

/// `GET /api/v1/cache/stats`: per-namespace cache statistics, rate-limit decisions, and the
/// number of database queries so far.
pub(crate) async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let namespaces: serde_json::Map<String, serde_json::Value> = state
        .metrics()
        .snapshot_all()
        .iter()
        .map(|(ns, s)| (ns.clone(), stats_json(s)))
        .collect();
    let limits = state.rate_limits().stats();
    Json(serde_json::json!({
        "backend": state.backend(),
        "namespaces": namespaces,
        "total": stats_json(&state.metrics().total()),
        "rate_limits": {
            "allowed": limits.allowed,
            "limited": limits.limited,
            "fail_open": limits.fail_open,
            "fail_closed": limits.fail_closed,
        },
        "db_queries": state.db().queries(),
    }))
}

/// Unknown routes: a problem body like every other error.
pub(crate) async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such route")
}
