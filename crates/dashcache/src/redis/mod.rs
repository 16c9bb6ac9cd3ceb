//! [`RedisCache`]: the production backend, on the `redis` crate.
//!
//! One multiplexed, auto-reconnecting connection (`ConnectionManager`) shared by every clone —
//! or, on Redis Cluster, the `redis` crate's cluster connection (a connection per node, the
//! slot map, redirections). Every operation runs under a deadline and behind a circuit breaker
//! (see [`BreakerConfig`]); reconnection is attempted once per operation that needs it, inside
//! that operation's deadline, so a dead server is reported as `Unavailable` at once instead of
//! queueing callers behind a backoff loop.
//!
//! ## On a cluster
//!
//! Select it with several seed URLs (`redis://a:7000,redis://b:7001`), a `redis+cluster://`
//! URL, or [`RedisCacheBuilder::cluster`]. Every method keeps its contract, with these
//! specifics:
//!
//! - `get_many` and `delete_many` are split by hash slot (a command may not span slots): the
//!   commands for one master go as one pipeline, the masters in parallel, all within one
//!   deadline, and the replies are reassembled in order. Which master serves a slot comes from
//!   a cached `CLUSTER SHARDS` map; when it is stale (a failover, a resharding) the affected
//!   slots are re-sent one by one through the `redis` crate's routing, which follows `MOVED`. A
//!   batch fails as a whole when a part fails; `delete_many` then leaves deleted what its other
//!   parts deleted;
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
//!   through a cluster-wide breaker.

mod breaker;
mod conn;
mod convert;
mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};

use conn::{Conn, SlotMap};

pub use breaker::BreakerConfig;
use breaker::{Breakers, CircuitBreaker};
use scripts::Scripts;

use crate::cache::{Cache, Condition, KeyTtl, Limits, Ttl, Write};
use crate::error::{Error, ErrorKind, Result};
use crate::settings::{cluster_seeds, mask_url};

/// What [`RedisCache::sweep`] does with the keys it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sweep {
    /// Deletes them.
    Delete,
    /// Only counts them (a dry run).
    Count,
}

/// How far a [`RedisCache::sweep`] has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepProgress {
    /// `SCAN` steps so far.
    pub batches: u64,
    /// Keys matched so far (a key `SCAN` returns twice is counted twice).
    pub matched: u64,
    /// Keys deleted so far.
    pub deleted: u64,
}

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
    conn: Conn,
    timeout: Duration,
    breaker: Breakers,
    limits: Limits,
    scan_count: u32,
    scripts: Scripts,
    /// Which master serves each slot (cluster only), for splitting batches by node; dropped
    /// when a batch finds it stale.
    slot_map: std::sync::Mutex<Option<Arc<SlotMap>>>,
    /// The URL with any password masked, for Debug and error messages.
    display_url: String,
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

/// Configures a [`RedisCache`]; see [`RedisCache::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisCacheBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Option<Duration>,
    breaker: BreakerConfig,
    limits: Limits,
    scan_count: u32,
    cluster: bool,
}

