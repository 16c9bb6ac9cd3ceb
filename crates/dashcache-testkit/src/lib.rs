//! Test support for dashcache: real servers, never mocks.
//!
//! - [`RedisServer`] spawns a private `redis-server` on a free loopback port in a temporary
//!   directory, waits until it answers, and kills it on drop. Fault tests freeze it
//!   (`SIGSTOP`), kill it and restart it on the same port.
//! - [`conformance`] is the one suite every [`Cache`](dashcache::Cache) backend must pass.
//!
//! Tests never touch the machine's shared Redis on port 6379.

// This crate is test support: a failed assertion or a server that will not start is reported by
// panicking, which is how a test fails.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;
mod server;

pub use server::{RedisServer, redis_server_binary};
