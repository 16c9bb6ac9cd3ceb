//! The guide's cached permission checks, with invalidation that cannot be undone by a check
//! that was already running: a role change bumps the user's generation, in one write.
//!
//! `cargo run -p dashcache --example permissions`

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashcache::Keys;
use dashcache::authz::PermissionCache;

static IS_ADMIN: AtomicBool = AtomicBool::new(true);

/// Stands in for the RBAC engine (Casbin in the original).
async fn evaluate(user: &str, resource: &str, action: &str) -> Result<bool, String> {
    println!("  evaluating {user} {action} {resource}");
    Ok(IS_ADMIN.load(Ordering::SeqCst))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keys::new("ex-permissions", ["authz"])?;
    let cache = common::cache().await?;
    let permissions = PermissionCache::new(Arc::clone(&cache), keys.clone());
    let check = || {
        permissions.check("user-42", "users", "write", || {
            evaluate("user-42", "users", "write")
        })
    };

    println!("first check: {:?}", check().await);
    println!("second check (cached): {:?}", check().await);

    IS_ADMIN.store(false, Ordering::SeqCst); // the role is revoked in the database…
    permissions.invalidate_user("user-42").await?; // …and the cache is told
    println!("after the role change: {:?}", check().await);
    common::clean_up(cache.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
