//! [`SentinelRouter`]: the master of a Redis Sentinel set, found through the sentinels and
//! followed across failovers.
//!
//! The URL names the sentinels and the master set:
//! `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master-name>[/<db>]`
//! (`rediss+sentinel://` speaks TLS to every one of them). The credentials and the database are
//! the master's; sentinels are asked with their own credentials when
//! [`sentinel_credentials`](crate::RedisCacheBuilder::sentinel_credentials) gives them
//! (`CACHE_SENTINEL_USERNAME` / `CACHE_SENTINEL_PASSWORD`), without any otherwise.
//!
//! Following Sentinel's client protocol: the sentinels are asked all at once for the master's
//! address (`SENTINEL get-master-addr-by-name`), the first answer is taken, and the server it
//! names must say it is a master (`ROLE`) before it is used. The master is looked up again —
//! in the background, at most one lookup at a time and one per [`LOOKUP_INTERVAL`] — when a
//! request cannot reach it, is cancelled by its deadline (a frozen master), or meets
//! `READONLY` (a master demoted to replica: its write is retried once on the new master).
//! Requests never wait for a lookup they did not need, so deadlines and breakers behave as on
//! one server.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{
    Cmd, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value,
};

use super::cluster::{Node, addr_like};
use super::refresh::{Refresh, Refresher, Watch};

/// The shortest time between two lookups of the master.
pub(crate) const LOOKUP_INTERVAL: Duration = Duration::from_millis(100);

/// What a `redis+sentinel://` URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// One `redis://host:port` (or `rediss://`) URL per sentinel, without credentials.
    pub(crate) sentinels: Vec<String>,
    /// The master set's name.
    pub(crate) master_name: String,
    /// A URL carrying the master's credentials, database and transport (its address is a
    /// placeholder: the first sentinel's).
    pub(crate) master_template: String,
}

/// Parses a `redis+sentinel://` or `rediss+sentinel://` URL; `None` for any other scheme.
pub(crate) fn parse_url(url: &str) -> Option<Result<SentinelUrl, String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
        ("rediss", rest)
    } else {
        return None;
    };
    Some(parse_rest(scheme, rest))
}

fn parse_rest(scheme: &str, rest: &str) -> Result<SentinelUrl, String> {
    let usage = "redis+sentinel://[[user]:password@]host:port[,host:port…]/<master-name>[/<db>]";
    // The user information ends at the last `@` before the path (a password may hold `/`).
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("no master name: {usage}"))?;
    let mut path = path.trim_end_matches('/').split('/');
    let master_name = path.next().unwrap_or_default().to_owned();
    if master_name.is_empty() {
        return Err(format!("no master name: {usage}"));
    }
    let db = match path.next() {
        Some(db) => db
            .parse::<u16>()
            .map_err(|_| format!("the database must be a number: {usage}"))?,
        None => 0,
    };
    if path.next().is_some() {
        return Err(format!("too many path segments: {usage}"));
    }
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}"))
        .collect();
    let Some(first) = sentinels.first() else {
        return Err(format!("no sentinel address: {usage}"));
    };
    let host = first.trim_start_matches(&format!("{scheme}://"));
    let master_template = match userinfo {
        Some(userinfo) => format!("{scheme}://{userinfo}@{host}/{db}"),
        None => format!("{scheme}://{host}/{db}"),
    };
    Ok(SentinelUrl {
        sentinels,
        master_name,
        master_template,
    })
}

/// Finds and follows the master of a sentinel set; a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct SentinelRouter {
    shared: Arc<Shared>,
}

struct Shared {
    master_name: String,
    /// One connection per sentinel, made on first use.
    sentinels: Vec<ConnectionManager>,
    /// The master's credentials, database and transport.
    template: ConnectionInfo,
    config: ConnectionManagerConfig,
    /// Bounds each sentinel's and the candidate's answers during a lookup.
    timeout: Duration,
    current: RwLock<Option<(Node, ConnectionManager)>>,
    refresher: Refresher,
}

