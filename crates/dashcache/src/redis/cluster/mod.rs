//! [`ClusterRouter`]: dashcache's own Redis Cluster routing over one connection per node.
//!
//! Why not the `redis` crate's `cluster_async::ClusterConnection`: after a failover it could
//! leave a client timing out for tens of seconds while the cluster was healthy again. Its
//! slot-map refresh holds a lock that every request waits on while it asks the nodes one after
//! another, every `MOVED` reply starts another refresh, and a reconnect queued on that lock can
//! stall the refresh for good (redis-rs issue 2092). Here:
//!
//! - a request never waits for a refresh it did not need: a `MOVED` reply patches its slot in
//!   the map at once, the request follows it, and one full refresh runs in the background;
//! - a refresh asks the known masters all at once (the seeds only when none answers) and takes
//!   the first answer, so a dead or frozen node costs nothing;
//! - at most one refresh runs at a time, and at most one per [`REFRESH_INTERVAL`];
//! - a request that fails to reach its node, or is cancelled by its deadline, schedules a
//!   refresh: that is how a killed or frozen master's replacement is found;
//! - any node can be addressed directly (`SCAN` on each master) and is connected on first use.
//!
//! Each node's connection is the crate's `ConnectionManager`, exactly as for one server: one
//! multiplexed connection, reconnected on the next request after it drops.

mod batch;
mod slot_map;

pub(crate) use batch::SlotGroup;
pub(crate) use slot_map::{Node, SlotMap};

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisResult,
    ServerErrorKind, Value,
};

use super::refresh::{Refresh, Refresher, Watch};

/// The shortest time between two refreshes of the slot map.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How many redirections one request follows before it gives up.
const MAX_REDIRECTS: usize = 5;

/// How long a request waits before it retries after `TRYAGAIN` (a slot in migration).
const TRY_AGAIN_AFTER: Duration = Duration::from_millis(20);

/// Routes commands to a cluster's masters; a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct ClusterRouter {
    shared: Arc<Shared>,
}

struct Shared {
    seeds: Vec<Node>,
    /// Credentials, database and protocol for every node: the first seed's.
    template: ConnectionInfo,
    config: ConnectionManagerConfig,
    /// Bounds each node's answer during a background refresh.
    timeout: Duration,
    connections: RwLock<HashMap<Node, ConnectionManager>>,
    map: RwLock<Arc<SlotMap>>,
    refresher: Refresher,
}

/// One request to a node: a command, or a pipeline of which the caller wants `count` replies
/// from `offset` (as `ConnectionLike::req_packed_commands`).
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Command(&'a Cmd),
    Pipeline {
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    },
}

