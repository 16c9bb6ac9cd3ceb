//! The connection under a `RedisCache`: one server, or a cluster.
//!
//! Both are `redis::aio::ConnectionLike`, so every command is written once. On a cluster the
//! `redis` crate routes single-key commands (and scripts, by their first key) to the slot's
//! master, follows `MOVED` / `ASK`, and splits the multi-key commands we use (`MGET`, `UNLINK`)
//! by slot, sending the parts in parallel and reassembling them in order. What it cannot do —
//! an atomic `MULTI` across slots, a `SCAN` of every master — is done here.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
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
        let Conn::Cluster(cluster) = self else {
            return Ok(Vec::new());
        };
        let shards: Value = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("SHARDS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Ok(masters_of(&shards))
    }

    /// Runs `cmd` on the node at `host:port` (cluster only; on one server, on it).
    pub(crate) async fn on_node(&mut self, node: &(String, u16), cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(single) => single.send_packed_command(cmd).await,
            Conn::Cluster(cluster) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.0.clone(),
                    port: node.1,
                });
                cluster.route_command(cmd.clone(), routing).await
            }
        }
    }
}

/// The masters in a `CLUSTER SHARDS` reply: each shard's node whose `role` is `master` and
/// whose `health` is `online`.
fn masters_of(shards: &Value) -> Vec<(String, u16)> {
    let mut masters = Vec::new();
    let Value::Array(shards) = shards else {
        return masters;
    };
    for shard in shards {
        let Some(nodes) = field(shard, "nodes") else {
            continue;
        };
        let Value::Array(nodes) = nodes else { continue };
        for node in nodes {
            let text = |name: &str| field(node, name).and_then(as_text);
            if text("role").as_deref() != Some("master")
                || text("health").as_deref() != Some("online")
            {
                continue;
            }
            let host = text("ip").or_else(|| text("endpoint"));
            let port = field(node, "port")
                .and_then(as_int)
                .and_then(|p| u16::try_from(p).ok());
            if let (Some(host), Some(port)) = (host, port) {
                masters.push((host, port));
            }
        }
    }
    masters
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
