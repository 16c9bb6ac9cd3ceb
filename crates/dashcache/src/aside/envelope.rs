//! The stored form of a cache-aside value: a format tag, the instant it stops being fresh, the
//! versions of its tags (tagged values only), and its JSON. Freshness travels with the value,
//! so a stale window works the same on every backend and in every process.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};

/// Format tag of a stored entry: "dc" and version 1.
pub(super) const TAG: [u8; 4] = *b"dc\x01\x00";

/// Format tag of a tagged entry: "dc" and version 2 (a count and the tag versions follow the
/// freshness).
const TAGGED: [u8; 4] = *b"dc\x02\x00";

/// The most tags one value may carry.
pub(super) const MAX_TAGS: usize = 32;

pub(super) struct Envelope<V> {
    pub(super) value: V,
    pub(super) fresh_until: u64,
    /// The versions of the lookup's tags when the value's load began, in the lookup's order.
    pub(super) tags: Vec<i64>,
}

impl<V> Envelope<V> {
    pub(super) fn fresh_at(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until
    }
}

pub(super) fn encode<V: Serialize>(
    key: &str,
    value: &V,
    fresh_until: u64,
    tags: &[i64],
) -> crate::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64 + tags.len() * 8);
    if tags.is_empty() {
        buf.put_slice(&TAG);
        buf.put_u64(fresh_until);
    } else {
        let count = u8::try_from(tags.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_TAGS)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "a value carries at most 32 tags",
                )
                .with_key(key)
            })?;
        buf.put_slice(&TAGGED);
        buf.put_u64(fresh_until);
        buf.put_u8(count);
        for version in tags {
            buf.put_i64(*version);
        }
    }
    let mut writer = buf.writer();
    serde_json::to_writer(&mut writer, value).map_err(|e| {
        Error::new(ErrorKind::Serialize, "the value cannot be encoded as JSON")
            .with_key(key)
            .with_source(e)
    })?;
    Ok(writer.into_inner().freeze())
}

pub(super) fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> crate::Result<Envelope<V>> {
    let corrupt = || {
        Error::new(
            ErrorKind::Deserialize,
            "the cached entry is not a cache-aside entry",
        )
        .with_key(key)
    };
    let (tag, rest) = bytes.split_at_checked(TAG.len()).ok_or_else(corrupt)?;
    let tagged = match tag {
        t if t == TAG => false,
        t if t == TAGGED => true,
        _ => return Err(corrupt()),
    };
    let (when, mut rest) = rest.split_at_checked(8).ok_or_else(corrupt)?;
    let fresh_until = u64::from_be_bytes(when.try_into().map_err(|_| corrupt())?);
    let mut tags = Vec::new();
    if tagged {
        let (count, after) = rest.split_first().ok_or_else(corrupt)?;
        rest = after;
        for _ in 0..*count {
            let (version, after) = rest.split_at_checked(8).ok_or_else(corrupt)?;
            tags.push(i64::from_be_bytes(
                version.try_into().map_err(|_| corrupt())?,
            ));
            rest = after;
        }
    }
    let value = crate::ext::decode_json(key, rest)?;
    Ok(Envelope {
        value,
        fresh_until,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_foreign_bytes() {
        let bytes = encode("k", &vec![1, 2, 3], 42, &[]).unwrap_or_default();
        let env = decode::<Vec<i32>>("k", &bytes).ok();
        assert_eq!(env.as_ref().map(|e| e.value.clone()), Some(vec![1, 2, 3]));
        assert_eq!(env.map(|e| e.fresh_until), Some(42));
        for foreign in [&b""[..], b"dc", b"[1,2,3]", b"dc\x01\x00\x00\x00"] {
            let err = decode::<Vec<i32>>("k", foreign).err();
            assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Deserialize));
        }
        let mut wrong_type = TAG.to_vec();
        wrong_type.extend_from_slice(&u64::MAX.to_be_bytes());
        wrong_type.extend_from_slice(b"\"text\"");
        assert!(decode::<Vec<i32>>("k", &wrong_type).is_err());
    }

    #[test]
    fn tagged_envelopes_carry_their_versions() {
        let bytes = encode("k", &"v", 7, &[-1, 2]).unwrap_or_default();
        let env = decode::<String>("k", &bytes).ok();
        assert_eq!(env.as_ref().map(|e| e.tags.clone()), Some(vec![-1, 2]));
        assert_eq!(
            env.map(|e| (e.value, e.fresh_until)),
            Some(("v".to_owned(), 7))
        );
        // Truncated in the versions: corrupt, not a panic.
        assert!(decode::<String>("k", &bytes[..20]).is_err());
        let too_many = vec![0; MAX_TAGS + 1];
        assert!(encode("k", &"v", 7, &too_many).is_err());
    }
}
