//! Typed helpers over any [`Cache`]: JSON values and UTF-8 strings.

use std::future::Future;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Ttl};
use crate::error::{Error, ErrorKind, Result};

/// Typed reads and writes for every [`Cache`], including `dyn Cache`.
///
/// A stored value that does not decode is an [`ErrorKind::Deserialize`] error carrying the
/// key: never a panic, and never a silent miss that would hide corrupt data.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use dashcache::{CacheExt, MemoryCache, Ttl};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct User { id: u64, name: String }
///
/// let cache = MemoryCache::new();
/// let user = User { id: 1, name: "Ada".into() };
/// cache.set_json("app:user:1", &user, Ttl::secs(3600)).await?;
/// assert_eq!(cache.get_json::<User>("app:user:1").await?, Some(user));
/// # Ok(())
/// # }
/// ```
pub trait CacheExt: Cache {
    /// Reads `key` and decodes it from JSON.
    ///
    /// # Errors
    /// `Deserialize` (carrying the key) when the stored bytes are not a `T`; as [`Cache::get`].
    fn get_json<'a, T>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a
    where
        T: DeserializeOwned + 'a,
    {
        async move {
            match self.get(key).await? {
                None => Ok(None),
                Some(bytes) => decode_json(key, &bytes).map(Some),
            }
        }
    }

    /// Encodes `value` as JSON and writes it at `key`.
    ///
    /// # Errors
    /// `Serialize` when `value` cannot be encoded (a map with non-string keys, say); as
    /// [`Cache::set`].
    fn set_json<'a, T>(
        &'a self,
        key: &'a str,
        value: &'a T,
        ttl: Ttl,
    ) -> impl Future<Output = Result<()>> + Send + 'a
    where
        T: Serialize + Sync + ?Sized,
    {
        async move {
            let bytes = encode_json(key, value)?;
            self.set(key, bytes, ttl).await
        }
    }

    /// Reads `key` as UTF-8 text.
    ///
    /// # Errors
    /// `Deserialize` (carrying the key) when the stored bytes are not UTF-8; as [`Cache::get`].
    fn get_str<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<String>>> + Send + 'a {
        async move {
            match self.get(key).await? {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes.into()).map(Some).map_err(|e| {
                    Error::new(ErrorKind::Deserialize, "the stored value is not UTF-8")
                        .with_key(key)
                        .with_source(e)
                }),
            }
        }
    }

    /// Writes `value` at `key` as UTF-8 text.
    ///
    /// # Errors
    /// As [`Cache::set`].
    fn set_str<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Ttl,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        self.set(key, Bytes::copy_from_slice(value.as_bytes()), ttl)
    }
}

impl<C: Cache + ?Sized> CacheExt for C {}

/// Decodes a cached JSON value, naming the key on failure.
pub(crate) fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Deserialize,
            "the stored value is not valid JSON for this type",
        )
        .with_key(key)
        .with_source(e)
    })
}

/// Encodes a value as JSON, naming the key on failure.
pub(crate) fn encode_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Bytes> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        Error::new(ErrorKind::Serialize, "the value cannot be encoded as JSON")
            .with_key(key)
            .with_source(e)
    })
}
