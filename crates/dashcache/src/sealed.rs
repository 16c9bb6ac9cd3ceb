//! [`Sealed<C>`]: values encrypted with AES-256-GCM before they reach the cache.
//!
//! The guide warns against caching sensitive data in plain text; sessions and one-time tokens
//! are such data. `Sealed` wraps any [`Cache`](crate::Cache) and encrypts every value it writes:
//!
//! - the cache key is bound as associated data, so a value copied to another key does not
//!   decrypt;
//! - a tampered value is an error ([`ErrorKind::Deserialize`]), never garbage;
//! - each value names the key it was sealed with, so during a rotation values sealed with a
//!   previous key still open while new ones use the current key.
//!
//! Sealed: the values of `get` / `set` / `set_if_absent` / `take` / `get_many` / `set_many` and
//! of `write_if`'s `Set` and `Replace`. Not sealed: set members (they are ids for indexes, and
//! sets need to compare them) and counters (`increment` works on plain integers).
//!
//! Layout: version (1) · key id · 96-bit random nonce · ciphertext and tag. Random nonces are
//! safe for about 2³² values per key: rotate keys well before that.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::codec::{Encoded, ValueCodec};
use crate::error::{Error, ErrorKind, Result};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 2 + NONCE_LEN;

/// The sealing keys: one current key that seals, and previous keys that still open values
/// during a rotation. Each has a one-byte id, written into every value it seals.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<[(u8, Aes256Gcm)]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring whose current key is `key`, with id `id`.
    pub fn new(id: u8, key: &[u8; 32]) -> Self {
        Self {
            keys: Arc::from(vec![(id, Aes256Gcm::new(key.into()))]),
        }
    }

    /// Adds a previous key, used only to open values sealed with it.
    ///
    /// # Errors
    /// `InvalidArgument` when `id` is already in the keyring.
    pub fn with_previous(self, id: u8, key: &[u8; 32]) -> Result<Self> {
        if self.keys.iter().any(|(existing, _)| *existing == id) {
            return Err(Error::invalid_argument(format!(
                "seal key id {id} appears twice"
            )));
        }
        let mut keys = self.keys.to_vec();
        keys.push((id, Aes256Gcm::new(key.into())));
        Ok(Self {
            keys: Arc::from(keys),
        })
    }

    /// Parses `id:base64key[,id:base64key…]` (the current key first), the format of the
    /// `CACHE_SEAL_KEYS` setting. Keys are 32 bytes, in standard base64.
    ///
    /// ```
    /// let spec = "2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=,1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    /// let keyring = dashcache::sealed::Keyring::parse(spec)?;
    /// assert_eq!(keyring.current_id(), 2);
    /// # Ok::<(), dashcache::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidArgument` naming what is wrong (never echoing a key).
    pub fn parse(spec: &str) -> Result<Self> {
        let mut keyring: Option<Self> = None;
        for (i, part) in spec.split(',').map(str::trim).enumerate() {
            let (id, key) = part.split_once(':').ok_or_else(|| {
                Error::invalid_argument(format!("seal key #{} is not `id:base64key`", i + 1))
            })?;
            let id: u8 = id.trim().parse().map_err(|_| {
                Error::invalid_argument(format!("seal key #{} has an id outside 0–255", i + 1))
            })?;
            let bytes = STANDARD.decode(key.trim()).map_err(|_| {
                Error::invalid_argument(format!("seal key {id} is not valid base64"))
            })?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| Error::invalid_argument(format!("seal key {id} is not 32 bytes")))?;
            keyring = Some(match keyring {
                None => Self::new(id, &key),
                Some(k) => k.with_previous(id, &key)?,
            });
        }
        keyring.ok_or_else(|| Error::invalid_argument("no seal key given"))
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> u8 {
        self.keys.first().map_or(0, |(id, _)| *id)
    }

    /// Seals `value` with the current key, bound to `key` (associated data: the value opens
    /// only under the same `key`). What [`Sealed`] stores; usable on its own for secrets kept
    /// elsewhere, e.g. credentials in a database row bound to the row's id.
    ///
    /// # Errors
    /// `Backend` when the OS random source fails; `Serialize` when encryption fails.
    pub fn seal(&self, key: &str, value: &[u8]) -> Result<Bytes> {
        let (id, cipher) = self
            .keys
            .first()
            .ok_or_else(|| Error::invalid_argument("the keyring is empty"))?;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.try_fill_bytes(&mut nonce).map_err(|e| {
            Error::new(ErrorKind::Backend, "the OS random source failed").with_source(e)
        })?;
        let payload = Payload {
            msg: value,
            aad: key.as_bytes(),
        };
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| {
                Error::new(ErrorKind::Serialize, "the value could not be sealed").with_key(key)
            })?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(VERSION);
        out.push(*id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Bytes::from(out))
    }

    /// Opens what [`seal`](Self::seal) sealed under `key`, with whichever key of the ring
    /// sealed it. The plaintext is a `Vec` so that a caller holding a secret can zero it
    /// (e.g. `zeroize::Zeroizing::new(ring.open(…)?)`).
    ///
    /// # Errors
    /// `Deserialize` when it is not sealed, was sealed with an unknown key, was tampered with,
    /// or was sealed under another `key`.
    pub fn open(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let fail = |why: String| Error::new(ErrorKind::Deserialize, why).with_key(key);
        let [version, id, rest @ ..] = sealed else {
            return Err(fail("the value is not sealed".into()));
        };
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(fail("the value is not sealed".into()));
        }
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .ok_or_else(|| {
                fail(format!(
                    "the value was sealed with an unknown key (id {id})"
                ))
            })?;
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: key.as_bytes(),
        };
        cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| {
                fail(
                    "the sealed value failed authentication (tampered, or moved from another key)"
                        .into(),
                )
            })
    }
}

