//! Password hashing: Argon2id, verified on a blocking thread.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// An Argon2id hash of `password` (PHC string), with a fresh salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Hashing with valid default parameters and a generated salt cannot fail; an empty
        // string would never verify, so a failure here locks the account rather than opening it.
        .unwrap_or_default()
}

/// Whether `password` matches the PHC `hash`, on a blocking thread: Argon2 is meant to be slow.
pub async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

static DECOY: OnceLock<String> = OnceLock::new();

/// A hash no password matches (of 32 random bytes, made once), for verifying a login of a user
/// that does not exist: it costs what a real verification costs.
pub fn decoy() -> &'static str {
    DECOY.get_or_init(|| {
        let secret = dashcache::session::new_session_id().unwrap_or_default();
        hash(&format!("decoy:{secret}"))
    })
}

/// Whether the decoy has been made (the service makes it at start).
pub fn decoy_is_ready() -> bool {
    DECOY.get().is_some()
}
