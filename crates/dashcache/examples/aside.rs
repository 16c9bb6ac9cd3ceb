//! The guide's cache-aside `get_user`, done right: the loader's own `Result` comes back, a
//! failing cache never reaches the caller, concurrent misses of one user hit the database once,
//! and "not found" is cached briefly so a missing id cannot hammer the database. Metrics count
//! every outcome.
//!
//! `cargo run -p dashcache --example aside` (embedded cache), or with
//! `REDIS_URL=redis://127.0.0.1:6379`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::metrics::CacheMetrics;
use dashcache::{Instrumented, Keys, Ttl};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The repository's error. `Clone` so that callers waiting on the same load can share it.
#[derive(Debug, Clone)]
enum RepoError {
    TimedOut,
}

impl From<LoaderTimeout> for RepoError {
    fn from(_: LoaderTimeout) -> Self {
        RepoError::TimedOut
    }
}

static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// Stands in for `user_repo.find_by_id`.
async fn find_user(id: u64) -> Result<Option<User>, RepoError> {
    QUERIES.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok((id < 100).then(|| User {
        id,
        name: format!("user {id}"),
    }))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keys::new("ex-aside", ["user"])?;
    let metrics = CacheMetrics::new(&keys);
    let backend = common::cache().await?;
    let cache = Arc::new(Instrumented::new(Arc::clone(&backend), metrics.clone()));
    let users = CacheAside::builder(cache)
        .stale_for(Duration::from_secs(60))
        .negative_ttl(Ttl::secs(30))
        .loader_timeout(Duration::from_secs(2))
        .metrics_over_instrumented(metrics.clone())
        .build();

    let get_user = |id: u64| {
        let users = users.clone();
        let key = keys.key(["user", &id.to_string()]);
        async move {
            let key = key.map_err(|_| RepoError::TimedOut)?;
            users
                .get_or_load_optional(&key, Ttl::secs(3600), move || find_user(id))
                .await
        }
    };

    // Ten concurrent requests for one cold user: one query.
    let requests: Vec<_> = (0..10).map(|_| tokio::spawn(get_user(7))).collect();
    for request in requests {
        let _ = request.await?;
    }
    println!(
        "10 concurrent lookups of user 7 → {} query",
        QUERIES.load(Ordering::SeqCst)
    );

    println!("user 7 again: {:?}", get_user(7).await);
    println!(
        "user 404: {:?} (then cached as not found)",
        get_user(404).await
    );
    let _ = get_user(404).await;
    println!("queries so far: {}", QUERIES.load(Ordering::SeqCst));

    let user = metrics.snapshot("user");
    println!(
        "user namespace: {} hits, {} misses, {} errors, hit rate {:.0} %",
        user.hits,
        user.misses,
        user.errors,
        user.hit_rate() * 100.0
    );
    common::clean_up(backend.as_ref(), keys.prefix()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run().await)
}
