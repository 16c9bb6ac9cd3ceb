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
mod future;
#[cfg(feature = "axum")]
mod layer;
#[cfg(feature = "axum")]
mod response;
mod rule;
#[cfg(feature = "axum")]
mod service;
mod store;
mod window;

use std::net::IpAddr;
use std::sync::Arc;

use std::future::Future;

use futures::future::{BoxFuture, Either};

pub use bucket::Decision;
#[cfg(feature = "axum")]
pub use client_ip::{ForwardedHeader, TrustedProxies, client_ip};
#[cfg(feature = "axum")]
pub use future::ResponseFuture;
#[cfg(feature = "axum")]
pub use layer::{RateLimitLayer, RateLimitStats, network_of};
pub use rule::{KeyFn, OnError, Rule, Scope, Spec};
#[cfg(feature = "axum")]
pub use service::RateLimit;
pub use store::{BucketStore, MemoryBuckets};
#[cfg(feature = "redis")]
pub use store::{RedisBuckets, ReservationStats, Reservations};
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
    store: Store,
    /// This instance's own buckets, for rules that fall back to them ([`OnError::Local`]):
    /// the store itself when it is in memory.
    local: Arc<MemoryBuckets>,
    keys: Keys,
    namespace: String,
}

/// In memory a bucket is found by (rule, id) directly: no key is built for it.
#[derive(Debug, Clone)]
enum Store {
    Memory(Arc<MemoryBuckets>),
    Keyed(Arc<dyn BucketStore>),
}

impl RateLimiter {
    /// Buckets in `store`, keyed under the `ratelimit` namespace of `keys` (which must declare
    /// it).
    pub fn new(store: Arc<dyn BucketStore>, keys: Keys) -> Self {
        Self::with_store(Store::Keyed(store), keys)
    }

    /// In-process buckets (a single instance of the service).
    pub fn memory(keys: Keys) -> Self {
        Self::in_memory(MemoryBuckets::default(), keys)
    }

    /// In-process `buckets` (bounded and clocked as configured).
    pub fn in_memory(buckets: MemoryBuckets, keys: Keys) -> Self {
        Self::with_store(Store::Memory(Arc::new(buckets)), keys)
    }

    fn with_store(store: Store, keys: Keys) -> Self {
        let local = match &store {
            Store::Memory(buckets) => Arc::clone(buckets),
            Store::Keyed(_) => Arc::new(MemoryBuckets::default()),
        };
        Self {
            store,
            local,
            keys,
            namespace: "ratelimit".to_owned(),
        }
    }

    /// Decides on this instance's own memory buckets, whatever the store: what a rule with
    /// [`OnError::Local`] falls back to while the store cannot be reached.
    pub fn check_locally(&self, rule: &Rule, id: &str) -> Decision {
        self.local.take_for(rule.name(), id, rule.spec(), None)
    }

    /// What [`check_locally`](Self::check_locally) would answer now, without taking anything.
    pub fn remaining_locally(&self, rule: &Rule, id: &str) -> Decision {
        self.local.peek_for(rule.name(), id, rule.spec(), None)
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
    /// `InvalidKey` when the store needs a key and the namespace is not declared; store errors
    /// — the caller applies the rule's [`OnError`].
    #[inline]
    pub fn check<'a>(
        &'a self,
        rule: &'a Rule,
        id: &'a str,
    ) -> impl Future<Output = Result<Decision>> + Send + 'a {
        self.take(rule, id, None)
    }

    /// As [`check`](Self::check) at `now_ms` on the store's time base (see
    /// [`BucketStore::take`]) instead of its clock, for deterministic tests.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn check_at<'a>(
        &'a self,
        rule: &'a Rule,
        id: &'a str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Decision>> + Send + 'a {
        self.take(rule, id, Some(now_ms))
    }

    /// What a check would answer now, without taking anything.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn remaining(&self, rule: &Rule, id: &str) -> Result<Decision> {
        self.peek(rule, id, None).await
    }

    /// As [`remaining`](Self::remaining) at `now_ms`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn remaining_at(&self, rule: &Rule, id: &str, now_ms: u64) -> Result<Decision> {
        self.peek(rule, id, Some(now_ms)).await
    }

    /// Refills `id`'s bucket for `rule`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn reset(&self, rule: &Rule, id: &str) -> Result<()> {
        match &self.store {
            Store::Memory(buckets) => {
                buckets.reset_for(rule.name(), id);
                Ok(())
            }
            Store::Keyed(store) => store.reset(&self.key(rule, id)?).await,
        }
    }

    /// A decision's future: for memory buckets a few words (an `async` block that only reads
    /// its arguments), for a store a boxed call — either way cheap to create per request.
    #[inline]
    fn take<'a>(
        &'a self,
        rule: &'a Rule,
        id: &'a str,
        now_ms: Option<u64>,
    ) -> Either<impl Future<Output = Result<Decision>> + Send + 'a, BoxFuture<'a, Result<Decision>>>
    {
        match &self.store {
            Store::Memory(buckets) => {
                Either::Left(
                    async move { Ok(buckets.take_for(rule.name(), id, rule.spec(), now_ms)) },
                )
            }
            Store::Keyed(store) => Either::Right(Box::pin(async move {
                store.take(&self.key(rule, id)?, rule.spec(), now_ms).await
            })),
        }
    }

    async fn peek(&self, rule: &Rule, id: &str, now_ms: Option<u64>) -> Result<Decision> {
        match &self.store {
            Store::Memory(buckets) => Ok(buckets.peek_for(rule.name(), id, rule.spec(), now_ms)),
            Store::Keyed(store) => store.peek(&self.key(rule, id)?, rule.spec(), now_ms).await,
        }
    }
}
