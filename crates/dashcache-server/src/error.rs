//! [`AppError`]: every failure a handler can return, as an `application/problem+json` response.
//!
//! Client errors say what was wrong; internal errors are logged once here and answer a generic
//! 500, so no database or cache detail leaks to a client.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
use crate::upstream::UpstreamError;

/// A handler's failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 400: one field of the body is not acceptable; the problem names it.
    #[error("{field} {reason}")]
    InvalidField {
        /// The field, as the client sent it.
        field: &'static str,
        /// What is wrong, e.g. "contains the control character U+0000".
        reason: String,
    },
    /// 401: no valid session, and why (the detail says it).
    #[error("{}", .0.detail())]
    Unauthorized(Unauthenticated),
    /// 401: a login with an unknown user or a wrong password (the two answer alike).
    #[error("invalid credentials")]
    BadCredentials,
    /// 403: authenticated, but not allowed.
    #[error("not allowed")]
    Forbidden,
    /// 403 with a reason: a cookie-authenticated write from another origin, an operations
    /// endpoint on a public listener without a token.
    #[error("{0}")]
    Refused(String),
    /// 429: too many attempts; retry after this long.
    #[error("too many attempts: retry later")]
    TooManyAttempts(std::time::Duration),
    /// 404: no such thing (or not yours).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413 / 415 / 422 and other body rejections, with axum's status.
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// 502 / 503 / 504: the upstream provider failed, with nothing cached to stand in.
    #[error("{0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// 503: a dependency is not configured or not available.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 500: the database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// 500: anything else unexpected.
    #[error("{0}")]
    Internal(String),
}

/// Why a request has no authenticated user. A 401's detail says which, and none of them tells
/// whether an account exists: each is about the token presented, which its holder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Neither `Authorization: Bearer …` nor the session cookie.
    Missing,
    /// An `Authorization` header of another scheme, or a token that is not the shape of ours.
    Malformed,
    /// No such session, or it has expired.
    Unknown,
    /// The session was revoked (a logout, a revocation, a security-version bump).
    Revoked,
    /// The session could not be verified: the cache could not answer, and this client network
    /// presented too many unknown sessions recently for the database to be asked.
    Limited,
    /// An operations endpoint, without the operations token.
    OperationsToken,
}

impl Unauthenticated {
    /// What the 401 says.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Missing => {
                "authentication required: send `Authorization: Bearer <token>` or the session \
                 cookie"
            }
            Self::Malformed => {
                "malformed credentials: send `Authorization: Bearer <token>` or the `session` \
                 cookie, with a session token of this service"
            }
            Self::Unknown => "unknown or expired session: log in again",
            Self::Revoked => "the session was revoked: log in again",
            Self::Limited => {
                "the session could not be verified now: too many unknown sessions from this \
                 network; retry later"
            }
            Self::OperationsToken => {
                "this endpoint needs the operations token: `Authorization: Bearer \
                 <DASHCACHE_OPS_TOKEN>`"
            }
        }
    }

    /// Its label in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Limited => "limited",
            Self::OperationsToken => "operations_token",
        }
    }
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::Refused(_) => StatusCode::FORBIDDEN,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized(_) | Self::BadCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Rejected(status, _) => *status,
            Self::Upstream(e) => match e {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::CircuitOpen(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        Self::Rejected(r.status(), r.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        Self::Rejected(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        Self::Rejected(r.status(), r.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        // An upstream's failure is not ours: say which, without its body.
        let detail = if matches!(self, Self::Upstream(_) | Self::Unavailable(_)) {
            tracing::warn!(error = %self, "upstream unavailable");
            self.to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "The server could not complete the request.".to_owned()
        } else {
            self.to_string()
        };
        let mut response = match &self {
            Self::InvalidField { field, .. } => problem_with(status, &detail, &[("field", field)]),
            Self::Unauthorized(why) => problem_with(status, &detail, &[("reason", why.label())]),
            _ => problem(status, &detail),
        };
        if let Self::TooManyAttempts(wait) = &self {
            let secs = wait.as_millis().div_ceil(1000).max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            // What a client must present (RFC 6750).
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// An `application/problem+json` response (RFC 9457).
pub fn problem(status: StatusCode, detail: &str) -> Response {
    problem_with(status, detail, &[])
}

/// A problem with extension members (`"field": "name"`).
pub fn problem_with(status: StatusCode, detail: &str, extra: &[(&str, &str)]) -> Response {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    for (name, value) in extra {
        body[*name] = serde_json::Value::from(*value);
    }
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
