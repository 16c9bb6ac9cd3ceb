//! [`Target`]s and the [`Applier`] that applies them to a cache: idempotent, fenced, and cheap
//! for every instance after the first.

use std::sync::Arc;
use std::time::Duration;

use crate::aside::fence::{DEFAULT_WINDOW, applied_key, fence_key, new_generation};
use crate::cache::{Cache, Condition, Ttl, Write};
use crate::error::Result;

/// What one log entry invalidates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// A cached value: deleted, and its [cache-aside fence](crate::aside) changed, so a fill
    /// whose load began before cannot be committed after.
    Key(String),
    /// A version key (a permission generation, a tag's version, a tombstone): replaced with a
    /// fresh random value, so everything cached under the old one stops matching, and an old
    /// value never comes back.
    Version {
        /// The key.
        key: String,
        /// How long the new value lives.
        ttl: Ttl,
    },
}

impl Target {
    /// The cached value `key`.
    pub fn key(key: impl Into<String>) -> Self {
        Self::Key(key.into())
    }

    /// The version key `key`, replaced by a value that lives `ttl`.
    pub fn version(key: impl Into<String>, ttl: Ttl) -> Self {
        Self::Version {
            key: key.into(),
            ttl,
        }
    }

    /// The key this target changes.
    pub fn cache_key(&self) -> &str {
        match self {
            Self::Key(key) | Self::Version { key, .. } => key,
        }
    }
}

/// Applies [`Target`]s to a cache. Each target is one atomic step on the key's slot, guarded
/// by a marker holding the entry's stamp: the first instance to apply an entry writes, the
/// others find the marker and write nothing (an instance applying entries out of the others'
/// order writes again, which is harmless: every step only removes or replaces).
#[derive(Clone)]
pub struct Applier {
    cache: Arc<dyn Cache>,
    window: Duration,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("cache", &self.cache)
            .field("window", &self.window)
            .finish()
    }
}

impl Applier {
    /// Applies to `cache` (Redis, or the embedded cache), with cache-aside's default fence
    /// window.
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        Self {
            cache,
            window: DEFAULT_WINDOW,
        }
    }

    /// The cache it applies to.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    /// Applies `target` for the entry stamped `stamp`; whether it wrote (false: an instance
    /// had already applied this entry to this key).
    ///
    /// # Errors
    /// The cache's: the target is not applied, and must be retried.
    pub async fn apply(&self, target: &Target, stamp: i64) -> Result<bool> {
        let window = Ttl::from(self.window);
        match target {
            Target::Key(key) => {
                let (fence, marker) = (fence_key(key), applied_key(key));
                let writes = [
                    Write::Delete(key),
                    // Random, as every invalidation's: a generation never comes back, so no
                    // fill that saw an older one can commit.
                    Write::SetInt(&fence, new_generation(), window),
                    Write::SetInt(&marker, stamp, window),
                ];
                self.cache
                    .write_if(&[Condition::Differs(&marker, stamp)], &writes)
                    .await
            }
            Target::Version { key, ttl } => {
                let marker = applied_key(key);
                let writes = [
                    Write::SetInt(key, new_generation(), *ttl),
                    Write::SetInt(&marker, stamp, window),
                ];
                self.cache
                    .write_if(&[Condition::Differs(&marker, stamp)], &writes)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCache;
    use bytes::Bytes;

    #[tokio::test]
    async fn an_entry_is_written_once_whatever_the_number_of_appliers() -> Result<()> {
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
        let (a, b) = (
            Applier::new(Arc::clone(&cache)),
            Applier::new(Arc::clone(&cache)),
        );
        cache
            .set("app:user:1", Bytes::from_static(b"old"), Ttl::secs(60))
            .await?;
        let target = Target::key("app:user:1");
        assert!(a.apply(&target, 41).await?);
        assert_eq!(cache.get("app:user:1").await?, None);
        cache
            .set("app:user:1", Bytes::from_static(b"fresh"), Ttl::secs(60))
            .await?;
        assert!(
            !b.apply(&target, 41).await?,
            "the second applier writes nothing"
        );
        assert!(
            cache.exists("app:user:1").await?,
            "and deletes nothing fresh"
        );
        assert!(b.apply(&target, 42).await?, "a later entry applies");
        let version = Target::version("app:authz:{1}:1:generation", Ttl::secs(60));
        assert!(a.apply(&version, 43).await?);
        let first = cache.get(version.cache_key()).await?;
        assert!(!b.apply(&version, 43).await?);
        assert_eq!(
            cache.get(version.cache_key()).await?,
            first,
            "not replaced twice"
        );
        assert!(a.apply(&version, 44).await?);
        assert_ne!(cache.get(version.cache_key()).await?, first);
        Ok(())
    }
}
