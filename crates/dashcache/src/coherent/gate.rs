//! [`Gated<C>`]: a cache whose coherent namespaces answer only what the log proves.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Follower;
use crate::cache::{Cache, Condition, KeyTtl, Ttl, Write};
use crate::error::Result;

/// `C`, with reads of coherent keys answered only while the [`Follower`] proves them: a key
/// not proven, or pending, reads as absent (a miss is always a correct answer for a cache, and
/// sends the caller to the database). Writes pass through: fills are fenced, and the log's
/// entries are applied after them.
///
/// For a cache with one tier (Redis alone, or the embedded cache). The
/// [`HybridCache`](crate::HybridCache) gates its two tiers itself.
#[derive(Debug, Clone)]
pub struct Gated<C> {
    inner: C,
    follower: Follower,
}

impl<C: Cache> Gated<C> {
    /// `inner`, gated by `follower`.
    pub fn new(inner: C, follower: Follower) -> Self {
        Self { inner, follower }
    }

    /// The cache underneath.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Whether a read of `key` must answer "absent" now.
    #[inline]
    fn closed(&self, key: &str) -> bool {
        self.follower.covers(key) && !self.follower.shared_may_answer(key)
    }
}

#[async_trait]
impl<C: Cache> Cache for Gated<C> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if self.closed(key) {
            return Ok(None);
        }
        self.inner.get(key).await
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        if self.closed(key) {
            return Some(Ok(None));
        }
        self.inner.get_now(key)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.inner.set(key, value, ttl).await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.inner.set_if_absent(key, value, ttl).await
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.take(key).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inner.delete_many(keys).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        if self.closed(key) {
            return Ok(false);
        }
        self.inner.exists(key).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let closed: Vec<bool> = keys.iter().map(|k| self.closed(k)).collect();
        if closed.iter().all(|c| *c) {
            return Ok(vec![None; keys.len()]);
        }
        let mut values = self.inner.get_many(keys).await?;
        for (value, closed) in values.iter_mut().zip(closed) {
            if closed {
                *value = None;
            }
        }
        Ok(values)
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.inner.set_many(entries, ttl).await
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.inner.increment(key, delta, ttl_on_create).await
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.expire(key, ttl).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        if self.closed(key) {
            return Ok(KeyTtl::Missing);
        }
        self.inner.ttl(key).await
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        self.inner.delete_pattern(pattern).await
    }

    async fn set_add(&self, key: &str, members: &[Bytes], ttl: Ttl) -> Result<u64> {
        self.inner.set_add(key, members, ttl).await
    }

    async fn set_remove(&self, key: &str, members: &[Bytes]) -> Result<u64> {
        self.inner.set_remove(key, members).await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Bytes>> {
        if self.closed(key) {
            return Ok(Vec::new());
        }
        self.inner.set_members(key).await
    }

    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        self.inner.write_if(conditions, writes).await
    }

    async fn ping(&self) -> Result<Duration> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCache;

    #[tokio::test]
    async fn coherent_keys_read_as_absent_until_proven_and_while_pending() -> Result<()> {
        let follower = Follower::new(["app:user:"], Duration::from_secs(5))?;
        let cache = Gated::new(MemoryCache::new(), follower.clone());
        for key in ["app:user:1", "app:rate:1"] {
            cache
                .set(key, Bytes::from_static(b"v"), Ttl::secs(60))
                .await?;
        }
        assert_eq!(cache.get("app:user:1").await?, None, "nothing proven yet");
        assert!(
            cache.get("app:rate:1").await?.is_some(),
            "not a coherent key"
        );
        follower.prove(quanta::Instant::now());
        assert!(cache.get("app:user:1").await?.is_some());
        follower.mark_pending(&["app:user:1"]);
        assert_eq!(
            cache.get_many(&["app:user:1", "app:rate:1"]).await?,
            vec![None, Some(Bytes::from_static(b"v"))]
        );
        assert!(!cache.exists("app:user:1").await?);
        follower.clear_pending(&["app:user:1"]);
        assert!(cache.exists("app:user:1").await?);
        Ok(())
    }
}