impl fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("url", &mask_url(&self.url))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("breaker", &self.breaker)
            .field("limits", &self.limits)
            .field("scan_count", &self.scan_count)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl RedisCacheBuilder {
    /// The deadline of every operation, connection included (default 250 ms). For
    /// `delete_pattern` it bounds each `SCAN` / `UNLINK` step, not the whole sweep.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = dashcache::RedisCache::builder("redis://127.0.0.1").timeout(Duration::from_millis(100));
    /// # let _ = b;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of one connection attempt (default: the operation deadline).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The circuit breaker's thresholds (default: open after 5 consecutive transient failures,
    /// probe after 500 ms).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// The key and value size limits (default 1 KiB keys, 8 MiB values).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The `COUNT` hint of each `SCAN` step of `delete_pattern` (default 1000, at least 500):
    /// large enough to sweep quickly, small enough that each step stays short on the server.
    pub fn scan_count(mut self, count: u32) -> Self {
        self.scan_count = count.max(500);
        self
    }

    /// Talks to a Redis Cluster, the URL being one seed node (several comma-separated seeds,
    /// or a `redis+cluster://` URL, select the cluster too). See the module docs for what each
    /// method guarantees there.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Builds the cache without any I/O; the connection is made by the first operation. Use
    /// this when the service must start even while Redis is down (fail-open), and check
    /// [`Cache::ping`] to report it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a malformed URL or when called outside a Tokio
    /// runtime (the connection's driver task needs one).
    pub fn build(self) -> Result<RedisCache> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::invalid_argument(
                "RedisCache must be built inside a Tokio runtime",
            ));
        }
        let display_url = mask_url(&self.url);
        let (seeds, cluster) = cluster_seeds(&self.url);
        let connect_timeout = self.connect_timeout.unwrap_or(self.timeout);
        let invalid = |e: redis::RedisError| {
            Error::invalid_argument(format!("invalid Redis URL {display_url}")).with_source(e)
        };
        let cluster = cluster || self.cluster;
        let conn = if cluster {
            let client = redis::cluster::ClusterClientBuilder::new(seeds)
                // A redirection or a failover is retried inside the operation's deadline.
                .retries(2)
                .build()
                .map_err(invalid)?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(connect_timeout)
                .set_response_timeout(self.timeout);
            // Connects in the background: a cluster that is down at start is reported by the
            // first operation (and `ping`), not by a failed start.
            Conn::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let client = redis::Client::open(self.url.as_str()).map_err(invalid)?;
            let config = ConnectionManagerConfig::new()
                // One attempt per reconnect: retries would keep callers waiting on a backoff
                // schedule past their deadline. The breaker paces the attempts instead.
                .set_number_of_retries(0)
                .set_connection_timeout(Some(connect_timeout))
                // Our own deadline covers every operation, connecting included.
                .set_response_timeout(None);
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?)
        };
        Ok(RedisCache {
            inner: Arc::new(Inner {
                conn,
                timeout: self.timeout,
                breaker: Breakers::new(self.breaker, cluster),
                limits: self.limits,
                scan_count: self.scan_count,
                scripts: Scripts::new(),
                slot_map: std::sync::Mutex::new(None),
                display_url,
            }),
        })
    }

    /// Builds the cache and checks that the server answers.
    ///
    /// # Errors
    /// As [`build`](Self::build), and the error of the first `PING` (`Unavailable`, `Timeout`,
    /// or `Backend` for a refused authentication).
    pub async fn connect(self) -> Result<RedisCache> {
        let cache = self.build()?;
        cache.ping().await?;
        Ok(cache)
    }
}

