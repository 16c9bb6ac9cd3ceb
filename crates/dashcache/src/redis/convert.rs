//! Maps `redis` errors onto [`ErrorKind`]s: the one place that knows the server's error codes.

use redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};

use crate::error::{Error, ErrorKind};

/// Classifies a `redis` error, keeping it as the source.
pub(crate) fn error(e: RedisError) -> Error {
    let (kind, message) = classify(&e);
    if message == NOT_REDIS {
        // The parser's own account is a list of the bytes it did not expect: noise.
        return Error::new(kind, message);
    }
    Error::new(kind, message).with_source(e)
}

/// What a server that is not Redis gets said of it.
const NOT_REDIS: &str =
    "the server's answer is not Redis's protocol: is the URL pointing at a Redis server?";

/// What the sentinel client puts in an authentication failure of a sentinel (not of a data
/// node), so its message can name the sentinels' own settings.
pub(crate) const SENTINELS_REFUSED: &str = "a sentinel refused the credentials";

fn is_auth(e: &RedisError) -> bool {
    e.kind() == RedisKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
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
        _ if is_auth(e) && e.to_string().contains(SENTINELS_REFUSED) => (
            ErrorKind::Misconfigured,
            "the sentinels refused the credentials: check CACHE_SENTINEL_USERNAME and \
             CACHE_SENTINEL_PASSWORD (the sentinels' own, not the data nodes')",
        ),
        RedisKind::AuthenticationFailed => (
            ErrorKind::Misconfigured,
            "authentication to Redis failed: check the user and password in the URL",
        ),
        _ if is_auth(e) => (
            ErrorKind::Misconfigured,
            "Redis requires other credentials: check the user and password in the URL",
        ),
        // Something answered, but not in Redis's protocol: an HTTP server, a database.
        RedisKind::Parse => (ErrorKind::Misconfigured, NOT_REDIS),
        RedisKind::UnexpectedReturnType if e.to_string().contains("Parse error") => {
            (ErrorKind::Misconfigured, NOT_REDIS)
        }
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
