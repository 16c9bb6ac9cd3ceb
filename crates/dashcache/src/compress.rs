//! [`Compressed<C>`]: large values compressed with zstd before they reach the cache.
//!
//! Redis memory and network bandwidth are paid per byte, and JSON (transaction pages, API
//! responses) shrinks 4–10× under zstd. `Compressed` wraps any [`Cache`] and compresses every
//! value of at least [`Compression::min_bytes`]; smaller values, and values that do not shrink,
//! are stored as they are.
//!
//! - **Format.** A compressed value is `\0dcz` followed by one zstd frame that declares its
//!   content size. A plain value written by `Compressed` that happens to start with the `\0dc`
//!   marker is stored behind `\0dcp`, so no plain value is ever misread. Values written before
//!   compression was turned on (no marker) read back unchanged, so a cache can switch it on
//!   (or off: see [`Compressed::passthrough`]) without a flush.
//! - **Limits.** The value-size limit ([`Compression::max_value_bytes`], 8 MiB by default,
//!   the backends' own default) applies to the *uncompressed* size: a value too large to
//!   store plain is refused even if it compresses well, so turning compression off never
//!   makes a stored value unreadable.
//! - **Bombs.** A frame whose declared size is above the limit, that declares no size, or that
//!   inflates past what it declared is refused with a typed error before the memory is
//!   allocated: [`ErrorKind::TooLarge`] for the first, [`ErrorKind::Deserialize`] for the
//!   others.
//!
//! Composes with [`Sealed`](crate::sealed::Sealed): compress, then seal —
//! `Compressed::new(Sealed::new(cache, keyring))` — since ciphertext does not compress.
//!
//! Compressed: the values of `get` / `set` / `set_if_absent` / `take` / `get_many` /
//! `set_many` and of `write_if`'s `Set` and `Replace`. Not compressed: set members and
//! counters, like `Sealed`.

use std::cell::RefCell;

use bytes::Bytes;

use crate::cache::{Cache, Limits};
use crate::codec::{Encoded, ValueCodec};
use crate::error::{Error, ErrorKind, Result};
use crate::vars;

/// The marker every value `Compressed` tags starts with: a NUL byte, which no JSON or text
/// value begins with.
const MARKER: &[u8; 3] = b"\0dc";
/// A zstd frame follows.
const ZSTD: u8 = b'z';
/// A plain value that started with the marker follows.
const ESCAPED: u8 = b'p';
const TAG_LEN: usize = MARKER.len() + 1;

/// How [`Compressed`] compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// Values shorter than this are stored plain (default 1 KiB): below it the frame header
    /// and the CPU cost outweigh the bytes saved.
    pub min_bytes: usize,
    /// The zstd level, 1–19 (default 3: zstd's own default, about 300 MB/s on one core).
    pub level: i32,
    /// The largest value, uncompressed (default 8 MiB, the backends' default limit).
    pub max_value_bytes: usize,
    /// False: values are written plain (and still read compressed); see
    /// [`reading_only`](Self::reading_only).
    writes: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            min_bytes: vars::CACHE_COMPRESS_MIN_BYTES.default as usize,
            level: vars::CACHE_COMPRESS_LEVEL.default as i32,
            max_value_bytes: Limits::default().max_value_bytes,
            writes: true,
        }
    }
}

impl Compression {
    /// Sets the threshold below which values are stored plain.
    #[must_use]
    pub fn with_min_bytes(mut self, bytes: usize) -> Self {
        self.min_bytes = bytes;
        self
    }

