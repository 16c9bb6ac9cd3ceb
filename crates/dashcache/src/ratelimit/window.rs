//! [`FixedWindow`]: "N requests per window" on a counter, the guide's simple case, made atomic.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, KeyTtl, Ttl};
use crate::error::{Error, Result};
use crate::key::Keys;

/// The answer of one [`FixedWindow::hit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowDecision {
    /// Whether this hit is within the limit.
    pub allowed: bool,
    /// Hits in the current window, this one included.
    pub count: u64,
    /// The limit.
    pub limit: u64,
}

/// A fixed-window counter per id. The window starts at an id's first hit; the counter's TTL is
/// set in the same atomic step as its creation, so no counter is ever left without expiry
/// (the original called INCR, then EXPIRE when the count was 1).
///
/// Coarser than the token bucket (a burst of `2 × limit` can straddle a window edge) and one
/// `increment` per hit: use it where that is all a limit needs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use dashcache::{Keys, MemoryCache, ratelimit::FixedWindow};
///
/// let window = FixedWindow::new(Arc::new(MemoryCache::new()), Keys::new("app", ["rate_limit"])?, "rate_limit");
/// for _ in 0..3 {
///     assert!(window.hit("user-1:accounts", 3, Duration::from_secs(60)).await?.allowed);
/// }
/// assert!(!window.hit("user-1:accounts", 3, Duration::from_secs(60)).await?.allowed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FixedWindow {
    cache: Arc<dyn Cache>,
    keys: Keys,
    namespace: String,
}

impl FixedWindow {
    /// Counters under `namespace`, which `keys` must declare.
    pub fn new(cache: Arc<dyn Cache>, keys: Keys, namespace: impl Into<String>) -> Self {
        Self {
            cache,
            keys,
            namespace: namespace.into(),
        }
    }

    /// Counts one hit for `id` in its current window of `window`.
    ///
    /// # Errors
    /// `InvalidKey` for an id that cannot be a segment; `InvalidArgument` for a zero window;
    /// cache errors (the caller decides whether to fail open).
    pub async fn hit(&self, id: &str, limit: u64, window: Duration) -> Result<WindowDecision> {
        let key = self.keys.key([self.namespace.as_str(), id])?;
        let count = self
            .cache
            .increment(&key, 1, Some(Ttl::from(window)))
            .await?;
        let count = u64::try_from(count)
            .map_err(|_| Error::invalid_argument("the window counter went negative"))?;
        Ok(WindowDecision {
            allowed: count <= limit,
            count,
            limit,
        })
    }

    /// How long until `id`'s current window ends (zero when it has none).
    ///
    /// # Errors
    /// As [`hit`](Self::hit).
    pub async fn resets_in(&self, id: &str) -> Result<Duration> {
        let key = self.keys.key([self.namespace.as_str(), id])?;
        Ok(match self.cache.ttl(&key).await? {
            KeyTtl::Expires(d) => d,
            _ => Duration::ZERO,
        })
    }
}
