//! The guide's session cache, write-through and sealed: store a session with its user index in
//! one step, read it, list and revoke a user's sessions — and a revoked session cannot be
//! brought back by a request that read it from the database before the revoke.
//!
//! `cargo run -p dashcache --example session`

mod common;

use std::sync::Arc;
use std::time::Duration;

use dashcache::sealed::{Keyring, Sealed};
use dashcache::session::{SessionData, SessionStore};
use dashcache::{Cache, Keys};

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keys::new("ex-session", ["session"])?;
    let plain = common::cache().await?;
    // In production the key comes from CACHE_SEAL_KEYS (CacheSettings::keyring).
    let cache: Arc<dyn Cache> =
        Arc::new(Sealed::new(Arc::clone(&plain), Keyring::new(1, &[42; 32])));
    let sessions: SessionStore = SessionStore::new(cache, keys.clone());

    // A login: the token goes to the client once; the session is kept under its handle.
    let month = Duration::from_secs(30 * 24 * 3600);
    let laptop_login = sessions.issue("user-42")?;
    let laptop =
        SessionData::new(&laptop_login.handle, "user-42", month).with_user_agent("Firefox");
    let phone = SessionData::new(sessions.issue("user-42")?.handle, "user-42", month)
        .with_user_agent("iOS app");
    sessions.put(&laptop, None).await?;
    sessions.put(&phone, None).await?;
    println!(
        "sessions of user-42 (handles: they revoke, they do not authenticate): {:?}",
        sessions.list_for_user("user-42").await?
    );
    println!(
        "the laptop's token authenticates, agent {:?}",
        sessions
            .get_by_token(&laptop_login.token)
            .await?
            .and_then(|s| s.user_agent)
    );

    let stale_copy = phone.clone(); // read from the database by a request still in flight
    println!(
        "revoked: {}",
        sessions.revoke_all_for_user("user-42").await?
    );
    println!(
        "re-caching the stale copy stored it: {}",
        sessions.put(&stale_copy, None).await?
    );
    println!(
        "phone session now: {:?}",
        sessions.get(&phone.id).await?.map(|s| s.id)
    );
    common::clean_up(plain.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
