//! What a session is to the store: [`SessionRecord`], and the ready-made [`SessionData`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

use crate::aside::CachedValue;
use crate::error::{Error, ErrorKind, Result};

/// A session the store can keep: any serde type that names its handle, its user and its times.
pub trait SessionRecord: CachedValue {
    /// The session's handle, from [`SessionStore::issue`](super::SessionStore::issue): what
    /// it is kept and listed under. Never the bearer token, which is stored nowhere.
    fn session_id(&self) -> &str;
    /// The user it belongs to.
    fn user_id(&self) -> &str;
    /// When it was created; a revocation refuses sessions created at or before it.
    fn created_at(&self) -> SystemTime;
    /// When it stops being valid; it is not kept in the cache past this.
    fn expires_at(&self) -> SystemTime;
    /// Records activity at `at` from `ip` (for [`SessionStore::touch`]).
    ///
    /// [`SessionStore::touch`]: super::SessionStore::touch
    fn record_activity(&mut self, at: SystemTime, ip: Option<IpAddr>);
}

/// 128 bits from the operating system's random source, as 22 URL-safe characters: the secret
/// part of a session token ([`SessionStore::issue`](super::SessionStore::issue)), or any id
/// that must not be guessed.
///
/// # Errors
/// [`ErrorKind::Backend`] in the very unlikely case the OS cannot supply randomness; an id is
/// never made from a weaker source.
pub fn new_session_id() -> Result<String> {
    random_token::<16>()
}

/// `N` random bytes from the OS, URL-safe base64 without padding.
pub(crate) fn random_token<const N: usize>() -> Result<String> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        Error::new(ErrorKind::Backend, "the OS random source failed").with_source(e)
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What web sessions usually hold. Times are stored as Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionData {
    /// The session's handle (never its bearer token).
    pub id: String,
    /// The user it belongs to.
    pub user_id: String,
    /// When it was created.
    #[serde(with = "unix_millis")]
    pub created_at: SystemTime,
    /// When it expires.
    #[serde(with = "unix_millis")]
    pub expires_at: SystemTime,
    /// The last request seen.
    #[serde(with = "unix_millis")]
    pub last_activity: SystemTime,
    /// The client address of the last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A device name or fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A coarse location (city, country).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The identity or data providers the session is linked to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// Anything else the service keeps with a session.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A new session's bearer token, for the client (once), and the handle the store keeps the
/// session under. `Debug` shows the handle only.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Issued {
    /// The bearer token: give it to the client and forget it.
    pub token: String,
    /// What the session is stored, listed and revoked under.
    pub handle: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"<secret>")
            .field("handle", &self.handle)
            .finish()
    }
}

impl SessionData {
    /// A session with `handle` (from [`SessionStore::issue`](super::SessionStore::issue)) for
    /// `user_id`, created now, valid for `lifetime`.
    pub fn new(handle: impl Into<String>, user_id: impl Into<String>, lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            id: handle.into(),
            user_id: user_id.into(),
            created_at: now,
            expires_at: now + lifetime,
            last_activity: now,
            ip: None,
            user_agent: None,
            device: None,
            location: None,
            providers: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Sets the client address.
    #[must_use]
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }
}

impl SessionRecord for SessionData {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn user_id(&self) -> &str {
        &self.user_id
    }
    fn created_at(&self) -> SystemTime {
        self.created_at
    }
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
    fn record_activity(&mut self, at: SystemTime, ip: Option<IpAddr>) {
        self.last_activity = at;
        if ip.is_some() {
            self.ip = ip;
        }
    }
}

/// Milliseconds since the Unix epoch (0 for earlier instants).
pub(crate) fn to_unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serde helper: a `SystemTime` as Unix milliseconds.
mod unix_millis {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::to_unix_millis(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| serde::de::Error::custom("timestamp out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_url_safe_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..1000).filter_map(|_| new_session_id().ok()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 22);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
        }
    }

    #[test]
    fn times_survive_a_round_trip_at_millisecond_precision() {
        let s = SessionData::new("h", "u1", Duration::from_secs(60));
        let json = serde_json::to_string(&s).unwrap_or_default();
        let back: SessionData = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            to_unix_millis(back.created_at),
            to_unix_millis(s.created_at)
        );
        assert!(
            !json.contains("user_agent"),
            "absent options are left out: {json}"
        );
    }
}
