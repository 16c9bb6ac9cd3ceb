//! [`SlotMap`]: which master serves each hash slot, read from `CLUSTER SHARDS`.

use redis::Value;

/// A node's `host:port`.
pub(crate) type Node = (String, u16);

/// The masters of a cluster and the slot ranges each serves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// `host:port` of each master online.
    pub(crate) nodes: Vec<Node>,
    /// `(first, last, index in nodes)`, sorted, disjoint.
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

    /// The master serving `slot`, if one is known.
    pub(crate) fn master_of(&self, slot: u16) -> Option<&Node> {
        self.node_of(slot).and_then(|i| self.nodes.get(i))
    }

    /// Whether no slot is served at all (no answer yet, or a cluster with no master online).
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// This map with `slot` served by `node`: what a `MOVED` reply says, before the next full
    /// refresh confirms it.
    pub(crate) fn with_slot(&self, slot: u16, node: &Node) -> SlotMap {
        let mut map = self.clone();
        let index = match map.nodes.iter().position(|n| n == node) {
            Some(index) => index,
            None => {
                map.nodes.push(node.clone());
                map.nodes.len() - 1
            }
        };
        let mut ranges = Vec::with_capacity(map.ranges.len() + 2);
        for &(first, last, owner) in &map.ranges {
            if slot < first || slot > last {
                ranges.push((first, last, owner));
                continue;
            }
            if first < slot {
                ranges.push((first, slot - 1, owner));
            }
            if slot < last {
                ranges.push((slot + 1, last, owner));
            }
        }
        ranges.push((slot, slot, index));
        ranges.sort_unstable();
        map.ranges = ranges;
        map
    }

    /// The map in a `CLUSTER SHARDS` reply: each shard's master that is `online`, with the
    /// shard's slot ranges. `tls`: the client speaks TLS, so a node's `tls-port` is the one to
    /// reach it on (a node may listen on both).
    pub(crate) fn from_shards(shards: &Value, tls: bool) -> Self {
        let mut map = SlotMap::default();
        let Value::Array(shards) = shards else {
            return map;
        };
        for shard in shards {
            let Some(master) = master_of(shard, tls) else {
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
                    if let (Some(first), Some(last)) = (bound(0), bound(1))
                        && first <= last
                    {
                        map.ranges.push((first, last, index));
                    }
                }
            }
        }
        map.ranges.sort_unstable();
        map
    }
}

/// The `host:port` of a shard's master, when it is online: its `tls-port` for a TLS client,
/// its `port` otherwise (each falling back on the other, which is all a node may list).
fn master_of(shard: &Value, tls: bool) -> Option<Node> {
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
        let port_of = |name: &str| {
            field(node, name)
                .and_then(as_int)
                .and_then(|p| u16::try_from(p).ok())
        };
        let (first, second) = if tls {
            ("tls-port", "port")
        } else {
            ("port", "tls-port")
        };
        let port = port_of(first).or_else(|| port_of(second))?;
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

    fn local(port: u16) -> Node {
        ("127.0.0.1".to_owned(), port)
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
        let map = SlotMap::from_shards(&reply, false);
        assert_eq!(map.nodes, vec![local(7000), local(7002)]);
        assert_eq!(map.node_of(0), Some(0));
        assert_eq!(map.node_of(5460), Some(0));
        assert_eq!(map.node_of(5461), Some(1));
        assert_eq!(map.node_of(10922), Some(1));
        assert_eq!(map.node_of(10950), Some(0));
        assert_eq!(map.node_of(11001), None);
        assert_eq!(map.master_of(16383), None);
        assert!(!map.is_empty());
        assert!(SlotMap::from_shards(&Value::Nil, false).is_empty());
    }

    #[test]
    fn a_tls_client_reaches_masters_on_their_tls_port() {
        let mut master = node(7000, "master", "online");
        if let Value::Array(fields) = &mut master {
            fields.extend([text("tls-port"), Value::Int(8000)]);
        }
        let reply = Value::Array(vec![shard(&[0, 16383], vec![master])]);
        assert_eq!(SlotMap::from_shards(&reply, true).nodes, vec![local(8000)]);
        assert_eq!(SlotMap::from_shards(&reply, false).nodes, vec![local(7000)]);
        // A node that lists one port only is reached on it either way.
        let plain = Value::Array(vec![shard(
            &[0, 16383],
            vec![node(7000, "master", "online")],
        )]);
        assert_eq!(SlotMap::from_shards(&plain, true).nodes, vec![local(7000)]);
    }

    #[test]
    fn a_moved_slot_is_patched_alone() {
        let reply = Value::Array(vec![
            shard(&[0, 8191], vec![node(7000, "master", "online")]),
            shard(&[8192, 16383], vec![node(7001, "master", "online")]),
        ]);
        let map = SlotMap::from_shards(&reply, false);
        let moved = map.with_slot(100, &local(7005));
        assert_eq!(moved.master_of(100), Some(&local(7005)));
        assert_eq!(moved.master_of(99), Some(&local(7000)));
        assert_eq!(moved.master_of(101), Some(&local(7000)));
        assert_eq!(moved.master_of(8192), Some(&local(7001)));
        // Range edges, and a slot moved to a node the map already has.
        let edges = moved
            .with_slot(0, &local(7001))
            .with_slot(16383, &local(7000));
        assert_eq!(edges.master_of(0), Some(&local(7001)));
        assert_eq!(edges.master_of(1), Some(&local(7000)));
        assert_eq!(edges.master_of(16383), Some(&local(7000)));
        assert_eq!(edges.master_of(16382), Some(&local(7001)));
        assert_eq!(edges.nodes.len(), 3);
        // An unmapped slot gets its master too.
        assert_eq!(
            SlotMap::default().with_slot(5, &local(7000)).master_of(5),
            Some(&local(7000))
        );
    }
}