impl SentinelRouter {
    /// A router over the sentinels `sentinels`, for the master set `master_name`, reached
    /// with `template`'s settings; no I/O.
    pub(crate) fn new(
        sentinels: Vec<ConnectionInfo>,
        master_name: String,
        template: ConnectionInfo,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let sentinels = sentinels
            .into_iter()
            .map(|info| {
                ConnectionManager::new_lazy_with_config(redis::Client::open(info)?, config.clone())
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Self {
            shared: Arc::new(Shared {
                master_name,
                sentinels,
                template,
                config,
                timeout,
                current: RwLock::new(None),
                refresher: Refresher::new(LOOKUP_INTERVAL),
            }),
        })
    }

    /// The master as last found, if any (no I/O).
    pub(crate) fn current(&self) -> Option<Node> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(node, _)| node.clone())
    }

    /// The master, looked up first when none is known yet.
    pub(crate) async fn master(&self) -> RedisResult<Node> {
        Ok(self.connection().await?.0)
    }

    /// The connection settings of `node` (the master's credentials and transport).
    pub(crate) fn info_for(&self, node: &Node) -> ConnectionInfo {
        let addr = addr_like(self.shared.template.addr(), node);
        self.shared.template.clone().set_addr(addr)
    }

    /// The database every connection selects.
    pub(crate) fn db(&self) -> i64 {
        self.shared.template.redis_settings().db()
    }

    /// Sends one command to the master.
    pub(crate) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut watch = Watch::new(self);
        let mut retried = false;
        loop {
            let (_, mut conn) = self.connection().await?;
            let reply = conn.req_packed_command(cmd).await;
            if !retried && matches!(&reply, Ok(value) if is_read_only(value)) {
                retried = true;
                self.demoted().await?;
                continue;
            }
            watch.done(&reply);
            return reply;
        }
    }

    /// Sends a pipeline to the master, returning `count` replies from `offset`.
    pub(crate) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut watch = Watch::new(self);
        let (_, mut conn) = self.connection().await?;
        let replies = conn.req_packed_commands(pipeline, offset, count).await;
        if matches!(&replies, Ok(values) if values.iter().any(is_read_only)) {
            // A transaction cannot be replayed safely from here: answer, and move on.
            self.lookup_soon();
        }
        watch.done(&replies);
        replies
    }

    /// Asks for a lookup of the master in the background (at most one at a time, at most one
    /// per [`LOOKUP_INTERVAL`]).
    pub(crate) fn lookup_soon(&self) {
        let router = self.clone();
        self.shared.refresher.soon(|| async move {
            // A failed lookup is retried by the next request that fails.
            let _ = router.lookup_now(true).await;
            router.shared.refresher.done();
        });
    }

    /// The master named `READONLY`: look it up again now, and fail if it did not change.
    async fn demoted(&self) -> RedisResult<()> {
        let before = self.current();
        self.lookup_now(true).await?;
        if self.current() == before {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the master is a replica now, and the sentinels name no other yet",
            )));
        }
        Ok(())
    }

    async fn connection(&self) -> RedisResult<(Node, ConnectionManager)> {
        if let Some(known) = self.known() {
            return Ok(known);
        }
        self.lookup_now(false).await?;
        self.known().ok_or_else(|| {
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::MasterDown),
                "no sentinel names a master for this set",
                self.shared.master_name.clone(),
            ))
        })
    }

    fn known(&self) -> Option<(Node, ConnectionManager)> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Looks the master up (see [`Refresher::now`]).
    async fn lookup_now(&self, wait_interval: bool) -> RedisResult<()> {
        self.shared
            .refresher
            .now(wait_interval, self.lookup())
            .await
    }

    /// Asks every sentinel at once; the first address named is checked with `ROLE` and
    /// installed.
    async fn lookup(&self) -> RedisResult<()> {
        let timeout = self.shared.timeout;
        let mut asks: FuturesUnordered<_> = self
            .shared
            .sentinels
            .iter()
            .cloned()
            .map(|mut sentinel| async move {
                let mut cmd = redis::cmd("SENTINEL");
                cmd.arg("get-master-addr-by-name")
                    .arg(&self.shared.master_name);
                let reply = tokio::time::timeout(timeout, cmd.query_async(&mut sentinel))
                    .await
                    .map_err(|_| RedisError::from((ErrorKind::Io, "a sentinel timed out")))?;
                let addr: Option<(String, u16)> = reply.map_err(|e| {
                    if e.kind() == ErrorKind::AuthenticationFailed
                        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
                    {
                        RedisError::from((
                            ErrorKind::AuthenticationFailed,
                            super::convert::SENTINELS_REFUSED,
                        ))
                    } else {
                        e
                    }
                })?;
                addr.ok_or_else(|| {
                    RedisError::from((
                        ErrorKind::Server(ServerErrorKind::MasterDown),
                        "a sentinel knows no such master set",
                    ))
                })
            })
            .collect();
        let mut last_error = None;
        while let Some(answer) = asks.next().await {
            match answer {
                Ok(node) => return self.install(node).await,
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no sentinel"))))
    }

    /// Makes `node` the master, once it says it is one.
    async fn install(&self, node: Node) -> RedisResult<()> {
        if self.current().as_ref() == Some(&node) {
            return Ok(());
        }
        let client = redis::Client::open(self.info_for(&node))?;
        let mut conn = ConnectionManager::new_lazy_with_config(client, self.shared.config.clone())?;
        let role = tokio::time::timeout(
            self.shared.timeout,
            redis::cmd("ROLE").query_async::<Vec<Value>>(&mut conn),
        )
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "the named master timed out")))??;
        let is_master = matches!(
            role.first(),
            Some(Value::BulkString(b)) if b.as_slice() == b"master"
        ) || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master");
        if !is_master {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the sentinels name a server that is not a master (yet)",
            )));
        }
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some((node, conn));
        Ok(())
    }
}

fn is_read_only(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly))
}

impl Refresh for SentinelRouter {
    fn refresh_soon(&self) {
        self.lookup_soon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_set_and_the_database() {
        let parsed = parse_url("redis+sentinel://:p@ss/w@a:26379, b:26380/mymaster/2");
        assert_eq!(
            parsed,
            Some(Ok(SentinelUrl {
                sentinels: vec!["redis://a:26379".into(), "redis://b:26380".into()],
                master_name: "mymaster".into(),
                master_template: "redis://:p@ss/w@a:26379/2".into(),
            }))
        );
        let tls = parse_url("rediss+sentinel://s:1/m").and_then(Result::ok);
        assert_eq!(
            tls.map(|u| (u.sentinels, u.master_template)),
            Some((vec!["rediss://s:1".into()], "rediss://s:1/0".into()))
        );
        assert_eq!(parse_url("redis://a:1"), None);
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel:///m",
            "redis+sentinel://a:1/m/x",
            "redis+sentinel://a:1/m/1/2",
        ] {
            assert!(matches!(parse_url(bad), Some(Err(_))), "{bad}");
        }
    }
}
