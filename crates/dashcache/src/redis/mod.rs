//! [`RedisCache`]: the production backend, on the `redis` crate.
//!
//! One multiplexed, auto-reconnecting connection (`ConnectionManager`) shared by every clone —
//! or, on Redis Cluster, one such connection per master behind dashcache's own router (the slot
//! map, redirections; see `cluster`). Every operation runs under a deadline and behind a circuit
//! breaker (see [`BreakerConfig`]); reconnection is attempted once per operation that needs it,
//! inside that operation's deadline, so a dead server is reported as `Unavailable` at once
//! instead of queueing callers behind a backoff loop.
//!
//! ## On a cluster
//!
//! Select it with several seed URLs (`redis://a:7000,redis://b:7001`), a `redis+cluster://`
//! URL, or [`RedisCacheBuilder::cluster`]. Every method keeps its contract, with these
//! specifics:
//!
//! - `get_many` and `delete_many` are split by hash slot (a command may not span slots): the
//!   commands for one master go as one pipeline, the masters in parallel, all within one
//!   deadline, and the replies are reassembled in order. A slot whose master changed (a
//!   failover, a resharding) is re-sent on its own, following `MOVED`. A batch fails as a whole
//!   when a part fails; `delete_many` then leaves deleted what its other parts deleted;
//! - `set_many` is one `MULTI` per slot, sent the same way: all or nothing *within a slot*;
//!   across slots, a failure can leave some slots written and others not (give keys one hash
//!   tag with [`Keys::tagged_key`](crate::Keys::tagged_key) when they must be written together);
//! - `delete_pattern` sweeps every master;
//! - `write_if` is one script, so its keys must share a slot (a hash tag): otherwise it is
//!   refused with `InvalidArgument` and nothing is written;
//! - the circuit breaker is kept per range of 64 hash slots: while one master fails over, the
//!   operations on its slots fail fast and the others go on. A batch passes the breakers of
//!   every range it touches (refused at once if one is open) and its outcome on a master counts
//!   for that master's ranges. Operations without keys (`delete_pattern`'s scans, `ping`) go
//!   through a cluster-wide breaker;
//! - after a failover the same client finds the new master by itself: a request that cannot
//!   reach its node, or that its deadline cancels, has the slot map refreshed in the
//!   background (at most every 100 ms), and a `MOVED` reply is followed at once.

mod breaker;
mod builder;
mod cluster;
mod conn;
mod convert;
mod deadline;
mod refresh;
mod scripts;
mod sentinel;
mod sweep;
mod tls;
mod tracking;
mod version;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::{RedisResult, Value};

use cluster::{ClusterRouter, SlotGroup};
use conn::{Backend, Conn};
use deadline::Deadlines;

pub use breaker::BreakerConfig;
pub(crate) use breaker::slot as slot_of;
use breaker::{Breakers, CircuitBreaker};
pub use builder::RedisCacheBuilder;
pub(crate) use convert::error as convert_error;
use scripts::Scripts;
pub(crate) use sentinel::parse_url as parse_sentinel_url;
pub use sweep::{Sweep, SweepProgress};
pub use tls::TlsOptions;
pub(crate) use tracking::TrackedNode;
pub use version::MIN_REDIS_VERSION;

use crate::cache::{Cache, Condition, KeyTtl, Limits, Ttl, Write};
use crate::error::{Error, ErrorKind, Result};