impl RedisCache {
    /// Starts configuring a cache for `url` (`redis://[user:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            timeout: Duration::from_millis(250),
            connect_timeout: None,
            breaker: BreakerConfig::default(),
            limits: Limits::default(),
            scan_count: 1000,
            cluster: false,
        }
    }

    /// Connects to `url` with the default deadline and breaker, and checks that it answers.
    ///
    /// # Errors
    /// As [`RedisCacheBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Whether the circuit breaker is open right now (on a cluster: any of them).
    pub fn is_circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// The URL this cache talks to, password masked.
    pub fn url(&self) -> &str {
        &self.inner.display_url
    }

    /// Walks the keys matching `pattern` with `SCAN` (never `KEYS`), deleting them with
    /// `UNLINK` in batches (or only counting them, with [`Sweep::Count`]), and reports after
    /// each batch; the number matched (counting) or actually deleted. Each step has the
    /// operation deadline; the sweep as a whole has none.
    ///
    /// This is [`Cache::delete_pattern`] with progress, for tools such as
    /// `dashcache keys delete-pattern`.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty pattern; transport errors (keys deleted before the error
    /// stay deleted).
    pub async fn sweep(
        &self,
        pattern: &str,
        mode: Sweep,
        progress: &mut (dyn FnMut(SweepProgress) + Send),
    ) -> Result<u64> {
        self.inner.limits.check_pattern(pattern)?;
        // A cluster keeps each key on one master: every master is swept.
        let nodes: Vec<Option<(String, u16)>> = if self.is_cluster() {
            let mut conn = self.conn();
            let masters = self.run(None, conn.masters()).await?;
            masters.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut report = SweepProgress::default();
        for node in &nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(self.inner.scan_count);
                let mut conn = self.conn();
                let (next, keys): (u64, Vec<Vec<u8>>) = self
                    .run(None, async {
                        match node {
                            Some(node) => {
                                let reply = conn.on_node(node, &scan).await?;
                                Ok(redis::FromRedisValue::from_redis_value(reply)?)
                            }
                            None => scan.query_async(&mut conn).await,
                        }
                    })
                    .await?;
                report.batches += 1;
                report.matched += keys.len() as u64;
                if mode == Sweep::Delete && !keys.is_empty() {
                    // UNLINK's count is what was actually deleted: a key SCAN returns twice, or
                    // one that expired meanwhile, is not counted. (On a cluster the crate splits
                    // it by slot.)
                    report.deleted += self.unlink(&keys).await?;
                }
                progress(report);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(match mode {
            Sweep::Delete => report.deleted,
            Sweep::Count => report.matched,
        })
    }

    /// The number of keys in the server's database (`DBSIZE`).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn key_count(&self) -> Result<u64> {
        let mut conn = self.conn();
        self.run(None, redis::cmd("DBSIZE").query_async(&mut conn))
            .await
    }

    /// Runs a script of another module (the rate limiter's) under this cache's deadline and
    /// breaker, by SHA with reload after `NOSCRIPT`.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        label: Option<&str>,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn();
        self.run(label, invocation.invoke_async(&mut conn)).await
    }

    /// `UNLINK`s `keys` (split by slot on a cluster); how many existed.
    async fn unlink<K: AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<u64> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        if !self.is_cluster() {
            let mut conn = self.conn();
            return self
                .run(None, redis::cmd("UNLINK").arg(&keys).query_async(&mut conn))
                .await;
        }
        let mut deleted = 0;
        let unlink = |pipe: &mut redis::Pipeline, group: &SlotGroup<&[u8]>| {
            pipe.cmd("UNLINK").arg(&group.items);
            1
        };
        for (_, reply) in self.per_slot(&keys, &unlink).await? {
            deleted += parse::<u64>(reply)?;
        }
        Ok(deleted)
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Whether this cache talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
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
        match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(convert::error(e)),
            Err(_) => Err(self.timed_out()),
        }
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

    /// Runs a batch on a cluster: `build` appends one slot group's commands to a pipeline and
    /// says how many it appended; the commands for one master go in one pipeline, the masters
    /// in parallel, all within one deadline. Returns each group's positions in the batch and
    /// the reply of its last command.
    ///
    /// The masters come from a cached slot map. A part that went to the wrong node — the map
    /// was stale, a replica was promoted — drops the map and is re-sent one slot group at a
    /// time, routed by the crate, which follows `MOVED`.
    async fn per_slot<T: Keyed + Clone + Sync>(
        &self,
        items: &[T],
        build: &(dyn Fn(&mut redis::Pipeline, &SlotGroup<T>) -> usize + Sync),
    ) -> Result<Vec<(Vec<usize>, Value)>> {
        let work = async {
            let groups = by_slot(items);
            let map = self.slot_map().await;
            let mut by_node: HashMap<usize, Vec<usize>> = HashMap::new();
            let mut unmapped = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                match map.as_ref().and_then(|m| m.node_of(group.slot)) {
                    Some(node) => by_node.entry(node).or_default().push(g),
                    None => unmapped.push(g),
                }
            }
            let parts = by_node
                .into_values()
                .map(|members| self.node_part(&groups, members, build));
            let mut replies: Vec<(Vec<usize>, Value)> = Vec::with_capacity(groups.len());
            for part in futures::future::try_join_all(parts).await? {
                replies.extend(part);
            }
            if !unmapped.is_empty() {
                replies.extend(self.group_by_group(&groups, &unmapped, build).await?);
            }
            Ok(replies)
        };
        tokio::time::timeout(self.inner.timeout, work)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }

    /// One master's share of [`per_slot`](Self::per_slot): `members` (indices in `groups`) in
    /// one pipeline, routed to the master of the first one's slot.
    async fn node_part<T: Keyed + Clone + Sync>(
        &self,
        groups: &[SlotGroup<T>],
        members: Vec<usize>,
        build: &(dyn Fn(&mut redis::Pipeline, &SlotGroup<T>) -> usize + Sync),
    ) -> Result<Vec<(Vec<usize>, Value)>> {
        let mut pipeline = redis::pipe();
        // Per member: its group and how many replies are its own.
        let mut parts: Vec<(&SlotGroup<T>, usize)> = Vec::with_capacity(members.len());
        for &g in &members {
            if let Some(group) = groups.get(g) {
                parts.push((group, build(&mut pipeline, group)));
            }
        }
        let Some(first) = parts.first().map(|(group, _)| group.slot) else {
            return Ok(Vec::new());
        };
        let count: usize = parts.iter().map(|(_, n)| n).sum();
        let breakers = self
            .inner
            .breaker
            .for_slots(parts.iter().map(|(group, _)| group.slot));
        let permits = acquire_all(&breakers).await?;
        let mut conn = self.conn();
        let sent = tokio::time::timeout(
            self.inner.timeout,
            conn.pipeline_on_slot(first, pipeline, count),
        )
        .await;
        let sent = match sent {
            Ok(Err(e)) if is_rerouting(&e) => {
                // The map was stale: nothing was learnt about the nodes' health, so no verdict.
                permits.into_iter().for_each(breaker::Permit::abandon);
                self.forget_slot_map();
                return self.group_by_group(groups, &members, build).await;
            }
            Ok(sent) => sent.map_err(convert::error),
            Err(_) => Err(self.timed_out()),
        };
        permits
            .into_iter()
            .for_each(|p| p.record(&sent, Instant::now));
        let values = match sent {
            Ok(values) if values.len() == count => values,
            Ok(_) => return Err(mismatched()),
            Err(e) => {
                if e.is_transient() {
                    // The node may be gone: the next batch asks for a new map.
                    self.forget_slot_map();
                }
                return Err(e);
            }
        };
        let mut values = values.into_iter();
        let mut replies = Vec::with_capacity(parts.len());
        let mut redirected = Vec::new();
        for ((group, n), &g) in parts.into_iter().zip(&members) {
            let own: Vec<Value> = values.by_ref().take(n).collect();
            // MOVED, ASK, TRYAGAIN, CLUSTERDOWN, EXECABORT: the map is stale or the slot in
            // motion; a transaction refused at queueing time wrote nothing.
            if own.iter().any(|v| matches!(v, Value::ServerError(_))) {
                redirected.push(g);
            } else if let Some(last) = own.into_iter().last() {
                replies.push((group.positions.clone(), last));
            }
        }
        if !redirected.is_empty() {
            self.forget_slot_map();
            replies.extend(self.group_by_group(groups, &redirected, build).await?);
        }
        Ok(replies)
    }

    /// The groups `members` one pipeline each, routed by the crate to their slot's master, in
    /// parallel.
    async fn group_by_group<T: Keyed + Clone + Sync>(
        &self,
        groups: &[SlotGroup<T>],
        members: &[usize],
        build: &(dyn Fn(&mut redis::Pipeline, &SlotGroup<T>) -> usize + Sync),
    ) -> Result<Vec<(Vec<usize>, Value)>> {
        let parts = members
            .iter()
            .filter_map(|&g| groups.get(g))
            .map(|group| async move {
                let mut pipeline = redis::pipe();
                let count = build(&mut pipeline, group);
                let mut conn = self.conn();
                let breakers = self.inner.breaker.for_slots([group.slot]);
                let values = self
                    .run_behind_all(
                        &breakers,
                        conn.pipeline_on_slot(group.slot, pipeline, count),
                    )
                    .await?;
                if values.len() != count {
                    return Err(mismatched());
                }
                let mut last = Value::Nil;
                for value in values {
                    if let Value::ServerError(e) = value {
                        return Err(convert::error(e.into()));
                    }
                    last = value;
                }
                Ok::<_, Error>((group.positions.clone(), last))
            });
        futures::future::try_join_all(parts).await
    }

    /// The cached slot map, fetched when there is none; `None` when it cannot be had (the
    /// caller then routes slot by slot).
    async fn slot_map(&self) -> Option<Arc<SlotMap>> {
        let cached = self
            .inner
            .slot_map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if cached.is_some() {
            return cached;
        }
        let mut conn = self.conn();
        let map = Arc::new(self.run(None, conn.slot_map()).await.ok()?);
        if map.nodes.is_empty() {
            return None;
        }
        *self
            .inner
            .slot_map
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&map));
        Some(map)
    }

    fn forget_slot_map(&self) {
        *self
            .inner
            .slot_map
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn check_keys(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|k| self.inner.limits.check_key(k))
    }
}

