//! Rate limiting: an atomic token bucket ([`RateLimiter`]) in memory or on Redis, a fixed-window
//! counter ([`FixedWindow`]) for the simple "N per minute" case, and (with the `axum` feature)
//! the [`RateLimitLayer`] middleware.
//!
//! What the Python original got wrong, and this does not: rules applied to routes with path
//! parameters (the layer matches the route pattern); `RateLimit-Reset` is the real time until
//! the bucket is full, not a constant; `retry_after` is exact to the millisecond and rounded
//! up; the server's clock, not each app server's, drives a Redis bucket; a flushed script cache
//! or a restarted Redis does not switch limiting off; the client address comes from
//! `X-Forwarded-For` only behind proxies you trust.

mod bucket;
#[cfg(feature = "axum")]
mod client_ip;
#[cfg(feature = "axum")]
mod error;
#[cfg(feature = "axum")]
mod future;
#[cfg(feature = "axum")]
mod layer;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "axum")]
mod service;
mod window;

use std::net::IpAddr;
use std::sync::Arc;

pub use bucket::{BucketStore, Decision, KeyFn, MemoryBuckets, OnError, Rule, Scope, Spec};
#[cfg(feature = "axum")]
pub use client_ip::{TrustedProxies, client_ip};
#[cfg(feature = "axum")]
pub use future::ResponseFuture;
#[cfg(feature = "axum")]
pub use layer::{RateLimitLayer, RateLimitStats};
#[cfg(feature = "redis")]
pub use redis::RedisBuckets;
#[cfg(feature = "axum")]
pub use service::RateLimit;
pub use window::{FixedWindow, WindowDecision};

use crate::error::Result;
use crate::key::Keys;

/// The authenticated user of a request, inserted into its extensions by the service's own
/// authentication (after it verified the credentials). User-scoped rules read it; they never
/// read an unverified token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthenticatedUser(pub String);

/// What a [`Scope::Custom`] key function sees of a request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The matched route pattern (`/api/v1/accounts/{id}`), when routing found one.
    pub route: Option<&'a str>,
    /// The client address (see [`TrustedProxies`]).
    pub client_ip: Option<IpAddr>,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The request headers.
    #[cfg(feature = "axum")]
    pub headers: &'a axum::http::HeaderMap,
}

/// Token buckets keyed by rule and client, in a [`BucketStore`]. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use dashcache::{Keys, ratelimit::{RateLimiter, Rule}};
///
/// let limiter = RateLimiter::memory(Keys::new("app", ["ratelimit"])?);
/// let rule = Rule::per_minute("login", 5)?;
/// let first = limiter.check(&rule, "203.0.113.7").await?;
/// assert!(first.allowed);
/// assert_eq!(first.remaining, 4);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    store: Arc<dyn BucketStore>,
    keys: Keys,
    namespace: String,
}

impl RateLimiter {
    /// Buckets in `store`, keyed under the `ratelimit` namespace of `keys` (which must declare
    /// it).
    pub fn new(store: Arc<dyn BucketStore>, keys: Keys) -> Self {
        Self {
            store,
            keys,
            namespace: "ratelimit".to_owned(),
        }
    }

    /// In-process buckets (a single instance of the service).
    pub fn memory(keys: Keys) -> Self {
        Self::new(Arc::new(MemoryBuckets::default()), keys)
    }

    /// Buckets on Redis, shared by every instance of the service.
    #[cfg(feature = "redis")]
    pub fn redis(cache: crate::RedisCache, keys: Keys) -> Self {
        Self::new(Arc::new(RedisBuckets::new(cache)), keys)
    }

    /// Uses another declared namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The bucket key of `rule` for `id`. The id is escaped, so no client can reach another
    /// client's bucket whatever it sends; one that cannot be a segment at all (empty, with
    /// whitespace, overlong) is hashed instead, one part deeper so it cannot meet an escaped
    /// id.
    fn key(&self, rule: &Rule, id: &str) -> Result<String> {
        let ns = self.namespace.as_str();
        self.keys
            .key([ns, rule.name(), id])
            .or_else(|_| self.keys.key([ns, rule.name(), "h", &self.keys.opaque(id)]))
    }

    /// Takes `rule`'s cost from `id`'s bucket, if it has it.
    ///
    /// # Errors
    /// `InvalidKey` for an id that cannot be a key segment (empty, whitespace); store errors —
    /// the caller applies the rule's [`OnError`].
    pub async fn check(&self, rule: &Rule, id: &str) -> Result<Decision> {
        self.store
            .take(&self.key(rule, id)?, rule.spec(), None)
            .await
    }

    /// As [`check`](Self::check) at `now_ms` (Unix ms) instead of the store's clock, for
    /// deterministic tests.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn check_at(&self, rule: &Rule, id: &str, now_ms: u64) -> Result<Decision> {
        self.store
            .take(&self.key(rule, id)?, rule.spec(), Some(now_ms))
            .await
    }

    /// What a check would answer now, without taking anything.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn remaining(&self, rule: &Rule, id: &str) -> Result<Decision> {
        self.store
            .peek(&self.key(rule, id)?, rule.spec(), None)
            .await
    }

    /// As [`remaining`](Self::remaining) at `now_ms`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn remaining_at(&self, rule: &Rule, id: &str, now_ms: u64) -> Result<Decision> {
        self.store
            .peek(&self.key(rule, id)?, rule.spec(), Some(now_ms))
            .await
    }

    /// Refills `id`'s bucket for `rule`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn reset(&self, rule: &Rule, id: &str) -> Result<()> {
        self.store.reset(&self.key(rule, id)?).await
    }
}
