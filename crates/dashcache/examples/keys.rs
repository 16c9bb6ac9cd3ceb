//! Key building and safe pattern deletion: every key under one prefix, ids escaped so they can
//! never become glob syntax, and personal data hashed out of keys.
//!
//! `cargo run -p dashcache --example keys`

mod common;

use dashcache::{Keys, Ttl};

async fn run() -> dashcache::Result<()> {
    let cache = common::cache().await?;
    let keys = Keys::builder("ex-keys")
        .namespaces(["user", "authz"])
        .secret("from-your-settings")
        .build()?;

    for (user, resource) in [
        ("7", "accounts"),
        ("7", "reports"),
        ("70", "accounts"),
        ("7*", "x"),
    ] {
        let key = keys.key(["authz", user, resource, "read"])?;
        cache.set(&key, "1".into(), Ttl::secs(300)).await?;
        println!("{key}");
    }

    // The Python original ran delete_pattern(f"authz:{user_id}:*"): a user id of "7*" would
    // have deleted user 70's permissions too. Here the id is literal, whatever it contains.
    let pattern = keys.pattern(["authz", "7*"])?;
    println!(
        "{pattern} deleted {}",
        cache.delete_pattern(&pattern).await?
    );
    let pattern = keys.pattern(["authz", "7"])?;
    println!(
        "{pattern} deleted {}",
        cache.delete_pattern(&pattern).await?
    );
    println!(
        "user 70 kept: {}",
        cache
            .exists(&keys.key(["authz", "70", "accounts", "read"])?)
            .await?
    );

    // No e-mail address in a key: a keyed hash stands in for it.
    let by_email = keys.key(["user", "by-email", &keys.opaque("john@example.com")])?;
    println!("{by_email}");
    common::clean_up(cache.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
