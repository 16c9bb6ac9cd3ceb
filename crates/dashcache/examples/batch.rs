//! The guide's batch pattern: look many users up in one round trip, load only the missing ones
//! from the database, and cache them in one more round trip.
//!
//! `cargo run -p dashcache --example batch`

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use dashcache::{Keys, Ttl};

/// Stands in for the database.
fn load_users(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id, format!("user #{id}"))).collect()
}

async fn run() -> dashcache::Result<()> {
    let cache = common::cache().await?;
    let keys = Keys::new("ex-batch", ["user"])?;
    cache
        .set(
            &keys.key(["user", "2"])?,
            Bytes::from("user #2 (cached)"),
            Ttl::secs(3600),
        )
        .await?;

    let ids = [1u64, 2, 3];
    let cache_keys: Vec<String> = ids
        .iter()
        .map(|id| keys.key(["user", &id.to_string()]))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&str> = cache_keys.iter().map(String::as_str).collect();

    // One round trip, results in the order of the keys.
    let cached = cache.get_many(&refs).await?;
    let missing: Vec<u64> = ids
        .iter()
        .zip(&cached)
        .filter(|(_, v)| v.is_none())
        .map(|(id, _)| *id)
        .collect();
    println!(
        "cached: {}, missing: {missing:?}",
        ids.len() - missing.len()
    );

    let loaded = load_users(&missing);
    let entries: Vec<(&str, Bytes)> = ids
        .iter()
        .zip(&refs)
        .filter_map(|(id, key)| loaded.get(id).map(|name| (*key, Bytes::from(name.clone()))))
        .collect();
    // One more round trip, all or nothing.
    cache.set_many(&entries, Ttl::secs(3600)).await?;

    for (key, value) in refs.iter().zip(cache.get_many(&refs).await?) {
        println!(
            "{key} = {:?}",
            value.map(|v| String::from_utf8_lossy(&v).into_owned())
        );
    }
    common::clean_up(cache.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
