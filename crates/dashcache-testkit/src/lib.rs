//! Test support for dashcache: real servers, never mocks.
//!
//! - [`RedisServer`] spawns a private `redis-server` on a free loopback port in a temporary
//!   directory, waits until it answers, and kills it on drop. Fault tests freeze it
//!   (`SIGSTOP`), kill it and restart it on the same port.
//! - [`RedisCluster`] (three masters, three replicas), [`RedisSentinels`] (a master, a
//!   replica, three sentinels) and [`TlsRedis`] (with certificates made by [`TestCerts`]).
//! - [`conformance`] is the one suite every [`Cache`](dashcache::Cache) backend must pass.
//! - [`History`] checks recorded reads against a staleness bound.
//! - [`Proxy`] partitions a real server from its clients (cut, blackhole, restore) while it
//!   keeps its data.
//! - [`modules`] checks that a crate's top-level modules import each other without loops.
//! - [`process`] and [`load`] are the panic-free parts, for tools as well as tests: without the
//!   `harness` feature they are all there is.
//!
//! Tests never touch the machine's shared Redis on port 6379.

pub mod load;
pub mod process;
pub mod prometheus;

// The harnesses are test support: a failed assertion or a server that will not start is
// reported by panicking, which is how a test fails.
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod cluster;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
pub mod conformance;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod harness;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod history;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
pub mod modules;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod postgres;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
pub mod proxy;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod sentinel;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod server;
#[cfg(feature = "harness")]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod tls;

#[cfg(feature = "harness")]
pub use cluster::RedisCluster;
#[cfg(feature = "harness")]
pub use harness::{Backend, cluster_cache, hybrid_cache, redis_cache};
#[cfg(feature = "harness")]
pub use history::History;
#[cfg(feature = "harness")]
pub use postgres::{PgSchema, PostgresServer};
pub use process::redis_server_binary;
#[cfg(feature = "harness")]
pub use proxy::Proxy;
#[cfg(feature = "harness")]
pub use sentinel::{MASTER_NAME as SENTINEL_MASTER_NAME, RedisSentinels};
#[cfg(feature = "harness")]
pub use server::RedisServer;
#[cfg(feature = "harness")]
pub use tls::{TestCerts, TlsRedis};

/// The library under test, re-exported for [`on_every_backend!`].
pub use dashcache;
