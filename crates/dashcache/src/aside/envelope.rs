//! The stored form of a cache-aside value: a format tag, the instant it stops being fresh, and
//! its JSON. Freshness travels with the value, so a stale window works the same on every
//! backend and in every process.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};

/// Format tag of a stored entry: "dc" and version 1.
pub(super) const TAG: [u8; 4] = *b"dc\x01\x00";

pub(super) struct Envelope<V> {
    pub(super) value: V,
    pub(super) fresh_until: u64,
}

impl<V> Envelope<V> {
    pub(super) fn fresh_at(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until
    }
}

pub(super) fn encode<V: Serialize>(key: &str, value: &V, fresh_until: u64) -> crate::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_slice(&TAG);
    buf.put_u64(fresh_until);
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
    if tag != TAG {
        return Err(corrupt());
    }
    let (when, json) = rest.split_at_checked(8).ok_or_else(corrupt)?;
    let fresh_until = u64::from_be_bytes(when.try_into().map_err(|_| corrupt())?);
    let value = crate::ext::decode_json(key, json)?;
    Ok(Envelope { value, fresh_until })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_foreign_bytes() {
        let bytes = encode("k", &vec![1, 2, 3], 42).unwrap_or_default();
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
}
