//! What the hybrid cache needs of its L2 besides the `Cache` protocol: the servers (with their
//! connection settings) whose writes it must hear about, and which of them holds a key.

use redis::ConnectionInfo;

use super::RedisCache;
use super::cluster::Node;
use super::conn::Backend;
use crate::error::{Error, ErrorKind, Result};

/// A server whose writes a tracking connection must hear: a label (`host:port`, for logs and
/// for telling nodes apart) and how to connect to it.
#[derive(Clone)]
pub(crate) struct TrackedNode {
    pub(crate) label: String,
    pub(crate) info: ConnectionInfo,
}

fn label_of(node: &Node) -> String {
    format!("{}:{}", node.0, node.1)
}

impl RedisCache {
    /// The servers a tracking connection must cover: the one server, or every master of the
    /// cluster as the slot map has them now.
    pub(crate) async fn tracked_nodes(&self) -> Result<Vec<TrackedNode>> {
        match (&self.inner.backend, &self.inner.single) {
            (Backend::Single(_), Some(info)) => Ok(vec![TrackedNode {
                label: self.single_label(),
                info: info.clone(),
            }]),
            (Backend::Cluster(router), _) => {
                let masters: Vec<Node> = self.run(None, router.masters()).await?;
                Ok(masters
                    .iter()
                    .map(|node| TrackedNode {
                        label: label_of(node),
                        info: router.info_for(node),
                    })
                    .collect())
            }
            (Backend::Sentinel(router), _) => {
                let master = self.run(None, router.master()).await?;
                Ok(vec![TrackedNode {
                    label: label_of(&master),
                    info: router.info_for(&master),
                }])
            }
            (Backend::Single(_), None) => Err(Error::new(
                ErrorKind::Backend,
                "a single-server cache without its connection settings",
            )),
        }
    }

    /// The label of the server that holds `key` as far as this cache knows (no I/O): the one
    /// server, or its slot's master in the current slot map.
    pub(crate) fn node_label_of(&self, key: &[u8]) -> Option<String> {
        match &self.inner.backend {
            Backend::Single(_) => Some(self.single_label()),
            Backend::Sentinel(router) => router.current().as_ref().map(label_of),
            Backend::Cluster(router) => router
                .map()
                .master_of(super::breaker::slot(key))
                .map(label_of),
        }
    }

    fn single_label(&self) -> String {
        self.inner
            .single
            .as_ref()
            .map(|info| info.addr().to_string())
            .unwrap_or_default()
    }

    /// Asks the cluster router to read the slot map again soon, or the sentinels for the
    /// master (nothing on one server): a tracked node stopped being a master, or stopped
    /// answering.
    pub(crate) fn refresh_topology(&self) {
        match &self.inner.backend {
            Backend::Cluster(router) => router.refresh_soon(),
            Backend::Sentinel(router) => router.lookup_soon(),
            Backend::Single(_) => {}
        }
    }

    /// The deadline of one operation.
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.inner.timeout
    }

    /// The deadline of one connection attempt.
    pub(crate) fn connect_timeout(&self) -> std::time::Duration {
        self.inner.connect_timeout
    }

    /// The key and value limits.
    pub(crate) fn limits(&self) -> &crate::cache::Limits {
        &self.inner.limits
    }
}