/// The Redis backend. `Clone` is a cheap handle: clones share the connection and the breaker.
///
/// ```no_run
/// # async fn run() -> dashcache::Result<()> {
/// use dashcache::{Cache, RedisCache, Ttl};
///
/// let cache = RedisCache::connect("redis://127.0.0.1:6379").await?;
/// cache.set("app:user:1", "Ada".into(), Ttl::secs(60)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// The one server's connection settings (`None` on a cluster: the router has each
    /// node's), for connections of other kinds — the hybrid cache's tracking connection.
    single: Option<redis::ConnectionInfo>,
    timeout: Duration,
    connect_timeout: Duration,
    /// Enforces `timeout` on every operation.
    deadlines: Deadlines,
    sweep_timeout: Option<Duration>,
    breaker: Breakers,
    limits: Limits,
    scan_count: u32,
    scripts: Scripts,
    /// The URL with any password masked, for Debug and error messages.
    display_url: String,
    /// The server's version passed [`RedisCache::check_version`].
    version_checked: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.inner.display_url)
            .field("timeout", &self.inner.timeout)
            .field("breaker_open", &self.inner.breaker.is_open())
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl RedisCache {
    /// Whether the circuit breaker is open right now (on a cluster: any of them).
    pub fn is_circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// The URL this cache talks to, password masked.
    pub fn url(&self) -> &str {
        &self.inner.display_url
    }

    /// Whether this cache talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster(_))
    }

    /// Runs a script of another module (the rate limiter's) under this cache's deadline and
    /// breaker, by SHA with reload after `NOSCRIPT`, on the node of `key`.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        key: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn(key.as_bytes());
        self.run(Some(key), invocation.invoke_async(&mut conn))
            .await
    }

    /// A connection for the commands on `key` (on a cluster, to its slot's master).
    fn conn(&self, key: &[u8]) -> Conn {
        self.inner.backend.for_key(key)
    }

    /// The cluster router; an error on one server (only cluster code asks for it).
    fn router(&self) -> Result<&ClusterRouter> {
        match &self.inner.backend {
            Backend::Cluster(router) => Ok(router),
            Backend::Single(_) | Backend::Sentinel(_) => Err(Error::new(
                ErrorKind::Backend,
                "a cluster operation on a single-server cache",
            )),
        }
    }

    /// Runs one round trip on `key` (a label for errors, and which breaker on a cluster) under
    /// the breaker and the deadline.
    async fn run<T>(
        &self,
        key: Option<&str>,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let permit = match self.inner.breaker.for_key(key).acquire(Instant::now) {
            Ok(permit) => permit,
            Err(e) => return Err(refused(e).await),
        };
        let outcome = self.within_deadline(op).await;
        permit.record(&outcome, Instant::now);
        match (outcome, key) {
            (Err(e), Some(key)) if e.key().is_none() => Err(e.with_key(key)),
            (outcome, _) => outcome,
        }
    }

    /// [`run`](Self::run) behind several breakers: refused when any is open, and the
    /// outcome recorded on each.
    async fn run_behind_all<T>(
        &self,
        breakers: &[&CircuitBreaker],
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let permits = acquire_all(breakers).await?;
        let outcome = self.within_deadline(op).await;
        permits
            .into_iter()
            .for_each(|p| p.record(&outcome, Instant::now));
        outcome
    }

    async fn within_deadline<T>(&self, op: impl Future<Output = RedisResult<T>>) -> Result<T> {
        self.within_deadline_of(async { op.await.map_err(convert::error) })
            .await
    }

    /// `work` (several round trips, already mapped to our errors) within one deadline.
    async fn within_deadline_of<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        self.inner
            .deadlines
            .run(work)
            .await
            .unwrap_or_else(|| Err(self.timed_out()))
    }

    fn timed_out(&self) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "no answer from {} within {} ms",
                self.inner.display_url,
                self.inner.timeout.as_millis()
            ),
        )
    }

    /// `increment` with a TTL for a new counter: INCRBY and PEXPIRE NX in one script.
    async fn increment_with_ttl(
        &self,
        mut conn: Conn,
        key: &str,
        delta: i64,
        ms: u64,
    ) -> Result<i64> {
        let mut invocation = self.inner.scripts.increment.key(key);
        invocation.arg(delta).arg(ms);
        let text: String = self
            .run(Some(key), invocation.invoke_async(&mut conn))
            .await?;
        text.parse().map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                "the counter script returned a non-integer",
            )
            .with_key(key)
        })
    }

    fn check_keys(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|k| self.inner.limits.check_key(k))
    }
}

/// A breaker's refusal, after spending budget: a refusal returns without awaiting anything, and
/// a caller retrying in a loop would otherwise never yield and could starve the runtime's
/// workers.
async fn refused(e: Error) -> Error {
    tokio::task::consume_budget().await;
    e
}

/// A permit from each of `breakers`, or `CircuitOpen` (and none kept) when one is open.
async fn acquire_all<'b>(breakers: &[&'b CircuitBreaker]) -> Result<Vec<breaker::Permit<'b>>> {
    let mut permits = Vec::with_capacity(breakers.len());
    for breaker in breakers {
        match breaker.acquire(Instant::now) {
            Ok(permit) => permits.push(permit),
            Err(e) => {
                permits.into_iter().for_each(breaker::Permit::abandon);
                return Err(refused(e).await);
            }
        }
    }
    Ok(permits)
}