impl ValueCodec for Keyring {
    fn encode_value(&self, key: &str, value: &Bytes) -> Result<Bytes> {
        self.seal(key, value)
    }

    fn decode_value(&self, key: &str, stored: Bytes) -> Result<Bytes> {
        self.open(key, &stored).map(Bytes::from)
    }
}

/// Encrypts values on their way into `C` and decrypts them on the way out: `C` with the
/// [`Keyring`] as its [codec](crate::codec).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use dashcache::{Cache, MemoryCache, Ttl, sealed::{Keyring, Sealed}};
///
/// let cache = Sealed::new(MemoryCache::new(), Keyring::new(1, &[7u8; 32]));
/// cache.set("app:session:1", "secret".into(), Ttl::secs(60)).await?;
/// assert_eq!(cache.get("app:session:1").await?.as_deref(), Some(&b"secret"[..]));
/// assert_ne!(cache.inner().get("app:session:1").await?.as_deref(), Some(&b"secret"[..]));
/// # Ok(())
/// # }
/// ```
pub type Sealed<C> = Encoded<C, Keyring>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_bad_specs_without_echoing_keys() {
        let good = STANDARD.encode([1u8; 32]);
        assert!(Keyring::parse(&format!("1:{good}")).is_ok());
        for bad in [
            String::new(),
            "1".into(),
            format!("300:{good}"),
            "1:not-base64!".into(),
            format!("1:{}", STANDARD.encode([1u8; 16])),
            format!("1:{good},1:{good}"),
        ] {
            let err = Keyring::parse(&bad).err();
            assert_eq!(
                err.as_ref().map(Error::kind),
                Some(ErrorKind::InvalidArgument),
                "{bad}"
            );
            assert!(
                !err.map(|e| e.to_string())
                    .unwrap_or_default()
                    .contains(&good)
            );
        }
    }

    #[test]
    fn seal_and_open_bind_the_key() {
        let ring = Keyring::new(3, &[9u8; 32]);
        let sealed = ring.seal("k1", b"payload").unwrap_or_default();
        assert_eq!(sealed[1], 3);
        assert_eq!(
            ring.open("k1", &sealed).ok().as_deref(),
            Some(&b"payload"[..])
        );
        assert!(ring.open("k2", &sealed).is_err());
        assert_ne!(
            ring.seal("k1", b"payload").unwrap_or_default(),
            sealed,
            "fresh nonce each time"
        );
    }
}
