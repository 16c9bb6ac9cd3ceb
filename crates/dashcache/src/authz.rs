//! [`PermissionCache`]: cached allow / deny answers per (user, resource, action), with
//! invalidation by generation.
//!
//! Each user has a generation, a random value changed by [`invalidate_user`]. A cached answer
//! records the generation it was computed under, and is used only while that is still the
//! user's generation. So invalidation is one write (no `SCAN`, no pattern delete), and a check
//! that was evaluating during an invalidation — it read the old generation — writes an answer
//! that no later check will accept.
//!
//! A user without a generation has no valid answer: the first check creates one together with
//! its answer, in one step and only while there is still none. A missing generation proves
//! nothing — it may have expired, or a cache that follows the database's log may not be
//! allowed to show it yet (see [`crate::coherent`]) — so it never validates an answer.
//!
//! A hit is one round trip (the generation and the answer are read together). When the cache
//! fails, the check falls through to the evaluator: permissions are then as fresh as the
//! source of truth, only slower.
//!
//! [`invalidate_user`]: PermissionCache::invalidate_user

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::cache::{Cache, Condition, Ttl, Write};
use crate::error::Result;
use crate::fallback::Fallbacks;
use crate::key::Keys;
use crate::metrics::CacheMetrics;

/// Cached permission checks. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use std::sync::Arc;
/// use dashcache::{Keys, MemoryCache, authz::PermissionCache};
///
/// let keys = Keys::new("app", ["authz"])?;
/// let permissions = PermissionCache::new(Arc::new(MemoryCache::new()), keys);
/// let allowed = permissions
///     .check("user-1", "accounts", "read", || async { Ok::<_, std::convert::Infallible>(true) })
///     .await;
/// assert_eq!(allowed, Ok(true));
/// permissions.invalidate_user("user-1").await?; // after a role change
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PermissionCache {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    cache: Arc<dyn Cache>,
    keys: Keys,
    namespace: String,
    allow_ttl: Duration,
    deny_ttl: Duration,
    fallbacks: Fallbacks,
}

impl std::fmt::Debug for PermissionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermissionCache")
            .field("cache", &self.inner.cache)
            .field("namespace", &self.inner.namespace)
            .field("allow_ttl", &self.inner.allow_ttl)
            .field("deny_ttl", &self.inner.deny_ttl)
            .finish()
    }
}

impl PermissionCache {
    /// Checks cached under the `authz` namespace of `keys` (which must declare it), 5 minutes
    /// for both answers.
    pub fn new(cache: Arc<dyn Cache>, keys: Keys) -> Self {
        Self::with_config(
            cache,
            keys,
            "authz",
            Duration::from_secs(300),
            Duration::from_secs(300),
        )
    }

    /// Checks cached under `namespace`, allows for `allow_ttl` and denials for `deny_ttl`
    /// (each at least 1 ms).
    pub fn with_config(
        cache: Arc<dyn Cache>,
        keys: Keys,
        namespace: impl Into<String>,
        allow_ttl: Duration,
        deny_ttl: Duration,
    ) -> Self {
        let floor = Duration::from_millis(1);
        Self {
            inner: Arc::new(Inner {
                cache,
                keys,
                namespace: namespace.into(),
                allow_ttl: allow_ttl.max(floor),
                deny_ttl: deny_ttl.max(floor),
                fallbacks: Fallbacks::new("permission check"),
            }),
        }
    }

