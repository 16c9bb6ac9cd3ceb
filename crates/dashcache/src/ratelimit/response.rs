//! The responses the middleware answers with itself: 429 and 503, as
//! `application/problem+json` (RFC 9457), with the rate-limit headers.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::bucket::Decision;

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, and `RateLimit-Reset` (seconds until the bucket
/// is full again, rounded up).
pub(crate) fn set_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert(
        "ratelimit-reset",
        HeaderValue::from(ceil_secs(decision.reset_after)),
    );
}

fn problem(status: StatusCode, title: &str, detail: String, extra: serde_json::Value) -> Response {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// 429 with the headers, `Retry-After` (seconds, rounded up, at least 1) and a problem body.
pub(crate) fn too_many_requests(decision: &Decision) -> Response {
    let retry = ceil_secs(decision.retry_after).max(1);
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        format!("Rate limit exceeded; retry in {retry} s."),
        serde_json::json!({ "retry_after_ms": decision.retry_after.as_millis() as u64 }),
    );
    set_headers(response.headers_mut(), decision);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    response
}

/// 503 for a rule that fails closed while its buckets cannot be reached.
pub(crate) fn unavailable() -> Response {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
        "Rate limiting is unavailable and this route does not run without it.".into(),
        serde_json::Value::Null,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
    response
}