fn mismatched() -> Error {
    Error::new(
        ErrorKind::Backend,
        "a pipeline answered with a different number of replies than commands",
    )
}

/// A reply as `T`, or a `Backend` error saying what did not fit.
fn parse<T: redis::FromRedisValue>(value: Value) -> Result<T> {
    T::from_redis_value(value).map_err(|e| convert::error(e.into()))
}

/// Appends `SET key value [PX ttl]` to `pipe`.
fn queue_set<'p>(
    pipe: &'p mut redis::Pipeline,
    key: &str,
    value: &Bytes,
    ttl_millis: Option<u64>,
) -> &'p mut redis::Pipeline {
    pipe.cmd("SET").arg(key).arg(value.as_ref());
    if let Some(ms) = ttl_millis {
        pipe.arg("PX").arg(ms);
    }
    pipe
}

/// `SET`'s expiry arguments for a TTL already checked by [`Ttl::to_millis`].
fn with_ttl(cmd: &mut redis::Cmd, ttl_millis: Option<u64>) {
    if let Some(ms) = ttl_millis {
        cmd.arg("PX").arg(ms);
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn(key.as_bytes());
        self.run(Some(key), redis::cmd("GET").arg(key).query_async(&mut conn))
            .await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.inner.limits.check_key(key)?;
        self.inner.limits.check_value(key, &value)?;
        let ttl = ttl.to_millis()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value.as_ref());
        with_ttl(&mut cmd, ttl);
        let mut conn = self.conn(key.as_bytes());
        self.run(Some(key), cmd.query_async::<()>(&mut conn)).await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        self.inner.limits.check_value(key, &value)?;
        let ttl = ttl.to_millis()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value.as_ref()).arg("NX");
        with_ttl(&mut cmd, ttl);
        let mut conn = self.conn(key.as_bytes());
        let reply: Value = self.run(Some(key), cmd.query_async(&mut conn)).await?;
        Ok(!matches!(reply, Value::Nil))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn(key.as_bytes());
        self.run(
            Some(key),
            redis::cmd("GETDEL").arg(key).query_async(&mut conn),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn(key.as_bytes());
        let n: u64 = self
            .run(
                Some(key),
                redis::cmd("UNLINK").arg(key).query_async(&mut conn),
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.check_keys(keys)?;
        if keys.is_empty() {
            return Ok(0);
        }
        self.unlink(keys).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn(key.as_bytes());
        let n: u64 = self
            .run(
                Some(key),
                redis::cmd("EXISTS").arg(key).query_async(&mut conn),
            )
            .await?;
        Ok(n > 0)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.check_keys(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !self.is_cluster() {
            let mut conn = self.conn(b"");
            return self
                .run(None, redis::cmd("MGET").arg(keys).query_async(&mut conn))
                .await;
        }
        let mut values = vec![None; keys.len()];
        let mget = |pipe: &mut redis::Pipeline, group: &SlotGroup<&str>| {
            pipe.cmd("MGET").arg(&group.items);
            1
        };
        for (positions, reply) in self.per_slot(keys, &mget).await? {
            let reply: Vec<Option<Bytes>> = parse(reply)?;
            if reply.len() != positions.len() {
                return Err(Error::new(
                    ErrorKind::Backend,
                    "MGET answered with a different number of values than keys",
                ));
            }
            for (at, value) in positions.into_iter().zip(reply) {
                if let Some(slot) = values.get_mut(at) {
                    *slot = value;
                }
            }
        }
        Ok(values)
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        for (key, value) in entries {
            self.inner.limits.check_key(key)?;
            self.inner.limits.check_value(key, value)?;
        }
        let ttl = ttl.to_millis()?;
        if entries.is_empty() {
            return Ok(());
        }
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (key, value) in entries {
                queue_set(&mut pipe, key, value, ttl).ignore();
            }
            let mut conn = self.conn(b"");
            return self.run(None, pipe.query_async::<()>(&mut conn)).await;
        }
        // MULTI cannot span slots: one transaction per slot, a master's in one pipeline.
        let transaction = |pipe: &mut redis::Pipeline, group: &SlotGroup<(&str, Bytes)>| {
            pipe.cmd("MULTI");
            for (key, value) in &group.items {
                queue_set(pipe, key, value, ttl);
            }
            pipe.cmd("EXEC");
            group.items.len() + 2
        };
        for (_, reply) in self.per_slot(entries, &transaction).await? {
            // EXEC's replies; `Nil` would mean the transaction was discarded.
            if !matches!(reply, Value::Array(_)) {
                return Err(Error::new(
                    ErrorKind::Backend,
                    "a set_many transaction was not executed",
                ));
            }
        }
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.inner.limits.check_key(key)?;
        let ttl = ttl_on_create.map_or(Ok(None), Ttl::to_millis)?;
        let mut conn = self.conn(key.as_bytes());
        match ttl {
            // Without a TTL there is nothing to make atomic beyond INCRBY itself.
            None => {
                self.run(
                    Some(key),
                    redis::cmd("INCRBY")
                        .arg(key)
                        .arg(delta)
                        .query_async(&mut conn),
                )
                .await
            }
            // Boxed: a script call's future is several times a command's, and would make every
            // plain INCRBY allocate and move that much.
            Some(ms) => Box::pin(self.increment_with_ttl(conn, key, delta, ms)).await,
        }
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let ttl = ttl.to_millis()?;
        let mut conn = self.conn(key.as_bytes());
        match ttl {
            Some(ms) => {
                let n: u64 = self
                    .run(
                        Some(key),
                        redis::cmd("PEXPIRE")
                            .arg(key)
                            .arg(ms)
                            .query_async(&mut conn),
                    )
                    .await?;
                Ok(n > 0)
            }
            None => {
                // PERSIST answers 0 both for a missing key and for one without expiry; the
                // contract is "false when missing", so ask EXISTS in the same transaction.
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("EXISTS")
                    .arg(key)
                    .cmd("PERSIST")
                    .arg(key)
                    .ignore();
                let (exists,): (u64,) = self.run(Some(key), pipe.query_async(&mut conn)).await?;
                Ok(exists > 0)
            }
        }
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn(key.as_bytes());
        let ms: i64 = self
            .run(
                Some(key),
                redis::cmd("PTTL").arg(key).query_async(&mut conn),
            )
            .await?;
        Ok(match ms {
            -2 => KeyTtl::Missing,
            ms if ms < 0 => KeyTtl::Persistent,
            ms => KeyTtl::Expires(Duration::from_millis(ms.unsigned_abs())),
        })
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        self.sweep(pattern, Sweep::Delete, &mut |_| {}).await
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.inner.limits.check_members(key, members)?;
        let ttl = ttl.to_millis()?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.inner.scripts.set_add.key(key);
        match ttl {
            Some(ms) => invocation.arg(ms),
            None => invocation.arg(""),
        };
        for member in members {
            invocation.arg(member.as_ref());
        }
        let mut conn = self.conn(key.as_bytes());
        self.run(Some(key), invocation.invoke_async(&mut conn))
            .await
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("SREM");
        cmd.arg(key);
        for member in members {
            cmd.arg(member.as_ref());
        }
        let mut conn = self.conn(key.as_bytes());
        self.run(Some(key), cmd.query_async(&mut conn)).await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn(key.as_bytes());
        self.run(
            Some(key),
            redis::cmd("SMEMBERS").arg(key).query_async(&mut conn),
        )
        .await
    }

    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        self.inner.limits.check_write_if(conditions, writes)?;
        if writes.is_empty() && conditions.is_empty() {
            return Ok(true);
        }
        let invocation = scripts::write_if(&self.inner.scripts.write_if, conditions, writes)?;
        let label = writes
            .first()
            .map(Write::key)
            .or(conditions.first().map(Condition::key));
        let mut conn = self.conn(label.unwrap_or_default().as_bytes());
        let applied: u8 = self.run(label, invocation.invoke_async(&mut conn)).await?;
        Ok(applied == 1)
    }

    /// On a cluster, every master answers (in parallel): the cache is only up when each is.
    async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        if !self.version_checked() {
            // The first answer also says whether the server is new enough.
            self.check_version().await?;
            return Ok(start.elapsed());
        }
        let nodes = self.nodes().await?;
        let ping = redis::cmd("PING");
        let pings = nodes.iter().map(|node| self.on_node(node.as_ref(), &ping));
        futures::future::try_join_all(pings).await?;
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisCache::builder("redis://127.0.0.1:1").build().err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidArgument));
    }

    #[tokio::test]
    async fn a_malformed_url_is_an_invalid_argument() {
        let err = RedisCache::builder("not a url").build().err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidArgument));
    }
}