    /// Counts every check that fell back to its evaluator because the cache failed (as
    /// `bypassed`, in the namespace's metrics); they are logged once per burst either way.
    #[must_use]
    pub fn with_metrics(mut self, metrics: CacheMetrics) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.fallbacks = inner.fallbacks.clone().with_metrics(metrics);
        self
    }

    /// A generation outlives every answer written under it, so an expired generation can only
    /// be followed by answers written after it.
    fn generation_ttl(&self) -> Ttl {
        Ttl::from(self.inner.allow_ttl.max(self.inner.deny_ttl) * 4)
    }

    /// The user's generation key and the answer key for (resource, action), tagged with the
    /// user so that on Redis Cluster both are read in one request from one slot.
    fn keys_for(&self, user: &str, resource: &str, action: &str) -> Result<(String, String)> {
        let ns = self.inner.namespace.as_str();
        let generation = self.generation_key(user)?;
        // Four parts against the generation key's three: the two can never collide.
        let answer = self
            .inner
            .keys
            .tagged_key(user, [ns, user, resource, action])?;
        Ok((generation, answer))
    }

    fn generation_key(&self, user: &str) -> Result<String> {
        let ns = self.inner.namespace.as_str();
        self.inner.keys.tagged_key(user, [ns, user, "generation"])
    }

    /// Whether `user` may `action` on `resource`: the cached answer if it is current, else
    /// `evaluate`'s (which is then cached). A failing cache falls through to `evaluate`.
    ///
    /// # Errors
    /// `evaluate`'s error; never a cache error.
    pub async fn check<E, F, Fut>(
        &self,
        user: &str,
        resource: &str,
        action: &str,
        evaluate: F,
    ) -> Result<bool, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, E>>,
    {
        let (generation_key, answer_key) = match self.keys_for(user, resource, action) {
            Ok(keys) => keys,
            Err(e) => {
                self.inner.fallbacks.record("", &e);
                return evaluate().await;
            }
        };
        // The user's generation as read: `Some(None)` when they have none.
        let generation = match self
            .inner
            .cache
            .get_many(&[&generation_key, &answer_key])
            .await
        {
            Ok(values) => {
                let mut values = values.into_iter();
                let generation = values.next().flatten();
                if let Some(generation) = &generation
                    && let Some(allowed) = values
                        .next()
                        .flatten()
                        .and_then(|a| answer_for(&a, generation))
                {
                    return Ok(allowed);
                }
                Some(generation)
            }
            Err(e) => {
                self.inner.fallbacks.record(&answer_key, &e);
                None
            }
        };
        let allowed = evaluate().await?;
        if let Some(generation) = generation {
            self.remember(&generation_key, &answer_key, generation, allowed)
                .await;
        }
        Ok(allowed)
    }

    /// Caches `allowed` under the generation read before it was evaluated. Without one, a
    /// generation is created with the answer in one step, and only while there is still none:
    /// a missing generation proves nothing (the cache may have lost it, or not be allowed to
    /// say), so no answer is ever kept without one.
    async fn remember(
        &self,
        generation_key: &str,
        answer_key: &str,
        generation: Option<Bytes>,
        allowed: bool,
    ) {
        let ttl = Ttl::from(if allowed {
            self.inner.allow_ttl
        } else {
            self.inner.deny_ttl
        });
        let answer = |generation: &[u8]| {
            let mut value = generation.to_vec();
            value.extend_from_slice(if allowed { b":1" } else { b":0" });
            Bytes::from(value)
        };
        let done = match generation {
            Some(generation) => {
                self.inner
                    .cache
                    .set(answer_key, answer(&generation), ttl)
                    .await
            }
            None => {
                let fresh: i64 = rand::rng().random_range(1..i64::MAX);
                let value = answer(fresh.to_string().as_bytes());
                self.inner
                    .cache
                    .write_if(
                        &[Condition::Absent(generation_key)],
                        &[
                            Write::SetInt(generation_key, fresh, self.generation_ttl()),
                            Write::Set(answer_key, value, ttl),
                        ],
                    )
                    .await
                    .map(drop)
            }
        };
        if let Err(e) = done {
            self.inner.fallbacks.record(answer_key, &e);
        }
    }

    /// What the database's log invalidates when `user`'s roles change there (see
    /// [`crate::coherent`]): their generation, replaced with a fresh value.
    ///
    /// # Errors
    /// `InvalidKey` for a malformed user id.
    pub fn invalidation(&self, user: &str) -> Result<crate::coherent::Target> {
        Ok(crate::coherent::Target::version(
            self.generation_key(user)?,
            self.generation_ttl(),
        ))
    }

    /// Makes every cached answer for `user` obsolete (after a role change), in one write.
    ///
    /// # Errors
    /// `InvalidKey` for a malformed user id; cache errors — an invalidation that did not
    /// happen leaves answers valid until their TTL, which the caller must know.
    pub async fn invalidate_user(&self, user: &str) -> Result<()> {
        let key = self.generation_key(user)?;
        // Random, not a counter: a generation that expired and was recreated can never repeat
        // one that answers still carry.
        let generation: u64 = rand::rng().random_range(1..u64::MAX);
        self.inner
            .cache
            .set(
                &key,
                Bytes::from(generation.to_string()),
                self.generation_ttl(),
            )
            .await
    }
}

/// The cached answer `value` (`<generation>:<0|1>`), if it was written under `generation`.
fn answer_for(value: &[u8], generation: &[u8]) -> Option<bool> {
    let (written_under, answer) = value.split_at_checked(value.len().checked_sub(2)?)?;
    if written_under != generation {
        return None;
    }
    match answer {
        b":1" => Some(true),
        b":0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_only_under_their_generation() {
        assert_eq!(answer_for(b"0:1", b"0"), Some(true));
        assert_eq!(answer_for(b"42:0", b"42"), Some(false));
        assert_eq!(answer_for(b"42:1", b"43"), None);
        assert_eq!(answer_for(b"4:1", b"42"), None);
        assert_eq!(answer_for(b"", b"0"), None);
        assert_eq!(answer_for(b"0:x", b"0"), None);
    }
}
