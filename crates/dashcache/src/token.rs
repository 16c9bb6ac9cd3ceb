//! [`OneTimeTokens`]: the OAuth `state` pattern — a token issued with a payload, good for
//! exactly one `consume`.
//!
//! The Python original read the state and deleted it in two steps (a replay could slip in
//! between) under two different key formats. Here `consume` is the cache's atomic
//! [`take`](crate::Cache::take): of any number of concurrent consumers exactly one gets the
//! payload. It fails closed: a cache error is an error, never "valid".
//!
//! Tokens are 256 random bits from the OS. The cache key is a keyed hash of the token
//! ([`Keys::opaque`]), so read access to the cache does not reveal usable tokens.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Ttl};
use crate::error::{Error, ErrorKind, Result};
use crate::ext::{decode_json, encode_json};
use crate::key::Keys;
use crate::session::random_token;

/// The longest string `consume` looks up; anything longer cannot be one of our tokens.
const MAX_TOKEN_LEN: usize = 128;

/// One-time tokens carrying a payload of type `T`. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use std::sync::Arc;
/// use dashcache::{Keys, MemoryCache, Ttl, token::OneTimeTokens};
///
/// let keys = Keys::new("app", ["oauth_state"])?;
/// let states = OneTimeTokens::<String>::new(Arc::new(MemoryCache::new()), keys, "oauth_state");
/// let state = states.issue(&"user-1:schwab".to_owned(), Ttl::secs(600)).await?;
/// assert_eq!(states.consume(&state).await?.as_deref(), Some("user-1:schwab"));
/// assert_eq!(states.consume(&state).await?, None, "a replay finds nothing");
/// # Ok(())
/// # }
/// ```
pub struct OneTimeTokens<T> {
    cache: Arc<dyn Cache>,
    keys: Keys,
    namespace: String,
    _payload: PhantomData<fn() -> T>,
}

impl<T> Clone for OneTimeTokens<T> {
    fn clone(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            keys: self.keys.clone(),
            namespace: self.namespace.clone(),
            _payload: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for OneTimeTokens<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneTimeTokens")
            .field("cache", &self.cache)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> OneTimeTokens<T> {
    /// Tokens under `namespace`, which `keys` must declare.
    pub fn new(cache: Arc<dyn Cache>, keys: Keys, namespace: impl Into<String>) -> Self {
        Self {
            cache,
            keys,
            namespace: namespace.into(),
            _payload: PhantomData,
        }
    }

    fn key(&self, token: &str) -> Result<String> {
        self.keys
            .key([self.namespace.as_str(), &self.keys.opaque(token)])
    }

    /// Issues a token for `payload`, valid for `ttl` or until consumed.
    ///
    /// # Errors
    /// `Serialize` for a payload that cannot be encoded; `InvalidArgument` for a zero TTL or
    /// [`Ttl::Persist`] (a token must expire); cache errors.
    pub async fn issue(&self, payload: &T, ttl: Ttl) -> Result<String> {
        if ttl == Ttl::Persist {
            return Err(Error::invalid_argument("a one-time token must expire"));
        }
        let token = random_token::<32>()?;
        let key = self.key(&token)?;
        let value = encode_json(&key, payload)?;
        // 256 random bits do not collide; refusing to overwrite costs nothing and rules it out.
        if !self.cache.set_if_absent(&key, value, ttl).await? {
            return Err(Error::new(
                ErrorKind::Backend,
                "a fresh token collided with a live one",
            ));
        }
        Ok(token)
    }

    /// The payload of `token` if it is live and not consumed yet; consuming it. `None` for
    /// unknown, expired, already consumed or malformed tokens.
    ///
    /// # Errors
    /// Cache errors (fail closed: the caller must treat them as "not valid"); `Deserialize`
    /// when the stored payload is not a `T`.
    pub async fn consume(&self, token: &str) -> Result<Option<T>> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let key = self.key(token)?;
        match self.cache.take(&key).await? {
            Some(bytes) => decode_json(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }
}
