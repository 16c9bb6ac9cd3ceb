//! What the layers cost on the hot path, in one run per backend: the hit path of
//! `CacheAside::get_or_load` against a plain `get_json` of the same value, and
//! `Instrumented<C>::get` against the bare `C::get`.
//!
//! Run: `cargo bench -p dashcache --bench overhead`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use dashcache::aside::{CacheAside, LoaderTimeout};
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, CacheExt, Instrumented, Keys, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;
use dashcache_testkit::load::{Op, Plan, median, rates};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    roles: Vec<String>,
}

#[derive(Debug, Clone)]
struct Never;

impl From<LoaderTimeout> for Never {
    fn from(_: LoaderTimeout) -> Self {
        Never
    }
}

fn main() {
    dashcache_testkit::load::bench_main(0, run);
}

async fn run() {
    let server = RedisServer::start();
    let redis = RedisCache::builder(server.url())
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    println!(
        "Layer overhead ({} cores, {} interleaved rounds of {:?})",
        std::thread::available_parallelism().map_or(0, usize::from),
        Plan::default().rounds,
        Plan::default().round
    );
    println!("| backend | layer | concurrency | bare ops/s | with the layer ops/s | overhead |");
    println!("|---|---|---|---|---|---|");
    let memory: Arc<dyn Cache> = Arc::new(MemoryCache::new());
    let redis: Arc<dyn Cache> = Arc::new(redis);
    for (backend, cache, concurrencies) in [
        ("memory", memory, &[1usize][..]),
        ("redis", redis, &[1, 64][..]),
    ] {
        let (aside_sides, instrumented_sides) = sides(cache).await;
        for &concurrency in concurrencies {
            let per_round = rates(&aside_sides, concurrency).await;
            row(
                backend,
                "get_or_load hit vs get_json",
                concurrency,
                &per_round,
                1,
            );
            let per_round = rates(&instrumented_sides, concurrency).await;
            row(
                backend,
                "Instrumented get vs get",
                concurrency,
                &per_round,
                1,
            );
            row(
                backend,
                "Instrumented, every op timed, get vs get",
                concurrency,
                &per_round,
                2,
            );
        }
    }
}

/// One table row: side `layered` of each round against side 0.
fn row<const N: usize>(
    backend: &str,
    layer: &str,
    concurrency: usize,
    rates: &[[f64; N]],
    layered: usize,
) {
    let bare = median(rates.iter().map(|r| r[0]).collect());
    let with = median(rates.iter().map(|r| r[layered]).collect());
    let overhead = median(rates.iter().map(|r| r[0] / r[layered] - 1.0).collect());
    println!(
        "| {backend} | {layer} | {concurrency} | {bare:.0} | {with:.0} | {:+.1} % |",
        overhead * 100.0
    );
}

/// [plain get_json, aside hit] and [bare get, instrumented get, instrumented get timing one
/// operation in 16] over `cache`.
async fn sides(cache: Arc<dyn Cache>) -> ([Op; 2], [Op; 3]) {
    let keys = Keys::new("bench", ["user", "aside"]).unwrap();
    let user = User {
        id: 42,
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        roles: vec!["admin".into(), "viewer".into()],
    };
    let plain_keys: Arc<Vec<String>> =
        Arc::new((0..100).map(|i| format!("bench:user:{i}")).collect());
    let aside_keys: Arc<Vec<String>> =
        Arc::new((0..100).map(|i| format!("bench:aside:{i}")).collect());
    let aside = CacheAside::builder(Arc::clone(&cache)).build();
    for (plain, aside_key) in plain_keys.iter().zip(aside_keys.iter()) {
        cache.set_json(plain, &user, Ttl::secs(600)).await.unwrap();
        let u = user.clone();
        aside
            .get_or_load(aside_key, Ttl::secs(600), move || async move {
                Ok::<_, Never>(u)
            })
            .await
            .unwrap();
    }

    let (c, k) = (Arc::clone(&cache), Arc::clone(&plain_keys));
    let plain: Op = Arc::new(move |i| {
        let (c, k) = (Arc::clone(&c), Arc::clone(&k));
        Box::pin(async move {
            let u: Option<User> = c.get_json(&k[i % 100]).await.unwrap();
            assert!(u.is_some());
        })
    });
    let k = Arc::clone(&aside_keys);
    let hit: Op = Arc::new(move |i| {
        let (aside, k) = (aside.clone(), Arc::clone(&k));
        Box::pin(async move {
            let u: User = aside
                .get_or_load(&k[i % 100], Ttl::secs(600), || async {
                    Err::<User, _>(Never)
                })
                .await
                .unwrap();
            assert_eq!(u.id, 42);
        })
    });

    let instrumented = Arc::new(Instrumented::new(
        Arc::clone(&cache),
        CacheMetrics::new(&keys),
    ));
    let (c, k) = (Arc::clone(&cache), Arc::clone(&plain_keys));
    let bare: Op = Arc::new(move |i| {
        let (c, k) = (Arc::clone(&c), Arc::clone(&k));
        Box::pin(async move {
            c.get(&k[i % 100]).await.unwrap();
        })
    });
    let k = Arc::clone(&plain_keys);
    let wrapped: Op = Arc::new(move |i| {
        let (c, k) = (Arc::clone(&instrumented), Arc::clone(&k));
        Box::pin(async move {
            c.get(&k[i % 100]).await.unwrap();
        })
    });
    let sampled = Arc::new(
        Instrumented::new(Arc::clone(&cache), CacheMetrics::new(&keys)).with_latency_sampling(1),
    );
    let k = Arc::clone(&plain_keys);
    let wrapped_sampled: Op = Arc::new(move |i| {
        let (c, k) = (Arc::clone(&sampled), Arc::clone(&k));
        Box::pin(async move {
            c.get(&k[i % 100]).await.unwrap();
        })
    });
    ([plain, hit], [bare, wrapped, wrapped_sampled])
}