impl ClusterRouter {
    /// A router for the cluster that the seeds `infos` belong to; no I/O.
    pub(crate) fn new(
        infos: Vec<ConnectionInfo>,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let nodes = infos
            .iter()
            .map(|info| node_of_addr(info.addr()))
            .collect::<RedisResult<Vec<Node>>>()?;
        let template = infos.into_iter().next().ok_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no cluster seed URL"))
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                seeds: nodes,
                template,
                config,
                timeout,
                connections: RwLock::new(HashMap::new()),
                map: RwLock::new(Arc::new(SlotMap::default())),
                refresher: Refresher::new(REFRESH_INTERVAL),
            }),
        })
    }

    /// The slot map as it stands (empty before the first refresh).
    pub(crate) fn map(&self) -> Arc<SlotMap> {
        Arc::clone(
            &self
                .shared
                .map
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The slot map, refreshed first when it serves no slot.
    pub(crate) async fn current_map(&self) -> RedisResult<Arc<SlotMap>> {
        let map = self.map();
        if !map.is_empty() {
            return Ok(map);
        }
        self.refresh_now(false).await?;
        let map = self.map();
        if map.is_empty() {
            return Err(no_master("the cluster has no master online"));
        }
        Ok(map)
    }

    /// Every master, by address.
    pub(crate) async fn masters(&self) -> RedisResult<Vec<Node>> {
        Ok(self.current_map().await?.nodes.clone())
    }

    /// Sends `request` to the master of `slot`, following `MOVED` and `ASK`.
    pub(crate) async fn on_slot(&self, slot: u16, request: Request<'_>) -> RedisResult<Vec<Value>> {
        let mut guard = Watch::new(self);
        let mut node = self.master(slot).await?;
        let mut asking = false;
        let mut retried_readonly = false;
        for _ in 0..MAX_REDIRECTS {
            let replies = self.send(&node, request, asking).await;
            let redirect = match &replies {
                Ok(values) => values.iter().find_map(redirect_of),
                Err(_) => None,
            };
            match redirect {
                Some(Redirect::Moved(moved_slot, to)) => {
                    self.moved(moved_slot, &to);
                    (node, asking) = (to, false);
                }
                Some(Redirect::Ask(to)) => (node, asking) = (to, true),
                Some(Redirect::TryAgain) => tokio::time::sleep(TRY_AGAIN_AFTER).await,
                // A write reached a master demoted to replica since the map was read.
                Some(Redirect::ReadOnly) if !retried_readonly => {
                    retried_readonly = true;
                    self.refresh_now(true).await?;
                    (node, asking) = (self.master(slot).await?, false);
                }
                Some(Redirect::ReadOnly | Redirect::Down) | None => {
                    if redirect == Some(Redirect::Down) {
                        self.refresh_soon();
                    }
                    guard.done(&replies);
                    return replies.map(|values| request.select(values));
                }
            }
        }
        guard.done(&Ok(()));
        Err(RedisError::from((
            ErrorKind::Client,
            "too many cluster redirections",
        )))
    }

    /// Sends `request` to `node` as it is: no redirection is followed (the caller handles
    /// replies such as `MOVED` itself).
    pub(crate) async fn on_node(
        &self,
        node: &Node,
        request: Request<'_>,
    ) -> RedisResult<Vec<Value>> {
        let mut guard = Watch::new(self);
        let replies = self.send(node, request, false).await;
        guard.done(&replies);
        replies.map(|values| request.select(values))
    }

    /// Asks for a refresh of the slot map in the background (at most one at a time, at most
    /// one per [`REFRESH_INTERVAL`]).
    pub(crate) fn refresh_soon(&self) {
        let router = self.clone();
        self.shared.refresher.soon(|| async move {
            // A failed refresh is retried by the next request that fails.
            let _ = router.refresh_now(true).await;
            router.shared.refresher.done();
        });
    }

    /// The master of `slot`; when the map has none (its master failed, or no map yet), after
    /// one refresh if the last was long enough ago.
    async fn master(&self, slot: u16) -> RedisResult<Node> {
        if let Some(node) = self.map().master_of(slot) {
            return Ok(node.clone());
        }
        self.refresh_now(false).await?;
        self.map()
            .master_of(slot)
            .cloned()
            .ok_or_else(|| no_master("no master serves the key's slot"))
    }

    /// Sends `request` to `node` in full (every reply, `offset` ignored), preceded by `ASKING`
    /// when `asking`.
    async fn send(
        &self,
        node: &Node,
        request: Request<'_>,
        asking: bool,
    ) -> RedisResult<Vec<Value>> {
        let mut conn = self.connection(node)?;
        match (request, asking) {
            (Request::Command(cmd), false) => Ok(vec![conn.send_packed_command(cmd).await?]),
            (
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                },
                false,
            ) => conn.send_packed_commands(pipeline, 0, offset + count).await,
            (request, true) => {
                let (asked, replies) = request.asking();
                let values = conn.send_packed_commands(&asked, 0, replies).await?;
                Ok(request.without_asking(values))
            }
        }
    }

    /// The connection settings of `node`: the first seed's credentials, database and
    /// transport, at the node's address.
    pub(crate) fn info_for(&self, node: &Node) -> ConnectionInfo {
        let addr = addr_like(self.shared.template.addr(), node);
        self.shared.template.clone().set_addr(addr)
    }

    /// The connection to `node`, made (lazily: it connects on first use) if there is none.
    fn connection(&self, node: &Node) -> RedisResult<ConnectionManager> {
        let known = self
            .shared
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned();
        if let Some(conn) = known {
            return Ok(conn);
        }
        let client = redis::Client::open(self.info_for(node))?;
        let mut connections = self
            .shared
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = connections.get(node) {
            return Ok(conn.clone());
        }
        let conn = ConnectionManager::new_lazy_with_config(client, self.shared.config.clone())?;
        connections.insert(node.clone(), conn.clone());
        Ok(conn)
    }

    /// Records what a `MOVED` reply said, and asks for a full refresh.
    fn moved(&self, slot: u16, node: &Node) {
        {
            let mut map = self
                .shared
                .map
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if map.master_of(slot) != Some(node) {
                *map = Arc::new(map.with_slot(slot, node));
            }
        }
        self.refresh_soon();
    }

    /// Refreshes the map (see [`Refresher::now`]).
    async fn refresh_now(&self, wait_interval: bool) -> RedisResult<()> {
        self.shared
            .refresher
            .now(wait_interval, self.refresh())
            .await
    }

    /// Asks the masters of the current map for `CLUSTER SHARDS`, all at once, and installs
    /// the first answer that maps a slot; the seeds are asked only when no master answers (a
    /// node restarted with an old view must not win over the masters that replaced it).
    async fn refresh(&self) -> RedisResult<()> {
        let known = self.map().nodes.clone();
        let seeds: Vec<Node> = self
            .shared
            .seeds
            .iter()
            .filter(|seed| !known.contains(seed))
            .cloned()
            .collect();
        let mut last_error = None;
        for round in [known, seeds] {
            match self.first_map(round).await {
                Ok(map) => {
                    self.install(map);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| no_master("no cluster node answered")))
    }

    /// The first map that one of `nodes` answers, asked in parallel, each within the timeout.
    async fn first_map(&self, nodes: Vec<Node>) -> RedisResult<SlotMap> {
        let mut asks: FuturesUnordered<_> = nodes
            .into_iter()
            .map(|node| async move {
                let mut conn = self.connection(&node)?;
                let cmd = redis::cmd("CLUSTER").arg("SHARDS").clone();
                let reply =
                    tokio::time::timeout(self.shared.timeout, conn.send_packed_command(&cmd))
                        .await
                        .map_err(|_| {
                            RedisError::from((ErrorKind::Io, "CLUSTER SHARDS timed out"))
                        })??
                        .extract_error()?;
                let tls = matches!(self.shared.template.addr(), ConnectionAddr::TcpTls { .. });
                let map = SlotMap::from_shards(&reply, tls);
                if map.is_empty() {
                    return Err(no_master("a node knows no master"));
                }
                Ok(map)
            })
            .collect();
        let mut last_error = None;
        while let Some(answer) = asks.next().await {
            match answer {
                Ok(map) => return Ok(map),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| no_master("no cluster node to ask")))
    }

    /// Makes `map` current and drops the connections of nodes that left it.
    fn install(&self, map: SlotMap) {
        let nodes = map.nodes.clone();
        *self
            .shared
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        self.shared
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|node, _| nodes.contains(node));
    }
}

