//! The guide's OAuth state, one-time for real: issue a state with the connection's details,
//! consume it once in the callback; a replay (or a second, concurrent callback) finds nothing.
//!
//! `cargo run -p dashcache --example oauth_state`

mod common;

use std::sync::Arc;

use dashcache::token::OneTimeTokens;
use dashcache::{Keys, Ttl};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PendingConnection {
    user_id: String,
    provider: String,
    alias: String,
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keys::new("ex-oauth", ["oauth_state"])?;
    let cache = common::cache().await?;
    let states = OneTimeTokens::new(Arc::clone(&cache), keys.clone(), "oauth_state");

    let pending = PendingConnection {
        user_id: "user-42".into(),
        provider: "schwab".into(),
        alias: "brokerage".into(),
    };
    let state = states.issue(&pending, Ttl::secs(600)).await?;
    println!("authorize URL: https://provider.example/authorize?state={state}");

    // The callback. A cache error here must fail the callback (fail closed), so `?` it.
    match states.consume(&state).await? {
        Some(p) => println!(
            "callback accepted for {} / {} ({})",
            p.user_id, p.provider, p.alias
        ),
        None => println!("invalid or replayed state"),
    }
    println!(
        "replay: {:?}",
        states
            .consume(&state)
            .await?
            .map(|p: PendingConnection| p.user_id)
    );
    common::clean_up(cache.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
