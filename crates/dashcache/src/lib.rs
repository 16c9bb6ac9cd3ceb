//! # dashcache
//!
//! The cache layer for Rust web services: one protocol ([`Cache`]) over an embedded cache
//! ([`MemoryCache`], the default: nothing to install) and Redis ([`RedisCache`]), with typed
//! helpers, safe key building and Redis-compatible glob deletion.
//!
//! ## Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dashcache::Result<()> {
//! use std::sync::Arc;
//! use dashcache::{Cache, CacheExt, Keys, MemoryCache, Ttl};
//!
//! // What a service holds: one shared handle. In production, `RedisCache::builder(url).build()`
//! // (it starts while Redis is down; operations fail open until it answers).
//! let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
//! let keys = Keys::new("dashtam", ["user", "authz"])?;
//!
//! // Every key through the builder: prefixed, and ids can never become pattern syntax.
//! let key = keys.key(["user", "42"])?;
//! cache.set_json(&key, &serde_json::json!({"name": "Ada"}), Ttl::secs(3600)).await?;
//! let user: Option<serde_json::Value> = cache.get_json(&key).await?;
//! assert_eq!(user.map(|u| u["name"].clone()), Some("Ada".into()));
//!
//! // Atomic counters with a TTL set in the same step.
//! let hits = cache.increment(&keys.key(["user", "42", "hits"])?, 1, Some(Ttl::secs(60))).await?;
//! assert_eq!(hits, 1);
//!
//! // Invalidate everything of one user, whatever their id contains.
//! cache.set_str(&keys.key(["authz", "42", "accounts", "read"])?, "1", Ttl::secs(300)).await?;
//! assert_eq!(cache.delete_pattern(&keys.pattern(["authz", "42"])?).await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! With Redis (the `redis` feature, on by default):
//!
//! ```no_run
//! # async fn run() -> dashcache::Result<()> {
//! use std::time::Duration;
//! use dashcache::{Cache, RedisCache};
//!
//! // No I/O: the service starts whether or not Redis answers yet.
//! let cache = RedisCache::builder("redis://127.0.0.1:6379")
//!     .timeout(Duration::from_millis(250))
//!     .build()?;
//! match cache.ping().await {
//!     Ok(rtt) => println!("Redis answers in {rtt:?}"),
//!     // Fail open: report it (health, logs) and serve from the source of truth meanwhile.
//!     Err(e) => eprintln!("Redis is not answering yet: {e}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Contracts
//!
//! - Every operation returns a [`Result`]; none panics. A miss is `Ok(None)`; failures carry an
//!   [`ErrorKind`] and a stable [`Error::code`].
//! - Every write names its [`Ttl`]; a zero TTL is an error, not a delete.
//! - Backends enforce the same [`Limits`] (1 KiB keys, 8 MiB values by default) and the same
//!   semantics, proven by one conformance suite run against each.
//! - On Redis every operation has a deadline (250 ms by default) and a circuit breaker, so a
//!   dead or hung server costs one deadline, not one per request.
//!
//! ## Features
//!
//! Each names a capability; all are additive. With none at all the crate is the protocol, the
//! embedded cache and the patterns over it.
//!
//! - `redis` (default): [`RedisCache`] on one server, a Redis Cluster or a Sentinel set, the
//!   [`HybridCache`] (an L1 kept coherent by Redis), and rate-limit buckets on Redis.
//! - `tls` (default): `rediss://` through rustls (no OpenSSL), with a CA bundle and client
//!   certificates ([`redis::TlsOptions`]); implies `redis`.
//! - `compression` (default): [`compress::Compressed`], zstd for large values.
//! - `axum`: the rate-limiting middleware, [`ratelimit::RateLimitLayer`].

pub mod aside;
pub mod authz;
pub mod cache;
pub mod clock;
pub mod codec;
pub mod coherent;
#[cfg(feature = "compression")]
pub mod compress;
pub mod error;
pub mod ext;
pub mod fallback;
pub mod glob;
pub mod health;
#[cfg(feature = "redis")]
pub mod hybrid;
pub mod instrument;
pub mod key;
pub mod memory;
pub mod metrics;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sealed;
pub mod session;
pub mod settings;
pub mod token;
pub mod url;
pub mod vars;

pub use aside::CacheAside;
pub use cache::{Cache, Condition, KeyTtl, Limits, Ttl, Write};
pub use clock::Clock;
pub use error::{Error, ErrorKind, Result};
pub use ext::CacheExt;
#[cfg(feature = "redis")]
pub use hybrid::{HybridCache, HybridCacheBuilder};
pub use instrument::Instrumented;
pub use key::{Keys, KeysBuilder};
pub use memory::{MemoryCache, MemoryCacheBuilder};
#[cfg(feature = "redis")]
pub use redis::{BreakerConfig, RedisCache, RedisCacheBuilder, Sweep, SweepProgress};
pub use settings::CacheSettings;

/// The README's code blocks, compiled as doc tests so the front page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