impl Refresh for ClusterRouter {
    fn refresh_soon(&self) {
        ClusterRouter::refresh_soon(self);
    }
}

/// What a reply asks the router to do.
#[derive(Debug, PartialEq)]
enum Redirect {
    Moved(u16, Node),
    Ask(Node),
    TryAgain,
    ReadOnly,
    /// `CLUSTERDOWN`, `MASTERDOWN`: answered as is, and the map refreshed.
    Down,
}

fn redirect_of(value: &Value) -> Option<Redirect> {
    let Value::ServerError(e) = value else {
        return None;
    };
    let target = || -> Option<(u16, Node)> {
        let mut parts = e.details()?.split_ascii_whitespace();
        let slot = parts.next()?.parse().ok()?;
        let (host, port) = parts.next()?.rsplit_once(':')?;
        Some((slot, (host.to_owned(), port.parse().ok()?)))
    };
    match e.kind()? {
        ServerErrorKind::Moved => target().map(|(slot, node)| Redirect::Moved(slot, node)),
        ServerErrorKind::Ask => target().map(|(_, node)| Redirect::Ask(node)),
        ServerErrorKind::TryAgain => Some(Redirect::TryAgain),
        ServerErrorKind::ReadOnly => Some(Redirect::ReadOnly),
        ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown => Some(Redirect::Down),
        _ => None,
    }
}

