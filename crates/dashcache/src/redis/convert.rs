//! Maps `redis` errors onto [`ErrorKind`]s: the one place that knows the server's error codes.

use redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};

use crate::error::{Error, ErrorKind};

/// Classifies a `redis` error, keeping it as the source.
pub(crate) fn error(e: RedisError) -> Error {
    let (kind, message) = classify(&e);
    Error::new(kind, message).with_source(e)
}

fn classify(e: &RedisError) -> (ErrorKind, &'static str) {
    let detail = e.detail().unwrap_or_default();
    match e.kind() {
        RedisKind::Io if e.is_timeout() => (ErrorKind::Timeout, "the connection timed out"),
        RedisKind::Io => (ErrorKind::Unavailable, "the server cannot be reached"),
        RedisKind::ClusterConnectionNotFound => {
            (ErrorKind::Unavailable, "no connection to the cluster node")
        }
        RedisKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::TryAgain,
        ) => (
            ErrorKind::Unavailable,
            "the server cannot serve requests right now",
        ),
        RedisKind::Server(ServerErrorKind::ResponseError) if detail.contains("overflow") => (
            ErrorKind::InvalidArgument,
            "the increment would overflow i64",
        ),
        RedisKind::Server(ServerErrorKind::ResponseError) if detail.contains("not an integer") => {
            (ErrorKind::WrongType, "the value is not an integer")
        }
        RedisKind::Extension if e.code() == Some("WRONGTYPE") => (
            ErrorKind::WrongType,
            "the key holds a value of another type",
        ),
        RedisKind::Server(ServerErrorKind::CrossSlot) => (
            ErrorKind::InvalidArgument,
            "the keys of one atomic operation are in different cluster slots: give them one hash tag (Keys::tagged_key)",
        ),
        RedisKind::InvalidClientConfig => (
            ErrorKind::InvalidArgument,
            "the Redis client configuration is invalid",
        ),
        RedisKind::AuthenticationFailed => (
            ErrorKind::Misconfigured,
            "authentication to Redis failed: check the URL's credentials (for a Sentinel set's \
             sentinels: CACHE_SENTINEL_PASSWORD)",
        ),
        _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => (
            ErrorKind::Misconfigured,
            "Redis requires other credentials: check the URL's user and password (for a Sentinel \
             set's sentinels: CACHE_SENTINEL_PASSWORD)",
        ),
        RedisKind::Server(ServerErrorKind::NoPerm) => (
            ErrorKind::Misconfigured,
            "the Redis user lacks a permission this cache needs: check its ACL",
        ),
        _ if detail.contains("DB index is out of range") => (
            ErrorKind::Misconfigured,
            "the Redis URL names a database the server does not have",
        ),
        _ if e.is_connection_dropped() || e.is_connection_refusal() => (
            ErrorKind::Unavailable,
            "the connection to the server was lost",
        ),
        _ => (ErrorKind::Backend, "the server reported an error"),
    }
}