/// Whether `e` says the command went to the wrong node (not that a node failed): a
/// redirection, or no connection to the node the map named.
fn is_rerouting(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    matches!(
        e.kind(),
        K::ClusterConnectionNotFound | K::Server(S::Moved | S::Ask)
    )
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

/// Something with a key, grouped by [`by_slot`].
trait Keyed {
    fn key_bytes(&self) -> &[u8];
}

impl Keyed for &str {
    fn key_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Keyed for &[u8] {
    fn key_bytes(&self) -> &[u8] {
        self
    }
}

impl Keyed for (&str, Bytes) {
    fn key_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Items whose keys share a hash slot, with the positions they had in the batch.
struct SlotGroup<T> {
    slot: u16,
    items: Vec<T>,
    positions: Vec<usize>,
}

/// `items` grouped by the hash slot of their keys, groups in order of first appearance.
fn by_slot<T: Keyed + Clone>(items: &[T]) -> Vec<SlotGroup<T>> {
    let mut index: HashMap<u16, usize> = HashMap::new();
    let mut groups: Vec<SlotGroup<T>> = Vec::new();
    for (at, item) in items.iter().enumerate() {
        let slot = breaker::slot(item.key_bytes());
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push(SlotGroup {
                slot,
                items: Vec::new(),
                positions: Vec::new(),
            });
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(g) {
            group.items.push(item.clone());
            group.positions.push(at);
        }
    }
    groups
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

/// A TTL as a script argument: milliseconds, or `''` for no expiry.
fn ttl_arg(invocation: &mut redis::ScriptInvocation<'_>, ttl: Ttl) -> Result<()> {
    match ttl.to_millis()? {
        Some(ms) => invocation.arg(ms),
        None => invocation.arg(""),
    };
    Ok(())
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        self.run(Some(key), cmd.query_async::<()>(&mut conn)).await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        self.inner.limits.check_value(key, &value)?;
        let ttl = ttl.to_millis()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value.as_ref()).arg("NX");
        with_ttl(&mut cmd, ttl);
        let mut conn = self.conn();
        let reply: Value = self.run(Some(key), cmd.query_async(&mut conn)).await?;
        Ok(!matches!(reply, Value::Nil))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn();
        self.run(
            Some(key),
            redis::cmd("GETDEL").arg(key).query_async(&mut conn),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
            let mut conn = self.conn();
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
            let mut conn = self.conn();
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
        let ttl = match ttl_on_create {
            Some(ttl) => ttl.to_millis()?,
            None => None,
        };
        let mut conn = self.conn();
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
            Some(ms) => {
                let script = &self.inner.scripts.increment;
                let mut invocation = script.key(key);
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
        }
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let ttl = ttl.to_millis()?;
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
        self.inner.limits.check_key(key)?;
        for member in members {
            self.inner.limits.check_value(key, member)?;
        }
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        self.run(Some(key), cmd.query_async(&mut conn)).await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        self.inner.limits.check_key(key)?;
        let mut conn = self.conn();
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
        let mut invocation = self.inner.scripts.write_if.prepare_invoke();
        let mut slot = 0usize;
        let mut key = |k: &str, inv: &mut redis::ScriptInvocation<'_>| {
            inv.key(k);
            slot += 1;
            slot
        };
        invocation.arg(conditions.len());
        for c in conditions {
            let n = key(c.key(), &mut invocation);
            match c {
                Condition::Absent(_) => invocation.arg("absent").arg(n).arg(""),
                Condition::Exists(_) => invocation.arg("exists").arg(n).arg(""),
                Condition::MissingOrBelow(_, bound) => invocation.arg("below").arg(n).arg(*bound),
            };
        }
        invocation.arg(writes.len());
        for w in writes {
            let n = key(w.key(), &mut invocation);
            match w {
                Write::Set(_, value, ttl) => {
                    invocation.arg("S").arg(n).arg(value.as_ref());
                    ttl_arg(&mut invocation, *ttl)?;
                }
                Write::SetInt(_, value, ttl) => {
                    invocation.arg("S").arg(n).arg(*value);
                    ttl_arg(&mut invocation, *ttl)?;
                }
                Write::Replace(_, value) => {
                    invocation.arg("R").arg(n).arg(value.as_ref());
                }
                Write::Delete(_) => {
                    invocation.arg("D").arg(n);
                }
                Write::SetAdd(_, members, ttl) => {
                    invocation.arg("A").arg(n);
                    ttl_arg(&mut invocation, *ttl)?;
                    invocation.arg(members.len());
                    for m in members.iter() {
                        invocation.arg(m.as_ref());
                    }
                }
                Write::SetRemove(_, members) => {
                    invocation.arg("X").arg(n).arg(members.len());
                    for m in members.iter() {
                        invocation.arg(m.as_ref());
                    }
                }
            }
        }
        let label = writes
            .first()
            .map(Write::key)
            .or(conditions.first().map(Condition::key));
        let mut conn = self.conn();
        let applied: u8 = self.run(label, invocation.invoke_async(&mut conn)).await?;
        Ok(applied == 1)
    }

    async fn ping(&self) -> Result<Duration> {
        let mut conn = self.conn();
        let start = Instant::now();
        self.run(None, redis::cmd("PING").query_async::<()>(&mut conn))
            .await?;
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            mask_url("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(mask_url("redis://hunter2@host"), "redis://***@host");
        assert_eq!(mask_url("rediss://:p@ss@host/1"), "rediss://:***@host/1");
    }

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