impl Request<'_> {
    /// The replies the caller asked for, out of every reply.
    fn select(self, values: Vec<Value>) -> Vec<Value> {
        match self {
            Request::Command(_) => values,
            Request::Pipeline { offset, count, .. } => {
                values.into_iter().skip(offset).take(count).collect()
            }
        }
    }

    /// The request as a plain pipeline with `ASKING` where the target needs it, and how many
    /// replies that pipeline gets. `ASKING` holds for the next command only, except inside a
    /// transaction, where it holds until `EXEC`.
    fn asking(self) -> (Pipeline, usize) {
        let mut asked = redis::pipe();
        match self {
            Request::Command(cmd) => {
                asked.cmd("ASKING").add_command(cmd.clone());
            }
            Request::Pipeline { pipeline, .. } if pipeline.is_transaction() => {
                asked.cmd("ASKING").cmd("MULTI");
                for cmd in pipeline.cmd_iter() {
                    asked.add_command(cmd.clone());
                }
                asked.cmd("EXEC");
            }
            Request::Pipeline { pipeline, .. } => {
                for cmd in pipeline.cmd_iter() {
                    asked.cmd("ASKING").add_command(cmd.clone());
                }
            }
        }
        let replies = asked.len();
        (asked, replies)
    }

    /// The replies of [`asking`](Self::asking)'s pipeline without those of `ASKING`.
    fn without_asking(self, values: Vec<Value>) -> Vec<Value> {
        match self {
            Request::Pipeline { pipeline, .. } if !pipeline.is_transaction() => {
                values.into_iter().skip(1).step_by(2).collect()
            }
            _ => values.into_iter().skip(1).collect(),
        }
    }
}

/// The `host:port` of a seed's address.
fn node_of_addr(addr: &ConnectionAddr) -> RedisResult<Node> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Ok((host.clone(), *port))
        }
        _ => Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "a cluster node must be a TCP address",
        ))),
    }
}

/// `node`'s address with the seed's transport (TLS and its settings included).
pub(crate) fn addr_like(template: &ConnectionAddr, node: &Node) -> ConnectionAddr {
    match template {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: node.0.clone(),
            port: node.1,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(node.0.clone(), node.1),
    }
}

/// No master serves a slot right now (it failed, and no replica has taken over yet).
fn no_master(message: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(text: &str) -> Value {
        match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
            Ok(value) => value,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn redirections_are_read_from_error_replies() {
        assert_eq!(
            redirect_of(&server_error("MOVED 3999 127.0.0.1:6381")),
            Some(Redirect::Moved(3999, ("127.0.0.1".to_owned(), 6381)))
        );
        assert_eq!(
            redirect_of(&server_error("ASK 3999 ::1:6381")),
            Some(Redirect::Ask(("::1".to_owned(), 6381)))
        );
        assert_eq!(
            redirect_of(&server_error(
                "TRYAGAIN Multiple keys request during rehashing"
            )),
            Some(Redirect::TryAgain)
        );
        assert_eq!(
            redirect_of(&server_error("CLUSTERDOWN The cluster is down")),
            Some(Redirect::Down)
        );
        assert_eq!(redirect_of(&server_error("MOVED garbage")), None);
        assert_eq!(redirect_of(&server_error("WRONGTYPE no")), None);
        assert_eq!(redirect_of(&Value::Okay), None);
    }

    #[test]
    fn asking_precedes_each_command_or_the_transaction() {
        let get = redis::cmd("GET").arg("k").clone();
        let (asked, replies) = Request::Command(&get).asking();
        assert_eq!(replies, 2);
        assert_eq!(asked.cmd_iter().count(), 2);

        let mut plain = redis::pipe();
        plain.cmd("GET").arg("a").cmd("GET").arg("b");
        let request = Request::Pipeline {
            pipeline: &plain,
            offset: 0,
            count: 2,
        };
        let (_, replies) = request.asking();
        assert_eq!(replies, 4);
        let values = vec![Value::Okay, Value::Int(1), Value::Okay, Value::Int(2)];
        assert_eq!(
            request.without_asking(values),
            vec![Value::Int(1), Value::Int(2)]
        );

        let mut transaction = redis::pipe();
        transaction.atomic().cmd("GET").arg("a").cmd("GET").arg("b");
        let request = Request::Pipeline {
            pipeline: &transaction,
            offset: 3,
            count: 1,
        };
        // ASKING, MULTI, the two commands, EXEC.
        assert_eq!(request.asking().1, 5);
        let values = vec![
            Value::Okay,
            Value::Okay,
            Value::SimpleString("QUEUED".into()),
            Value::SimpleString("QUEUED".into()),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
        ];
        let all = request.without_asking(values);
        assert_eq!(
            request.select(all),
            vec![Value::Array(vec![Value::Int(1), Value::Int(2)])]
        );
    }
}