    /// Sets the zstd level (clamped to 1–19).
    #[must_use]
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level.clamp(1, 19);
        self
    }

    /// Sets the largest value, uncompressed.
    #[must_use]
    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Reads compressed values but writes plain ones (what
    /// [`Compressed::passthrough`](Encoded::passthrough) uses).
    #[must_use]
    pub fn reading_only(mut self) -> Self {
        self.writes = false;
        self
    }

    /// The stored form of `value` under `key`, compressed (whether or not this configuration
    /// writes compressed values: that is for the [`ValueCodec`] to decide).
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`] when `value` is above the limit; [`ErrorKind::Serialize`] when
    /// zstd fails.
    pub fn encode(&self, key: &str, value: &[u8]) -> Result<Bytes> {
        Limits::default()
            .with_max_value_bytes(self.max_value_bytes)
            .check_value(key, value)?;
        if value.len() >= self.min_bytes.max(TAG_LEN + 1) {
            let compressed = COMPRESSOR.with(|c| {
                let mut c = c.borrow_mut();
                if c.as_ref().is_none_or(|(level, _)| *level != self.level) {
                    *c = Some((self.level, zstd::bulk::Compressor::new(self.level)?));
                }
                let mut out =
                    Vec::with_capacity(TAG_LEN + zstd::zstd_safe::compress_bound(value.len()));
                out.extend_from_slice(MARKER);
                out.push(ZSTD);
                match c.as_mut() {
                    Some((_, compressor)) => {
                        let frame = compressor.compress(value)?;
                        out.extend_from_slice(&frame);
                        Ok(out)
                    }
                    None => Err(std::io::Error::other("no compressor")),
                }
            });
            let compressed = compressed.map_err(|e| {
                Error::new(ErrorKind::Serialize, "zstd could not compress the value")
                    .with_key(key)
                    .with_source(e)
            })?;
            // Only when it pays: random or already-compressed bytes grow a little.
            if compressed.len() < value.len() {
                return Ok(Bytes::from(compressed));
            }
        }
        if value.starts_with(MARKER) {
            let mut out = Vec::with_capacity(TAG_LEN + value.len());
            out.extend_from_slice(MARKER);
            out.push(ESCAPED);
            out.extend_from_slice(value);
            return Ok(Bytes::from(out));
        }
        Ok(Bytes::copy_from_slice(value))
    }

    /// The value whose stored form is `stored`, under `key`.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`] when the frame declares more than the limit;
    /// [`ErrorKind::Deserialize`] when it is corrupt, declares no size, or inflates past what
    /// it declared.
    pub fn decode(&self, key: &str, stored: Bytes) -> Result<Bytes> {
        let Some(rest) = stored.strip_prefix(MARKER) else {
            return Ok(stored);
        };
        let corrupt = |why: &str| {
            Error::new(
                ErrorKind::Deserialize,
                format!("the compressed value is corrupt: {why}"),
            )
            .with_key(key)
        };
        match rest.first() {
            Some(&ESCAPED) => Ok(stored.slice(TAG_LEN..)),
            Some(&ZSTD) => {
                let frame = &rest[1..];
                let declared = match zstd::zstd_safe::get_frame_content_size(frame) {
                    Ok(Some(n)) => n,
                    Ok(None) => return Err(corrupt("the frame does not declare its size")),
                    Err(_) => return Err(corrupt("not a zstd frame")),
                };
                let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                if declared > self.max_value_bytes {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!(
                            "the compressed value inflates to {declared} bytes, the limit is {}",
                            self.max_value_bytes
                        ),
                    )
                    .with_key(key));
                }
                // The capacity is what the frame declared, already bounded: zstd stops with an
                // error rather than write past it.
                let out = DECOMPRESSOR.with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    match d.as_mut() {
                        Some(d) => d.decompress(frame, declared),
                        None => Err(std::io::Error::other("no decompressor")),
                    }
                });
                match out {
                    Ok(out) if out.len() == declared => Ok(Bytes::from(out)),
                    Ok(_) => Err(corrupt("its size differs from the size it declares")),
                    Err(_) => Err(corrupt("zstd refused the frame")),
                }
            }
            _ => Ok(stored),
        }
    }
}

thread_local! {
    // A zstd context costs a few hundred KiB to set up: one per thread, reused.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl ValueCodec for Compression {
    fn encode_value(&self, key: &str, value: &Bytes) -> Result<Bytes> {
        if self.writes {
            return self.encode(key, value);
        }
        // Reading only: plain, but a value that looks tagged is escaped, or it would not read
        // back as itself.
        Limits::default()
            .with_max_value_bytes(self.max_value_bytes)
            .check_value(key, value)?;
        if value.starts_with(MARKER) {
            return Compression {
                min_bytes: usize::MAX,
                ..*self
            }
            .encode(key, value);
        }
        Ok(value.clone())
    }

    fn decode_value(&self, key: &str, stored: Bytes) -> Result<Bytes> {
        self.decode(key, stored)
    }
}

