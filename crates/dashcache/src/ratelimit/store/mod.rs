//! Where buckets live: [`MemoryBuckets`] in process, `RedisBuckets` on Redis. Each check is one
//! atomic step.

mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod reserve;

use std::fmt;

use async_trait::async_trait;

pub use memory::MemoryBuckets;
#[cfg(feature = "redis")]
pub use redis::RedisBuckets;
#[cfg(feature = "redis")]
pub use reserve::{ReservationStats, Reservations};

use super::bucket::Decision;
use super::rule::Spec;
use crate::error::Result;

/// A place for token buckets, by key.
#[async_trait]
pub trait BucketStore: Send + Sync + fmt::Debug + 'static {
    /// Takes `spec.cost` tokens from the bucket at `key` if it has them. `now_ms` overrides the
    /// store's clock, for deterministic tests: milliseconds on the store's own time base (Unix
    /// time on Redis; in memory, time since the store was made) — only differences matter.
    ///
    /// # Errors
    /// The store's errors.
    async fn take(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision>;

    /// What [`take`](Self::take) would answer, without changing the bucket.
    ///
    /// # Errors
    /// The store's errors.
    async fn peek(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision>;

    /// Refills the bucket at `key`.
    ///
    /// # Errors
    /// The store's errors.
    async fn reset(&self, key: &str) -> Result<()>;
}
