//! The reference service, route by route, with `oneshot`: on the embedded cache and on a
//! spawned Redis and on a spawned Redis Cluster, over SQLite. One test binary, a module per
//! subject.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

#[path = "../common/mod.rs"]
mod common;

mod data;
mod faults;
mod lookups;
mod ops;
mod sessions;
