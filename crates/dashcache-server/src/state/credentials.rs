//! Provider credentials: sealed at rest in the database, and cached only in this process's
//! memory — never in Redis, never in a shared tier's L1 — for `CACHE_TTL_CREDENTIALS`, in
//! buffers that are zeroed when dropped and redacted in `Debug`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dashcache::sealed::Keyring;
use rand::TryRngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, Zeroizing};

use super::AppState;
use crate::error::AppError;

/// The keyring and the in-memory cache of opened credentials.
pub(crate) struct Credentials {
    keyring: Keyring,
    memory: moka::sync::Cache<String, Arc<SecretString>>,
}

impl Credentials {
    /// With `keyring` (`CACHE_SEAL_KEYS`), or else a key made up for this process: then
    /// credentials stored by an earlier run do not open, and their connections must be
    /// connected again.
    pub(crate) fn new(keyring: Option<Keyring>, ttl: Duration) -> Result<Self, dashcache::Error> {
        let keyring = match keyring {
            Some(k) => k,
            None => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.try_fill_bytes(&mut key).map_err(|e| {
                    dashcache::Error::new(dashcache::ErrorKind::Backend, "no OS randomness")
                        .with_source(e)
                })?;
                let ring = Keyring::new(0, &key);
                key.zeroize();
                ring
            }
        };
        Ok(Self {
            keyring,
            memory: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        })
    }
}

/// A credential's row is bound to its connection: a sealed value copied to another row does
/// not open.
fn context(connection: &str) -> String {
    format!("provider_credential:{connection}")
}

impl AppState {
    /// The access token of `connection`: from this process's memory, else opened from the
    /// database (and kept in memory for `CACHE_TTL_CREDENTIALS`). `None` when it has none, or
    /// one this process cannot open (sealed under a key it does not have).
    ///
    /// # Errors
    /// Database errors.
    pub async fn credential(
        &self,
        connection: &str,
    ) -> Result<Option<Arc<SecretString>>, AppError> {
        let creds = &self.inner.credentials;
        if let Some(found) = creds.memory.get(connection) {
            return Ok(Some(found));
        }
        let Some(sealed) = self.inner.db.sealed_credential(connection).await? else {
            return Ok(None);
        };
        let Ok(bytes) = STANDARD.decode(sealed) else {
            return Ok(None);
        };
        let opened = match creds.keyring.open(&context(connection), &bytes) {
            Ok(v) => Zeroizing::new(v),
            Err(e) => {
                tracing::warn!(
                    code = e.code(),
                    "a provider credential does not open with the configured keys; the \
                     connection must be connected again"
                );
                return Ok(None);
            }
        };
        let Ok(text) = std::str::from_utf8(&opened) else {
            return Ok(None);
        };
        let secret = Arc::new(SecretString::from(text));
        creds
            .memory
            .insert(connection.to_owned(), Arc::clone(&secret));
        Ok(Some(secret))
    }

    /// Seals and stores `token` as `connection`'s credential, replacing any earlier one.
    ///
    /// # Errors
    /// Database errors; a sealing failure.
    pub async fn store_credential(
        &self,
        connection: &str,
        token: &SecretString,
    ) -> Result<(), AppError> {
        let creds = &self.inner.credentials;
        let sealed = creds
            .keyring
            .seal(&context(connection), token.expose_secret().as_bytes())
            .map_err(|e| AppError::Internal(e.to_string()))?;
        self.inner
            .db
            .put_sealed_credential(connection, &STANDARD.encode(&sealed))
            .await?;
        creds.memory.invalidate(connection);
        Ok(())
    }

    /// Gives each demo connection that exists and has no credential this process can open a
    /// stand-in one, of the form the stand-in provider accepts: a demo database's balances and
    /// holdings then answer from its first start, and after a restart with another key (no
    /// `CACHE_SEAL_KEYS`), under the same connection ids. How many it gave.
    ///
    /// # Errors
    /// Database errors; a sealing failure.
    pub async fn stand_in_demo_credentials(&self) -> Result<usize, AppError> {
        let mut given = 0;
        for (id, user, _, _) in crate::db::DEMO_CONNECTIONS {
            let ours = self
                .inner
                .db
                .connection(id)
                .await?
                .is_some_and(|c| c.user_id == user);
            if ours && self.credential(id).await?.is_none() {
                let token = SecretString::from(crate::upstream::server::access_token());
                self.store_credential(id, &token).await?;
                given += 1;
            }
        }
        Ok(given)
    }
}
