//! [`RedisCluster`]: a private Redis Cluster of three masters and three replicas.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{free_port, reserve};
use crate::server::RedisServer;

/// Six `redis-server` processes on free loopback ports (each with its cluster bus port, +10000,
/// free too), formed into a cluster of three masters with a replica each, waited on until
/// `cluster_state:ok` everywhere. Killed on drop.
///
/// Node timeouts are short (1 s), so a killed master is replaced by its replica within a few
/// seconds.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Each node's TLS port, for a cluster started by [`start_tls`](Self::start_tls).
    tls_ports: Vec<u16>,
}

impl RedisCluster {
    /// Starts and forms the cluster.
    ///
    /// # Panics
    /// When a node does not start, `redis-cli` is missing, or the cluster does not settle
    /// within 30 s; the message carries what the tools said.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a cluster whose nodes serve clients over TLS too (and talk TLS on the cluster
    /// bus and for replication), with `certs`; reach it with [`tls_url`](Self::tls_url).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_tls(certs: &crate::TestCerts) -> Self {
        Self::start_with(Some(certs))
    }

    fn start_with(certs: Option<&crate::TestCerts>) -> Self {
        let mut tls_ports = Vec::new();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let Some(certs) = certs else {
                    return start_node(&[]);
                };
                let tls_port = free_port().unwrap_or_else(|e| panic!("{e}"));
                tls_ports.push(tls_port);
                let mut args = certs.server_args(tls_port, false);
                args.extend(
                    ["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned),
                );
                start_node(&args)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new(redis_cli())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (installed with redis-server): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, tls_ports };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster.wait_for_replicas(Duration::from_secs(30));
        cluster
    }

    /// The seed URLs of every node, comma-separated: what `RedisCache::builder` takes.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The TLS seed URLs (`rediss://localhost:<tls port>`, comma-separated) of a cluster
    /// started by [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        self.tls_ports
            .iter()
            .map(|port| format!("rediss://localhost:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The indices of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.pid().is_some() && info(n.port(), "replication").contains("role:master")
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Kills master `index` of [`masters`](Self::masters) with `SIGKILL`; its replica takes
    /// over after the node timeout. Returns the killed node's index.
    ///
    /// Replication is asynchronous: first it waits until the replica has every write the
    /// master had taken (its replication offset), so a test that wrote and then kills loses
    /// nothing it could not lose in production only by bad luck.
    ///
    /// # Panics
    /// When there is no such master, or its replica does not catch up within 30 s.
    pub fn kill_master(&mut self, index: usize) -> usize {
        let node = self.masters()[index];
        self.wait_replicated(node, Duration::from_secs(30));
        self.nodes[node].kill();
        node
    }

    /// Waits until every replica of node `master` has acknowledged the master's replication
    /// offset as of the call.
    fn wait_replicated(&self, master: usize, limit: Duration) {
        let port = self.nodes[master].port();
        let field = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let replication = info(port, "replication");
        let Some(target) = field(&replication, "master_repl_offset:") else {
            panic!("no replication offset on {port}: {replication}");
        };
        let start = Instant::now();
        loop {
            let replication = info(port, "replication");
            // `slave0:ip=…,port=…,state=online,offset=N,lag=0`
            let offsets: Vec<u64> = replication
                .lines()
                .filter(|l| l.starts_with("slave"))
                .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")))
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            if !offsets.is_empty() && offsets.iter().all(|o| *o >= target) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the replicas of {port} did not reach offset {target} within {limit:?}: {replication}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Restarts node `index` (killed by [`kill_master`](Self::kill_master)) on its port with
    /// its cluster configuration: it rejoins as a replica of the master that took its slots.
    /// Returns once every shard has a synced replica again.
    ///
    /// # Panics
    /// When the node does not start, or the replicas do not sync within 30 s.
    pub fn restart_node(&mut self, index: usize) {
        self.nodes[index].restart();
        self.wait_until_ok(Duration::from_secs(30));
        self.wait_for_replicas(Duration::from_secs(30));
    }

    /// A manual failover (`CLUSTER FAILOVER` on its replica): master `index` of
    /// [`masters`](Self::masters) and its replica swap roles with no data lost, and clients'
    /// slot maps go stale. Returns the promoted node's index once it serves as master.
    ///
    /// # Panics
    /// When there is no such master, it has no replica, or the swap does not happen in 30 s.
    pub fn promote_replica_of(&self, index: usize) -> usize {
        let master = self.masters()[index];
        let master_port = self.nodes[master].port();
        let replica = self
            .nodes
            .iter()
            .position(|n| {
                n.pid().is_some()
                    && info(n.port(), "replication").contains(&format!("master_port:{master_port}"))
            })
            .unwrap_or_else(|| panic!("the master on {master_port} has no replica"));
        let replica_port = self.nodes[replica].port();
        let promoted = |port: u16| info(port, "replication").contains("role:master");
        let synced = |port: u16| info(port, "replication").contains("master_link_status:up");
        let master_id = cli(master_port, &["CLUSTER", "MYID"]).trim().to_owned();
        // A master ignores a manual failover request from a node it does not count among its
        // replicas yet — a node that was itself a master a moment ago, say.
        let listed = || {
            cli(master_port, &["CLUSTER", "REPLICAS", &master_id])
                .contains(&format!(":{replica_port}@"))
        };
        let start = Instant::now();
        // A manual failover also needs the masters' votes, and a master votes for one shard's
        // replicas at most once per two node timeouts: retry until it takes.
        while !promoted(replica_port) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the replica on {replica_port} was not promoted: {}",
                info(replica_port, "replication")
            );
            if !synced(replica_port) || !listed() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let reply = cli(replica_port, &["CLUSTER", "FAILOVER"]);
            assert!(reply.contains("OK"), "CLUSTER FAILOVER: {reply}");
            let asked = Instant::now();
            while !promoted(replica_port) && asked.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The old master follows the new one before anything else changes.
        while !synced(master_port) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the old master did not resync"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_ok(Duration::from_secs(10));
        replica
    }

    /// Waits until every live node reports `cluster_state:ok` and a master for each slot
    /// range; how long it took.
    ///
    /// # Panics
    /// When it does not happen within `limit`.
    pub fn wait_until_ok(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            let ok = live
                .iter()
                .all(|n| cluster_info(n.port()).contains("cluster_state:ok"));
            if ok && self.masters().len() >= 3 {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "the cluster did not settle within {limit:?}: {}",
                live.iter()
                    .map(|n| cluster_info(n.port()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl RedisCluster {
    /// Waits until every replica has finished its first sync with its master.
    fn wait_for_replicas(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let replication: Vec<String> = self
                .nodes
                .iter()
                .map(|n| info(n.port(), "replication"))
                .collect();
            let synced = replication
                .iter()
                .filter(|r| r.contains("role:slave"))
                .filter(|r| r.contains("master_link_status:up"))
                .count();
            if synced >= 3 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the replicas did not sync within {limit:?}: {}",
                replication.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every node's configuration.
const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    // A replica that never finished its first sync will not stand for election; the default
    // 5 s delay would leave a window where killing a master loses its slots for good.
    "--repl-diskless-sync-delay",
    "0",
    // What a cache cluster should run with: while one shard fails over, the others keep
    // serving their keys (the default stops the whole cluster).
    "--cluster-require-full-coverage",
    "no",
];

/// One cluster node on a free port; another process may take the port between the probe and
/// the server's bind, so a failed start is retried on a fresh port.
fn start_node(extra: &[String]) -> RedisServer {
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = cluster_port();
        // The bus port named outright: with TLS on the bus, Redis would derive it from the TLS
        // port instead.
        let bus = (port + 10_000).to_string();
        let args: Vec<&str> = NODE_ARGS
            .iter()
            .copied()
            .chain(["--cluster-port", bus.as_str()])
            .chain(extra.iter().map(String::as_str))
            .collect();
        match RedisServer::try_start_on(port, &args) {
            Ok(node) => return node,
            Err(e) => last_error = e,
        }
    }
    panic!("a cluster node did not start: {last_error}")
}

/// A port whose cluster bus port (+10000) is free too; both reserved for good.
fn cluster_port() -> u16 {
    loop {
        let port = free_port().unwrap_or_else(|e| panic!("{e}"));
        if port < 55_000
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
            && reserve(port + 10_000)
        {
            return port;
        }
    }
}

pub(crate) fn redis_cli() -> std::path::PathBuf {
    let server = crate::redis_server_binary();
    match server.parent() {
        Some(dir) if dir.join("redis-cli").exists() => dir.join("redis-cli"),
        _ => "redis-cli".into(),
    }
}

pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    cli_as(port, None, args)
}

/// As [`cli`], logged in with `password` (passed in the environment, never in the
/// arguments).
pub(crate) fn cli_as(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(redis_cli());
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    command
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn cluster_info(port: u16) -> String {
    cli(port, &["CLUSTER", "INFO"])
}

pub(crate) fn info(port: u16, section: &str) -> String {
    cli(port, &["INFO", section])
}
