//! [`SessionStore`]: session records in the cache, with a per-user index, for a service whose
//! database stays the source of truth (write-through).
//!
//! Keys, under the store's namespace (default `session`):
//!
//! | key | holds |
//! |---|---|
//! | `…:session:{T}:id:<handle>` | the session (JSON), TTL until it expires |
//! | `…:session:{U}:user:<user>` | the set of the user's session handles, TTL ≥ its longest session |
//! | `…:session:{U}:revoked:<user>` | when `revoke_all_for_user` last ran (Unix ms) |
//! | `…:session:{T}:deleted:<handle>` | a tombstone for the session's remaining lifetime |
//!
//! A session's bearer token is a secret: it is given to the client once, by
//! [`SessionStore::issue`], and never stored. The store keeps the session under its *handle*, a
//! keyed hash of the token (HMAC-SHA-256 with the [`Keys`] secret): keys, index members and the
//! stored record hold the handle, which can list and revoke a session but not authenticate as
//! it — [`get_by_token`](SessionStore::get_by_token) hashes what it is given.
//!
//! `{U}` is a hash tag derived from the user; `{T}` is the tag a token (and so its handle)
//! carries — the same `{U}` — so on Redis Cluster a session and everything its atomic steps
//! touch share one slot.
//!
//! The session and its index entry are written in one atomic step ([`Cache::write_if`]), under
//! two conditions that make revocation stick: no tombstone for the id, and no revocation of the
//! user at or after the session's creation. A `put` racing with a revoke — it read the session
//! from the database before the revoke and writes it after — is therefore refused, and one
//! that lands before the revoke's sweep is in the index the sweep reads.

mod data;

use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;

use bytes::Bytes;

pub use data::{Issued, SessionData, SessionRecord, new_session_id};
pub(crate) use data::{random_token, to_unix_millis};

use crate::cache::{Cache, Condition, Ttl, Write};
use crate::error::{Error, Result};
use crate::ext::{decode_json, encode_json};
use crate::key::Keys;

/// Length of the user hash tag in session ids and keys.
const TAG_LEN: usize = 8;

/// Sessions of type `S` in a [`Cache`]. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dashcache::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use dashcache::{Keys, MemoryCache, session::{SessionData, SessionStore}};
///
/// let keys = Keys::new("app", ["session"])?;
/// let store: SessionStore = SessionStore::new(Arc::new(MemoryCache::new()), keys);
/// let issued = store.issue("user-1")?; // the token goes to the client, once
/// let session = SessionData::new(&issued.handle, "user-1", Duration::from_secs(1800));
/// assert!(store.put(&session, None).await?);
/// assert!(store.get_by_token(&issued.token).await?.is_some());
/// // Listings show handles: they revoke, they do not authenticate.
/// assert_eq!(store.list_for_user("user-1").await?, vec![issued.handle.clone()]);
/// assert!(store.get_by_token(&issued.handle).await?.is_none());
/// assert_eq!(store.revoke_all_for_user("user-1").await?, 1);
/// assert!(store.get_by_token(&issued.token).await?.is_none());
/// # Ok(())
/// # }
/// ```
pub struct SessionStore<S = SessionData> {
    cache: Arc<dyn Cache>,
    keys: Keys,
    namespace: String,
    max_lifetime: Duration,
    clock: Clock,
    _session: PhantomData<fn() -> S>,
}

