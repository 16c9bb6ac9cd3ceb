//! The connection under a `RedisCache`: one server, or a cluster through [`ClusterRouter`].
//!
//! [`Conn`] is a `redis::aio::ConnectionLike`, so every command and script is written once: on
//! a cluster, a `Conn` is bound to the hash slot of the key it serves, and everything sent
//! through it (a script's `EVALSHA`, and its `SCRIPT LOAD` after `NOSCRIPT`, included) goes to
//! that slot's master.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::cluster::{ClusterRouter, Request};
use super::sentinel::SentinelRouter;

/// What a `RedisCache` talks to.
#[derive(Clone)]
pub(crate) enum Backend {
    /// One server, auto-reconnecting.
    Single(ConnectionManager),
    /// A cluster: a connection per master, the slot map, redirections.
    Cluster(ClusterRouter),
    /// The master of a Sentinel set, followed across failovers.
    Sentinel(SentinelRouter),
}

/// A handle for one key's commands; cheap to make.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    /// Every command to the master of this slot.
    Cluster(ClusterRouter, u16),
    /// Every command to the Sentinel set's master of the moment.
    Sentinel(SentinelRouter),
}

impl Backend {
    /// A handle for the commands on `key`.
    pub(crate) fn for_key(&self, key: &[u8]) -> Conn {
        match self {
            Backend::Single(conn) => Conn::Single(conn.clone()),
            Backend::Cluster(router) => Conn::Cluster(router.clone(), super::breaker::slot(key)),
            Backend::Sentinel(router) => Conn::Sentinel(router.clone()),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(router, slot) => Box::pin(async move {
                let values = router.on_slot(*slot, Request::Command(cmd)).await?;
                Ok(values.into_iter().next().unwrap_or(Value::Nil))
            }),
            Conn::Sentinel(router) => Box::pin(router.command(cmd)),
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
            Conn::Cluster(router, slot) => Box::pin(async move {
                let request = Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                };
                router.on_slot(*slot, request).await
            }),
            Conn::Sentinel(router) => Box::pin(router.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            // A cluster has database 0 only.
            Conn::Cluster(..) => 0,
            Conn::Sentinel(router) => router.db(),
        }
    }
}
