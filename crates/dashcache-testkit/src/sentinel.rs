//! [`RedisSentinels`]: a private master, its replica and three sentinels watching them.

use std::time::{Duration, Instant};

use crate::cluster::{cli_as, info};
use crate::process::free_port;
use crate::server::RedisServer;

/// The master set's name the sentinels monitor.
pub const MASTER_NAME: &str = "dashcache";

/// A master and a replica (`nodes()[0]` and `[1]` at start) and three sentinels with a quorum
/// of two, on free loopback ports; killed on drop.
///
/// A master is judged down after 1 s without an answer, so a killed master is replaced within
/// a few seconds.
#[derive(Debug)]
pub struct RedisSentinels {
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// The sentinels' own `requirepass`, if any.
    password: Option<String>,
}

impl RedisSentinels {
    /// Starts the servers and waits until every sentinel knows the replica and the other
    /// sentinels (what a failover needs).
    ///
    /// # Panics
    /// When a server does not start, or the set does not settle within 30 s.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// As [`start`](Self::start), with sentinels that require `password` (their
    /// `requirepass`; they log in to each other with it too). The data nodes need none.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with_sentinel_password(password: &str) -> Self {
        Self::start_inner(Some(password))
    }

    fn start_inner(password: Option<&str>) -> Self {
        let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &master_port,
            "--repl-diskless-sync-delay",
            "0",
        ]);
        wait(Duration::from_secs(30), "the replica to sync", || {
            info(replica.port(), "replication").contains("master_link_status:up")
        });
        let config = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n{}",
            password.map_or_else(String::new, |p| format!("requirepass \"{p}\"\n"))
        );
        let sentinels: Vec<RedisServer> = (0..3).map(|_| start_sentinel(&config)).collect();
        let set = Self {
            nodes: vec![master, replica],
            sentinels,
            password: password.map(str::to_owned),
        };
        wait(Duration::from_secs(30), "the sentinels to meet", || {
            set.sentinels.iter().all(|s| {
                let master = set.sentinel_cli(s, &["SENTINEL", "MASTER", MASTER_NAME]);
                field(&master, "num-slaves") == Some(1)
                    && field(&master, "num-other-sentinels") == Some(2)
            })
        });
        set
    }

    /// `redis+sentinel://127.0.0.1:<port>,…/dashcache`: what `RedisCache::builder` takes.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The data nodes (master and replica), by index.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The index of the node that is master now, if one runs.
    pub fn master(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.pid().is_some() && info(n.port(), "replication").contains("role:master")
        })
    }

    /// Kills the master with `SIGKILL`; the sentinels promote the replica. Returns its index.
    ///
    /// # Panics
    /// When no master runs.
    pub fn kill_master(&mut self) -> usize {
        let master = self.master().expect("a running master");
        self.nodes[master].kill();
        master
    }

    /// Waits until the sentinels name a master other than node `old`, and it says it is one;
    /// returns its index.
    ///
    /// # Panics
    /// When that does not happen within `limit`.
    pub fn wait_for_new_master(&self, old: usize, limit: Duration) -> usize {
        let mut found = None;
        wait(limit, "the sentinels to promote the replica", || {
            found = self.master().filter(|&m| m != old).filter(|&m| {
                let named = self.sentinel_cli(
                    &self.sentinels[0],
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
                );
                named.lines().nth(1).map(str::trim) == Some(&self.nodes[m].port().to_string())
            });
            found.is_some()
        });
        found.expect("a new master")
    }

    fn sentinel_cli(&self, sentinel: &RedisServer, args: &[&str]) -> String {
        cli_as(sentinel.port(), self.password.as_deref(), args)
    }

    /// Restarts node `index` on its port; the sentinels make it a replica of the current
    /// master.
    pub fn restart_node(&mut self, index: usize) {
        self.nodes[index].restart();
    }
}

fn start_sentinel(config: &str) -> RedisServer {
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port().unwrap_or_else(|e| panic!("{e}"));
        match RedisServer::try_start_with_config(port, config, &["--sentinel"]) {
            Ok(sentinel) => return sentinel,
            Err(e) => last_error = e,
        }
    }
    panic!("a sentinel did not start: {last_error}")
}

/// A number in `SENTINEL MASTER`'s reply as redis-cli prints it (name and value on lines of
/// their own).
fn field(reply: &str, name: &str) -> Option<u64> {
    let mut lines = reply.lines().map(str::trim);
    lines.find(|l| *l == name)?;
    lines.next()?.parse().ok()
}

fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
