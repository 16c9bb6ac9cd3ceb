//! The connection under a `RedisCache`: one server, or a cluster.
//!
//! Both are `redis::aio::ConnectionLike`, so every command is written once. On a cluster the
//! `redis` crate routes single-key commands (and scripts, by their first key) to the slot's
//! master and follows `MOVED` / `ASK`. Batches are split by slot in `RedisCache` itself, with
//! the [`SlotMap`] read here: the crate's own split sends one request per slot and drops the
//! parts whose node it has no connection to (after a failover), which fails the whole batch.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A standalone or cluster connection; cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, auto-reconnecting.
    Single(ConnectionManager),
    /// A cluster: a connection per node, slot map refreshed on `MOVED`.
    Cluster(ClusterConnection),
}

impl Conn {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// The `host:port` of every master, from `CLUSTER SHARDS` (Redis 7); for one server, none
    /// (it is its own master: callers then use the connection itself).
    pub(crate) async fn masters(&mut self) -> RedisResult<Vec<(String, u16)>> {
        Ok(self.slot_map().await?.nodes)
    }

    /// Which master serves each slot now, from `CLUSTER SHARDS` (empty for one server).
    pub(crate) async fn slot_map(&mut self) -> RedisResult<SlotMap> {
        let Conn::Cluster(cluster) = self else {
            return Ok(SlotMap::default());
        };
        let shards: Value = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("SHARDS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Ok(SlotMap::from_shards(&shards))
    }

    /// Runs `cmd` on the node at `host:port` (cluster only; on one server, on it).
    pub(crate) async fn on_node(&mut self, node: &(String, u16), cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(single) => single.send_packed_command(cmd).await,
            Conn::Cluster(cluster) => cluster.route_command(cmd.clone(), by_address(node)).await,
        }
    }

    /// Sends `pipeline` (of `count` commands) as one write to the master of `slot` — by the
    /// crate's routing, which connects to a node it has not met yet (a promoted replica) by
    /// following `MOVED` — and returns one value per command, a command's error as a
    /// `Value::ServerError`.
    pub(crate) async fn pipeline_on_slot(
        &mut self,
        slot: u16,
        pipeline: Pipeline,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Single(single) => single.req_packed_commands(&pipeline, 0, count).await,
            Conn::Cluster(cluster) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                cluster.route_pipeline(pipeline, 0, count, route).await
            }
        }
    }
}

fn by_address(node: &(String, u16)) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: node.0.clone(),
        port: node.1,
    })
}

/// The masters of a cluster and the slot ranges each serves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// `host:port` of each master online.
    pub(crate) nodes: Vec<(String, u16)>,
    /// `(first, last, index in nodes)`, sorted.
    ranges: Vec<(u16, u16, usize)>,
}

impl SlotMap {
    /// The index in `nodes` of the master serving `slot`, if one is known.
    pub(crate) fn node_of(&self, slot: u16) -> Option<usize> {
        let at = self.ranges.partition_point(|&(_, last, _)| last < slot);
        match self.ranges.get(at) {
            Some(&(first, _, node)) if first <= slot => Some(node),
            _ => None,
        }
    }

    /// The map in a `CLUSTER SHARDS` reply: each shard's master that is `online`, with the
    /// shard's slot ranges.
    fn from_shards(shards: &Value) -> Self {
        let mut map = SlotMap::default();
        let Value::Array(shards) = shards else {
            return map;
        };
        for shard in shards {
            let Some(master) = master_of(shard) else {
                continue;
            };
            let index = map.nodes.len();
            map.nodes.push(master);
            if let Some(Value::Array(bounds)) = field(shard, "slots") {
                for pair in bounds.chunks(2) {
                    let bound = |i: usize| {
                        pair.get(i)
                            .and_then(as_int)
                            .and_then(|n| u16::try_from(n).ok())
                    };
                    if let (Some(first), Some(last)) = (bound(0), bound(1)) {
                        map.ranges.push((first, last, index));
                    }
                }
            }
        }
        map.ranges.sort_unstable();
        map
    }
}

/// The `host:port` of a shard's master, when it is online.
fn master_of(shard: &Value) -> Option<(String, u16)> {
    let Some(Value::Array(nodes)) = field(shard, "nodes") else {
        return None;
    };
    nodes.iter().find_map(|node| {
        let text = |name: &str| field(node, name).and_then(as_text);
        if text("role").as_deref() != Some("master") || text("health").as_deref() != Some("online")
        {
            return None;
        }
        let host = text("ip").or_else(|| text("endpoint"))?;
        let port = field(node, "port")
            .and_then(as_int)
            .and_then(|p| u16::try_from(p).ok())?;
        Some((host, port))
    })
}

/// A field of a RESP2 flat map (`[name, value, name, value…]`) or a RESP3 map.
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.first().and_then(as_text).as_deref() == Some(name))
            .and_then(|pair| pair.get(1)),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| as_text(k).as_deref() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => as_text(other)?.parse().ok(),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            text("id"),
            text("abc"),
            text("port"),
            Value::Int(port),
            text("ip"),
            text("127.0.0.1"),
            text("role"),
            text(role),
            text("health"),
            text(health),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            text("slots"),
            Value::Array(slots.iter().map(|&s| Value::Int(s)).collect()),
            text("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn the_map_follows_cluster_shards() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460, 10923, 11000],
                vec![
                    node(7001, "replica", "online"),
                    node(7000, "master", "online"),
                ],
            ),
            shard(&[5461, 10922], vec![node(7002, "master", "online")]),
            // A failed master is no one's target: its slots are unmapped until a replica
            // takes over.
            shard(&[11001, 16383], vec![node(7003, "master", "fail")]),
        ]);
        let map = SlotMap::from_shards(&reply);
        assert_eq!(
            map.nodes,
            vec![
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7002)
            ]
        );
        assert_eq!(map.node_of(0), Some(0));
        assert_eq!(map.node_of(5460), Some(0));
        assert_eq!(map.node_of(5461), Some(1));
        assert_eq!(map.node_of(10922), Some(1));
        assert_eq!(map.node_of(10950), Some(0));
        assert_eq!(map.node_of(11001), None);
        assert_eq!(map.node_of(16383), None);
        assert_eq!(SlotMap::from_shards(&Value::Nil), SlotMap::default());
    }
}
