//! [`Encoded<C, V>`]: any [`Cache`] whose values pass through a [`ValueCodec`] on their way in
//! and out — how [`Sealed`](crate::sealed::Sealed) (encryption) and
//! [`Compressed`](crate::compress::Compressed) (zstd) are built, and how a third encoding would
//! be: a codec, not another wrapper.
//!
//! Encoded: the values of `get` / `set` / `set_if_absent` / `take` / `get_many` / `set_many` and
//! of `write_if`'s `Set` and `Replace`. Passed through unchanged: set members (ids for indexes,
//! which sets compare) and counters (`increment` works on plain integers), keys, TTLs and
//! everything else.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::cache::{Cache, Condition, KeyTtl, Ttl, Write};
use crate::error::Result;

/// How values are stored: `encode_value` on the way into the cache, `decode_value` on the way out.
/// Both get the key, so an encoding may bind a value to it.
pub trait ValueCodec: fmt::Debug + Send + Sync + 'static {
    /// The stored form of `value` under `key`.
    ///
    /// # Errors
    /// When the value cannot be encoded (too large, a failing cipher or compressor).
    fn encode_value(&self, key: &str, value: &Bytes) -> Result<Bytes>;

    /// The value whose stored form under `key` is `stored`.
    ///
    /// # Errors
    /// When `stored` is not a valid encoding: a typed error, never garbage.
    fn decode_value(&self, key: &str, stored: Bytes) -> Result<Bytes>;
}

/// `C` with every value passed through the codec `V`. [`Sealed`](crate::sealed::Sealed) and
/// [`Compressed`](crate::compress::Compressed) are this type with their codecs.
#[derive(Debug, Clone)]
pub struct Encoded<C, V> {
    inner: C,
    codec: V,
}

impl<C: Cache, V: ValueCodec> Encoded<C, V> {
    /// `inner` with its values encoded by `codec`.
    pub fn new(inner: C, codec: V) -> Self {
        Self { inner, codec }
    }

    /// The cache underneath (which sees only stored forms).
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The codec.
    pub fn codec(&self) -> &V {
        &self.codec
    }

    fn decode(&self, key: &str, value: Option<Bytes>) -> Result<Option<Bytes>> {
        value.map(|v| self.codec.decode_value(key, v)).transpose()
    }
}

#[async_trait]
impl<C: Cache, V: ValueCodec> Cache for Encoded<C, V> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.inner.get(key).await?;
        self.decode(key, value)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let stored = self.codec.encode_value(key, &value)?;
        self.inner.set(key, stored, ttl).await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let stored = self.codec.encode_value(key, &value)?;
        self.inner.set_if_absent(key, stored, ttl).await
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.inner.take(key).await?;
        self.decode(key, value)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inner.delete_many(keys).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let values = self.inner.get_many(keys).await?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| self.decode(key, value))
            .collect()
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let stored = entries
            .iter()
            .map(|(k, v)| self.codec.encode_value(k, v).map(|s| (*k, s)))
            .collect::<Result<Vec<_>>>()?;
        self.inner.set_many(&stored, ttl).await
    }

    async fn increment(&self, key: &str, delta: i64, ttl_on_create: Option<Ttl>) -> Result<i64> {
        self.inner.increment(key, delta, ttl_on_create).await
    }

    async fn expire(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.expire(key, ttl).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
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
        self.inner.set_members(key).await
    }

    async fn write_if(&self, conditions: &[Condition<'_>], writes: &[Write<'_>]) -> Result<bool> {
        let stored = writes
            .iter()
            .map(|w| {
                Ok(match w {
                    Write::Set(k, v, ttl) => Write::Set(k, self.codec.encode_value(k, v)?, *ttl),
                    Write::Replace(k, v) => Write::Replace(k, self.codec.encode_value(k, v)?),
                    other => other.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner.write_if(conditions, &stored).await
    }

    async fn ping(&self) -> Result<Duration> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCache;
    use crate::error::{Error, ErrorKind};

    /// A third encoding is a codec of a few lines: reversed bytes, refused when empty.
    #[derive(Debug)]
    struct Reversed;

    impl ValueCodec for Reversed {
        fn encode_value(&self, _key: &str, value: &Bytes) -> Result<Bytes> {
            Ok(value.iter().rev().copied().collect::<Vec<u8>>().into())
        }

        fn decode_value(&self, key: &str, stored: Bytes) -> Result<Bytes> {
            if stored.is_empty() {
                return Err(Error::new(ErrorKind::Deserialize, "empty").with_key(key));
            }
            Ok(stored.iter().rev().copied().collect::<Vec<u8>>().into())
        }
    }

    #[tokio::test]
    async fn values_pass_through_the_codec_and_the_rest_does_not() -> Result<()> {
        let cache = Encoded::new(MemoryCache::new(), Reversed);
        cache
            .set("k", Bytes::from_static(b"abc"), Ttl::secs(60))
            .await?;
        assert_eq!(cache.inner().get("k").await?.as_deref(), Some(&b"cba"[..]));
        assert_eq!(cache.get("k").await?.as_deref(), Some(&b"abc"[..]));
        assert_eq!(cache.increment("n", 2, None).await?, 2);
        cache
            .inner()
            .set("bad", Bytes::new(), Ttl::secs(60))
            .await?;
        let err = cache.get_many(&["k", "bad"]).await.err().map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::Deserialize));
        Ok(())
    }
}