impl<S> Clone for SessionStore<S> {
    fn clone(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            keys: self.keys.clone(),
            namespace: self.namespace.clone(),
            max_lifetime: self.max_lifetime,
            clock: self.clock.clone(),
            _session: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for SessionStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("cache", &self.cache)
            .field("namespace", &self.namespace)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl<S: SessionRecord> SessionStore<S> {
    /// A store under the `session` namespace of `keys` (which must declare it), for sessions
    /// living at most 30 days.
    pub fn new(cache: Arc<dyn Cache>, keys: Keys) -> Self {
        Self {
            cache,
            keys,
            namespace: "session".to_owned(),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
            clock: Clock::system(),
            _session: PhantomData,
        }
    }

    /// Uses another declared namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The longest a session may live, creation to expiry (default 30 days). Revocation marks
    /// and tombstones are kept this long, which is what makes them final; a session that
    /// would outlive them is refused.
    #[must_use]
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The clock expiry and revocation times are read from (default: the system's).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The hash tag of `user`'s keys: 8 characters of a keyed hash of the id.
    fn user_tag(&self, user: &str) -> String {
        self.keys.opaque(user).chars().take(TAG_LEN).collect()
    }

    /// The hash tag a token or handle carries after its last `.`, when it has one.
    fn valid_tag(id: &str) -> Option<&str> {
        id.rsplit_once('.').map(|(_, tag)| tag).filter(|tag| {
            tag.len() == TAG_LEN
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    /// The hash tag of a session's keys: the one its handle carries, else the handle itself.
    fn id_tag(handle: &str) -> &str {
        Self::valid_tag(handle).unwrap_or(handle)
    }

    /// A new session for `user`: its bearer token — 128 random bits from the OS and the user's
    /// hash tag, `<22 characters>.<8 characters>` — to give to the client once, and the handle
    /// to keep the session under ([`SessionRecord::session_id`]). On Redis Cluster the tag keeps
    /// the session, its tombstone and its user's index in one slot.
    ///
    /// # Errors
    /// As [`new_session_id`].
    pub fn issue(&self, user: &str) -> Result<Issued> {
        let token = format!("{}.{}", new_session_id()?, self.user_tag(user));
        let handle = self.handle_of(&token);
        Ok(Issued { token, handle })
    }

    /// The handle a presented bearer `token` is kept under: a keyed hash of it, with the tag
    /// it carries. Any string has a handle; one the store did not issue finds nothing.
    pub fn handle_of(&self, token: &str) -> String {
        let hash = self.keys.opaque(token);
        let tag = match Self::valid_tag(token) {
            Some(tag) => tag.to_owned(),
            // Never the token itself: a foreign token's tag comes from its hash.
            None => hash.chars().take(TAG_LEN).collect(),
        };
        format!("{hash}.{tag}")
    }

    /// The session a bearer `token` authenticates, if it is in the cache and has not expired.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_by_token(&self, token: &str) -> Result<Option<S>> {
        self.get(&self.handle_of(token)).await
    }

    /// The key of the session with `handle` (for inspection and tests).
    ///
    /// # Errors
    /// `InvalidKey` for a malformed handle.
    pub fn session_key(&self, handle: &str) -> Result<String> {
        self.id_key("id", handle)
    }

    /// The key of `user`'s index (for inspection and tests).
    ///
    /// # Errors
    /// `InvalidKey` for a malformed user id.
    pub fn index_key(&self, user: &str) -> Result<String> {
        self.user_key("user", user)
    }

    /// What the database's log invalidates when the session with `handle` is revoked or
    /// deleted there (see [`crate::coherent`]), in the order to apply them: a tombstone until
    /// `expires_at`, so a copy read from the database before the revocation cannot be stored
    /// again after it, then the session itself.
    ///
    /// # Errors
    /// `InvalidKey` for a malformed handle.
    pub fn invalidation(
        &self,
        handle: &str,
        expires_at: SystemTime,
    ) -> Result<[crate::coherent::Target; 2]> {
        let left = expires_at
            .duration_since(self.clock.wall())
            .unwrap_or_default()
            .max(Duration::from_secs(1))
            .min(self.max_lifetime);
        // The tombstone first: a `put` that lands between the two steps is refused.
        Ok([
            crate::coherent::Target::version(self.id_key("deleted", handle)?, Ttl::After(left)),
            crate::coherent::Target::key(self.id_key("id", handle)?),
        ])
    }

    fn id_key(&self, kind: &str, id: &str) -> Result<String> {
        self.keys
            .tagged_key(Self::id_tag(id), [self.namespace.as_str(), kind, id])
    }

    fn user_key(&self, kind: &str, user: &str) -> Result<String> {
        self.keys
            .tagged_key(&self.user_tag(user), [self.namespace.as_str(), kind, user])
    }

    /// Stores `session` under its handle and adds the handle to its user's index, in one
    /// atomic step.
    ///
    /// The TTL is `ttl`, or the time left until the session's `expires_at` — never more than
    /// that. Returns `false`, storing nothing, when the session has already expired, when it
    /// was deleted, or when its user's sessions were revoked at or after its creation.
    ///
    /// # Errors
    /// `InvalidArgument` for a session meant to live longer than the maximum lifetime;
    /// `InvalidKey` for an empty or malformed handle or user; cache errors.
    pub async fn put(&self, session: &S, ttl: Option<Ttl>) -> Result<bool> {
        let now = self.clock.wall();
        let Ok(left) = session.expires_at().duration_since(now) else {
            return Ok(false);
        };
        if left.is_zero() {
            return Ok(false);
        }
        let lifetime = session
            .expires_at()
            .duration_since(session.created_at())
            .unwrap_or_default();
        if lifetime > self.max_lifetime {
            return Err(Error::invalid_argument(format!(
                "a session may live at most {} s, this one {} s",
                self.max_lifetime.as_secs(),
                lifetime.as_secs()
            )));
        }
        let ttl = match ttl {
            Some(Ttl::After(d)) if d < left => Ttl::After(d),
            _ => Ttl::After(left),
        };
        let id = session.session_id();
        let user = session.user_id();
        let session_key = self.id_key("id", id)?;
        let index_key = self.user_key("user", user)?;
        let tombstone = self.id_key("deleted", id)?;
        let revoked = self.user_key("revoked", user)?;
        let created = i64::try_from(to_unix_millis(session.created_at())).unwrap_or(i64::MAX);
        let value = encode_json(&session_key, session)?;
        let member = [Bytes::copy_from_slice(id.as_bytes())];
        self.cache
            .write_if(
                &[
                    Condition::Absent(&tombstone),
                    Condition::MissingOrBelow(&revoked, created),
                ],
                &[
                    Write::Set(&session_key, value, ttl),
                    Write::SetAdd(&index_key, &member, ttl),
                ],
            )
            .await
    }

    /// The session with `handle`, if it is in the cache and has not expired. Authenticate a
    /// client with [`get_by_token`](Self::get_by_token), never with this.
    ///
    /// # Errors
    /// `Deserialize` when the stored session does not decode as `S`; cache errors.
    pub async fn get(&self, handle: &str) -> Result<Option<S>> {
        let key = self.id_key("id", handle)?;
        let Some(bytes) = self.cache.get(&key).await? else {
            return Ok(None);
        };
        let session: S = decode_json(&key, &bytes)?;
        Ok((session.expires_at() > self.clock.wall()).then_some(session))
    }

    /// Whether the session with `handle` is in the cache.
    ///
    /// # Errors
    /// Cache errors.
    pub async fn exists(&self, handle: &str) -> Result<bool> {
        self.cache.exists(&self.id_key("id", handle)?).await
    }

    /// Records activity on the session with `handle` at `at` from `ip`, keeping its TTL; `false` when the
    /// session is not in the cache (or was deleted meanwhile: a touch never brings one back).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn touch(&self, handle: &str, at: SystemTime, ip: Option<IpAddr>) -> Result<bool> {
        let Some(mut session) = self.get(handle).await? else {
            return Ok(false);
        };
        session.record_activity(at, ip);
        let key = self.id_key("id", handle)?;
        let tombstone = self.id_key("deleted", handle)?;
        let value = encode_json(&key, &session)?;
        self.cache
            .write_if(
                &[Condition::Exists(&key), Condition::Absent(&tombstone)],
                &[Write::Replace(&key, value)],
            )
            .await
    }

    /// Deletes the session with `handle`, removes it from its user's index and leaves a
    /// tombstone for the rest of its life, so a racing `put` of a copy read earlier cannot bring
    /// it back. `true` when a live session was removed.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn delete(&self, handle: &str) -> Result<bool> {
        let key = self.id_key("id", handle)?;
        let tombstone = self.id_key("deleted", handle)?;
        let stored: Option<S> = match self.cache.get(&key).await? {
            Some(bytes) => decode_json(&key, &bytes).ok(),
            None => None,
        };
        // Unknown remaining life (not cached, or undecodable): the longest a session can live.
        let left = stored
            .as_ref()
            .and_then(|s| s.expires_at().duration_since(self.clock.wall()).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(self.max_lifetime);
        let member = [Bytes::copy_from_slice(handle.as_bytes())];
        let index_key = match &stored {
            Some(s) => Some(self.user_key("user", s.user_id())?),
            None => None,
        };
        let mut writes = vec![
            Write::Delete(&key),
            Write::Set(&tombstone, Bytes::from_static(b"1"), Ttl::After(left)),
        ];
        if let Some(index_key) = &index_key {
            writes.push(Write::SetRemove(index_key, &member));
        }
        self.cache.write_if(&[], &writes).await?;
        Ok(stored.is_some())
    }

    /// The handles of `user`'s sessions still in the cache (they revoke, they do not
    /// authenticate). Ids whose session is gone (expired,
    /// evicted) are pruned from the index on the way, each by a guarded write that leaves it
    /// when its session was stored again meanwhile.
    ///
    /// # Errors
    /// `InvalidKey` for a malformed user id; cache errors.
    pub async fn list_for_user(&self, user: &str) -> Result<Vec<String>> {
        let index_key = self.user_key("user", user)?;
        let members = self.cache.set_members(&index_key).await?;
        let (ids, keys) = self.session_keys(&members)?;
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = self.cache.get_many(&refs).await?;
        let mut alive = Vec::new();
        for (((id, key), member), value) in ids.into_iter().zip(&keys).zip(members).zip(values) {
            if value.is_some() {
                alive.push(id);
                continue;
            }
            // Only while the session is still gone: one re-cached since the read above stays
            // in the index (a plain removal would hide it from `revoke_all_for_user`).
            let member = [member];
            self.cache
                .write_if(
                    &[Condition::Absent(key)],
                    &[Write::SetRemove(&index_key, &member)],
                )
                .await?;
        }
        alive.sort();
        Ok(alive)
    }

    /// Revokes every session of `user`: from now on a `put` of one of their sessions created
    /// until now is refused, and every session in their index is deleted. Returns how many
    /// live sessions were removed. Sessions created after the call are not affected.
    ///
    /// # Errors
    /// `InvalidKey` for a malformed user id; cache errors (the revocation mark is written
    /// first, so a failure after it still refuses old sessions).
    pub async fn revoke_all_for_user(&self, user: &str) -> Result<u64> {
        let revoked = self.user_key("revoked", user)?;
        let index_key = self.user_key("user", user)?;
        let now = i64::try_from(self.clock.unix_millis()).unwrap_or(i64::MAX);
        // The mark first: any put landing after it is refused, any put before it is in the
        // index the sweep below reads. A later mark, if one exists, stands.
        self.cache
            .write_if(
                &[Condition::MissingOrBelow(&revoked, now)],
                &[Write::SetInt(&revoked, now, Ttl::After(self.max_lifetime))],
            )
            .await?;
        let members = self.cache.set_members(&index_key).await?;
        if members.is_empty() {
            return Ok(0);
        }
        let (_, keys) = self.session_keys(&members)?;
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let removed = self.cache.delete_many(&refs).await?;
        self.cache.set_remove(&index_key, &members).await?;
        Ok(removed)
    }

    /// The handles (as text) and session keys of index members (validated when they were
    /// added).
    fn session_keys(&self, members: &[Bytes]) -> Result<(Vec<String>, Vec<String>)> {
        let mut ids = Vec::with_capacity(members.len());
        let mut keys = Vec::with_capacity(members.len());
        for member in members {
            let id = String::from_utf8_lossy(member).into_owned();
            keys.push(self.id_key("id", &id)?);
            ids.push(id);
        }
        Ok((ids, keys))
    }
}
