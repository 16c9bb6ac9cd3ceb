//! `/health`, `/metrics`, `/api/v1/cache/stats`, and the 404 fallback.
//!
//! What anyone may see: `/health`'s verdict, nothing more. Its details (each part's status,
//! latency and error code — never a URL or an error's text) are for admins and for the
//! operations token; with a token configured, `/metrics` and the statistics answer only it.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashcache::health::{CacheStatus, probe};
use dashcache::hybrid::HybridStatus;
use dashcache::metrics::Stats;

use crate::auth::{CurrentUser, Unauthenticated};
use crate::error::{AppError, problem};
use crate::state::AppState;

/// A cache answering slower than this makes the service `degraded`.
const SLOW_CACHE: Duration = Duration::from_millis(50);

/// `GET /health`: `healthy`; `degraded` (200) when the cache is down or slow, or the
/// invalidation log is not proven — the service still serves, from the database;
/// `unhealthy` (503) when the database is down. The details only for admins and the
/// operations token.
pub(crate) async fn health(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    headers: HeaderMap,
) -> Response {
    let (cache, database) =
        tokio::join!(probe(state.cache().as_ref(), SLOW_CACHE), state.db().ping());
    let log = state.log_status();
    // Not proven, or swept into overflow: coherent reads go to the database.
    let log_proven = log
        .as_ref()
        .is_none_or(|l| l.follower.proven && !l.follower.overflow);
    let (status, code) = match (&database, cache.status) {
        (Err(_), _) => ("unhealthy", StatusCode::SERVICE_UNAVAILABLE),
        (Ok(_), CacheStatus::Up) if log_proven => ("healthy", StatusCode::OK),
        (Ok(_), _) => ("degraded", StatusCode::OK),
    };
    if !may_see_details(&state, user.as_ref(), &headers).await {
        return (code, Json(serde_json::json!({ "status": status }))).into_response();
    }
    let db = match &database {
        Ok(rtt) => serde_json::json!({ "status": "up", "latency_ms": super::access::millis(*rtt) }),
        Err(_) => serde_json::json!({ "status": "down", "error": "database_unavailable" }),
    };
    let body = serde_json::json!({
        "status": status,
        "cache": {
            "backend": state.backend(),
            "status": cache.status,
            "latency_ms": cache.latency.map(super::access::millis),
            "error": cache.error,
            "l1": state.l1_status().map(|l1| l1_json(&l1)),
        },
        "database": db,
        "invalidation_log": log.map(|l| log_json(&l)),
        "uptime_s": state.uptime().as_secs(),
    });
    (code, Json(body)).into_response()
}

/// L1's state: whether it serves (and how fresh its proof is), what it tracks, what it holds.
fn l1_json(l1: &HybridStatus) -> serde_json::Value {
    serde_json::json!({
        "serving": l1.serving,
        "proven_ms_ago": l1.proven_ago.map(super::access::millis),
        "tracked_nodes": l1.tracked_nodes,
        "connections": l1.connections,
        "flushes": l1.flushes,
        "invalidations": l1.invalidations,
        "fills_refused": l1.fills_refused,
        "entries": l1.l1_entries,
    })
}

/// The invalidation log's consumer: whether its proof holds (and how fresh), what it applied,
/// what waits for Redis. Its last error names the failing step, never a URL.
fn log_json(log: &dashcache::coherent::log::ConsumerStatus) -> serde_json::Value {
    serde_json::json!({
        "proven": log.follower.proven,
        "proven_ms_ago": log.follower.proven_ago.map(super::access::millis),
        "staleness_ms": log.follower.staleness.as_millis() as u64,
        "entries": log.entries,
        "applied": log.applied,
        "written": log.written,
        "retries": log.retries,
        "queued": log.queued,
        "pending_keys": log.follower.pending,
        "overflow": log.follower.overflow,
        "sweeps": log.sweeps,
    })
}

/// Admins and the holder of the operations token see operational detail.
async fn may_see_details(
    state: &AppState,
    user: Option<&CurrentUser>,
    headers: &HeaderMap,
) -> bool {
    if state.has_ops_token(headers) {
        return true;
    }
    match user {
        Some(user) => state
            .allowed(&user.user_id, "operations", "read")
            .await
            .unwrap_or(false),
        None => false,
    }
}

/// With an operations token configured, only its holder (a user's session is not it: 403,
/// anything else 401); without one, anyone — but only on a loopback listener (local use): on
/// any other address, nobody.
fn ops_only(
    state: &AppState,
    headers: &HeaderMap,
    user: Option<&CurrentUser>,
) -> Result<(), AppError> {
    match &state.web().ops_token {
        Some(_) if state.has_ops_token(headers) => Ok(()),
        Some(_) if user.is_some() => Err(AppError::Refused(
            "operations endpoints take the operations token (DASHCACHE_OPS_TOKEN), not a \
             user's session"
                .into(),
        )),
        Some(_) => Err(AppError::Unauthorized(Unauthenticated::OperationsToken)),
        None if state.web().loopback_only => Ok(()),
        None => Err(AppError::Refused(
            "operations endpoints need the operations token on a non-loopback listener \
             (DASHCACHE_OPS_TOKEN)"
                .into(),
        )),
    }
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = ops_only(&state, &headers, user.as_ref()) {
        return e.into_response();
    }
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
        // Latency is sampled (every operation that waits on the backend, one in 16 reads
        // answered in process), counts are exact: this is the sample, not a total, and can be
        // below `hits`.
        "timed_operations": s.operations,
        "mean_latency_us": s.mean_latency().map(|d| d.as_secs_f64() * 1e6),
        "l1_hits": s.l1_hits,
        "l2_hits": s.l2_hits,
        "invalidations": s.invalidations,
        "l1_bypassed": s.l1_bypassed,
        "mean_l1_age_us": s.mean_l1_age().map(|d| d.as_secs_f64() * 1e6),
    })
}

/// `GET /api/v1/cache/stats`: per-namespace cache statistics, rate-limit decisions, and the
/// number of database queries so far.
pub(crate) async fn stats(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    ops_only(&state, &headers, user.as_ref())?;
    let namespaces: serde_json::Map<String, serde_json::Value> = state
        .metrics()
        .snapshot_all()
        .iter()
        .map(|(ns, s)| (ns.clone(), stats_json(s)))
        .collect();
    let limits = state.rate_limits().stats();
    Ok(Json(serde_json::json!({
        "backend": state.backend(),
        "l1": state.l1_status().map(|l1| l1_json(&l1)),
        "namespaces": namespaces,
        "total": stats_json(&state.metrics().total()),
        "rate_limits": {
            "allowed": limits.allowed,
            "limited": limits.limited,
            "fail_open": limits.fail_open,
            "fail_closed": limits.fail_closed,
            "fail_local": limits.fail_local,
        },
        "db_queries": state.db().queries(),
    })))
}

/// Unknown routes: a problem body like every other error.
pub(crate) async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such route")
}
