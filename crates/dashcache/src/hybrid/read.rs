//! Reads of L2 for L1: on the tracking connection of the key's server, with the key's remaining
//! TTL, in one transaction per key (or per slot, for a batch).
//!
//! Why on the tracking connection and not the cache's own: a connection delivers its pushes
//! and replies in the order the server produced them, so when a read's reply arrives every
//! invalidation for a write the server ran before that read has been applied to L1. Then a
//! value read from L2 is never newer than what L1 still serves for another key (a reader never
//! sees `a` after a write and `b` from before it), and a value put into L1 never sits beside a
//! key its own write had invalidated.

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind as RedisKind, FromRedisValue, RedisError, ServerErrorKind, Value};

/// A value and its key's `PTTL` as of the read: milliseconds left, `-1` for no expiry, `-2` for
/// no key.
pub(super) type Stamped = (Option<Bytes>, i64);

/// `GET` and `PTTL` of `key` in one transaction.
pub(super) async fn one(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Stamped, RedisError> {
    let mut pipe = redis::pipe();
    // Errors as values: a key of another type fails its GET alone, and is that error.
    pipe.atomic()
        .ignore_errors()
        .cmd("GET")
        .arg(key)
        .cmd("PTTL")
        .arg(key);
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let mut replies = replies.into_iter();
    let value = checked(replies.next())?;
    let ttl = checked(replies.next())?;
    Ok((
        Option::<Bytes>::from_redis_value(value)?,
        i64::from_redis_value(ttl)?,
    ))
}

/// `MGET` and a `PTTL` per key, in one transaction (the keys must share a slot on a
/// cluster). A key of another type reads as `(None, ttl ≥ -1)`.
pub(super) async fn many(
    conn: &mut MultiplexedConnection,
    keys: &[&str],
) -> Result<Vec<Stamped>, RedisError> {
    let mut pipe = redis::pipe();
    pipe.atomic().ignore_errors().cmd("MGET").arg(keys);
    for key in keys {
        pipe.cmd("PTTL").arg(*key);
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let mut replies = replies.into_iter();
    let values = Vec::<Option<Bytes>>::from_redis_value(checked(replies.next())?)?;
    let ttls = replies
        .map(|ttl| Ok(i64::from_redis_value(checked(Some(ttl))?)?))
        .collect::<Result<Vec<i64>, RedisError>>()?;
    if values.len() != keys.len() || ttls.len() != keys.len() {
        return Err(RedisError::from((
            RedisKind::Parse,
            "a stamped read answered with a different number of replies than keys",
        )));
    }
    Ok(values.into_iter().zip(ttls).collect())
}

/// A reply, or the error the server put in its place.
fn checked(reply: Option<Value>) -> Result<Value, RedisError> {
    match reply {
        Some(Value::ServerError(e)) => Err(e.into()),
        Some(value) => Ok(value),
        None => Err(RedisError::from((
            RedisKind::Parse,
            "a stamped read answered with too few replies",
        ))),
    }
}

/// Whether a failed read should be retried on the cache's own connection: the server did not
/// answer it (the tracking connection dropped) or it went to the wrong node (the slot moved).
/// Anything else — a key of another type, say — is the answer.
pub(super) fn retry_elsewhere(e: &RedisError) -> bool {
    let redirected = matches!(
        e.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "EXECABORT" | "MASTERDOWN" | "LOADING")
    );
    redirected
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            RedisKind::Server(
                ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ExecAbort
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            ) | RedisKind::Client
                | RedisKind::Parse
        )
}
