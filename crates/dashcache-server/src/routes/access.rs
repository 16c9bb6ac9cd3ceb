//! The outermost middleware: a request id on every answer, headers bounded (431 as a problem
//! like every other error), and one access-log line per request.
//!
//! The log names the route's pattern (`/api/v1/users/{id}`), never the path: ids, handles and
//! anything a client typed into a URL stay out of the logs.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::problem;
use crate::state::AppState;

/// `d` in milliseconds to two decimals, for logs and JSON: a reader wants `38.25`, not the
/// float's `38.248293000000004`.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// The most header bytes (names and values) a request may carry; past it, 431. Far below
/// hyper's own limit, so the answer is ours (a problem body), not a bare status line.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The most headers a request may carry; past it, 431.
pub const MAX_HEADERS: usize = 64;

/// The header a request id arrives in (from a proxy) and leaves in.
pub const REQUEST_ID: &str = "x-request-id";

/// Tags the request with an id (a proxy's, when it is a sane one), refuses oversized headers,
/// and logs the outcome at `info` under the `dashcache::access` target.
pub(crate) async fn access(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| is_sane_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_id);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(no route)".to_owned(), |p| p.as_str().to_owned());
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let mut response = if header_bytes > MAX_HEADER_BYTES || request.headers().len() > MAX_HEADERS {
        problem(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!(
                "request headers are limited to {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes"
            ),
        )
    } else {
        as_problem(next.run(request).await).await
    };
    if state.web().access_log {
        tracing::info!(
            target: "dashcache::access",
            method = %method,
            route = %route,
            status = response.status().as_u16(),
            latency_ms = millis(started.elapsed()),
            request_id = %id.to_str().unwrap_or_default(),
        );
    }
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// An error answer that is not a problem yet (axum's and tower's own rejections: 413 from the
/// body limit, 415, 400 from a malformed query) becomes one, keeping its status and headers
/// (`Allow`, `Retry-After`) and its text as the detail.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is cut, never buffered whole.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut problem = problem(status, &detail);
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// 1–64 letters, digits, `-`, `_` or `.`: anything else is replaced, so a log line cannot be
/// forged through it.
fn is_sane_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn new_id() -> HeaderValue {
    let id = format!("{:016x}", rand::random::<u64>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Methods a route does not take: 405 as a problem, with the `Allow` header axum sets.
pub(crate) async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