/// Compresses large values on their way into `C` and inflates them on the way out: `C` with
/// a [`Compression`] as its [codec](crate::codec).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use dashcache::{Cache, MemoryCache, Ttl, compress::{Compressed, Compression}};
///
/// let cache = Compressed::new(MemoryCache::new(), Compression::default());
/// let page = serde_json::to_vec(&vec!["a transaction"; 500]).unwrap_or_default();
/// cache.set("app:page:1", page.clone().into(), Ttl::secs(60)).await?;
/// assert_eq!(cache.get("app:page:1").await?.as_deref(), Some(&page[..]));
/// let stored = cache.inner().get("app:page:1").await?.unwrap_or_default();
/// assert!(stored.len() * 10 < page.len());
/// # Ok(())
/// # }
/// ```
pub type Compressed<C> = Encoded<C, Compression>;

impl<C: Cache> Encoded<C, Compression> {
    /// Reads compressed values but writes plain ones: the first step of turning compression
    /// off, or of a rolling upgrade whose old instances cannot read compressed values yet.
    pub fn passthrough(inner: C, config: Compression) -> Self {
        Self::new(inner, config.reading_only())
    }

    /// The configuration.
    pub fn config(&self) -> Compression {
        *self.codec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(n: usize) -> Vec<u8> {
        let rows: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"id": format!("t{i:06}"), "amount_cents": i * 37 % 10_000, "memo": "card payment"}))
            .collect();
        serde_json::to_vec(&rows).unwrap_or_default()
    }

    #[test]
    fn round_trips_and_shrinks_json() {
        let c = Compression::default();
        let value = json(200);
        let stored = c.encode("k", &value).unwrap_or_default();
        assert!(stored.starts_with(b"\0dcz"));
        assert!(
            stored.len() * 4 < value.len(),
            "{} of {}",
            stored.len(),
            value.len()
        );
        assert_eq!(c.decode("k", stored).ok().as_deref(), Some(&value[..]));
    }

    #[test]
    fn small_and_incompressible_values_stay_plain() {
        let c = Compression::default();
        assert_eq!(c.encode("k", b"short").ok().as_deref(), Some(&b"short"[..]));
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let stored = c.encode("k", &noise).unwrap_or_default();
        assert_eq!(c.decode("k", stored).ok().as_deref(), Some(&noise[..]));
    }

    #[test]
    fn a_plain_value_that_looks_tagged_reads_back_as_itself() {
        let c = Compression::default();
        for value in [&b"\0dcz"[..], b"\0dcp", b"\0dc", b"\0dczzzz-not-a-frame"] {
            let stored = c.encode("k", value).unwrap_or_default();
            assert_eq!(c.decode("k", stored).ok().as_deref(), Some(value));
        }
    }

    #[test]
    fn the_limit_is_on_the_uncompressed_size_and_bombs_are_refused() {
        let small = Compression::default().with_max_value_bytes(10_000);
        let zeros = vec![0u8; 20_000];
        assert_eq!(
            small.encode("k", &zeros).err().map(|e| e.kind()),
            Some(ErrorKind::TooLarge)
        );
        // A frame that declares 16 MiB of zeros: refused before anything is allocated.
        let big = Compression::default().with_max_value_bytes(usize::MAX);
        let bomb = big.encode("k", &vec![0u8; 1 << 24]).unwrap_or_default();
        assert!(bomb.len() < 4096, "{}", bomb.len());
        assert_eq!(
            Compression::default()
                .decode("k", bomb)
                .err()
                .map(|e| e.kind()),
            Some(ErrorKind::TooLarge)
        );
        // A streamed frame does not declare its size: refused, whatever it holds.
        let mut unsized_frame = b"\0dcz".to_vec();
        unsized_frame.extend(zstd::stream::encode_all(&b"hello"[..], 3).unwrap_or_default());
        assert_eq!(
            Compression::default()
                .decode("k", Bytes::from(unsized_frame))
                .err()
                .map(|e| e.kind()),
            Some(ErrorKind::Deserialize)
        );
        for corrupt in [&b"\0dcz"[..], b"\0dcz\x28\xb5\x2f\xfd", b"\0dczgarbage"] {
            assert_eq!(
                Compression::default()
                    .decode("k", Bytes::copy_from_slice(corrupt))
                    .err()
                    .map(|e| e.kind()),
                Some(ErrorKind::Deserialize),
                "{corrupt:?}"
            );
        }
    }
}
