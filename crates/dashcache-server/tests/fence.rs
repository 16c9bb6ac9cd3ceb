//! Stale write-back through the service: `GET /api/v1/users/{id}` racing `PATCH` of the same
//! user for a few seconds, with a slow database (every load takes 40 ms, half of it after the
//! query, so loads that read the old row are still in flight when the invalidation comes).
//! After the last `PATCH`, every read on every instance returns the last name.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{TestApp, app_with, settings_with, sqlite_url};
use dashcache_testkit::RedisServer;
use serde_json::json;

const LOAD_LATENCY: Duration = Duration::from_millis(40);
const STALENESS_MS: u64 = 200;
const PATCHES: usize = 40;

async fn instances(redis: Option<&RedisServer>, dir: &tempfile::TempDir, n: usize) -> Vec<TestApp> {
    let mut options = common::options(&sqlite_url(dir));
    // The limiter is not what this measures.
    options.rate_limit_scale = 10_000;
    let mut apps = Vec::new();
    for _ in 0..n {
        let settings = settings_with(
            redis.map(RedisServer::url),
            &[("CACHE_L1_STALENESS_MS", &STALENESS_MS.to_string())],
        );
        let app = app_with(&options, settings).await;
        app.state.simulate_load_latency(LOAD_LATENCY);
        apps.push(app);
    }
    apps
}

async fn reads_racing_patches_end_on_the_last_write(apps: Vec<TestApp>) {
    let apps: Vec<Arc<TestApp>> = apps.into_iter().map(Arc::new).collect();
    let mut tokens = Vec::new();
    for app in &apps {
        tokens.push(app.login("u2").await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for (app, token) in apps.iter().zip(&tokens) {
        for _ in 0..3 {
            let (app, token, stop, reads) = (
                Arc::clone(app),
                token.clone(),
                Arc::clone(&stop),
                Arc::clone(&reads),
            );
            readers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let reply = app.get("/api/v1/users/u2", Some(&token)).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                    reads.fetch_add(1, Ordering::Relaxed);
                    // A read the embedded cache answers never waits: without this, three
                    // readers would keep both workers from the writer.
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    let writer = &apps[0];
    for i in 0..PATCHES {
        let reply = writer
            .send(
                Method::PATCH,
                "/api/v1/users/u2",
                Some(&tokens[0]),
                Some(json!({ "name": format!("Bob {i}") })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        // Vary where in the readers' loads each write lands.
        tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 23)).await;
    }
    // The last write lands while loads that read the row before it are in flight on every
    // instance: each began just after the previous write emptied the cache, has read the row
    // (at half the latency) and has not committed yet.
    let patch = |name: String| {
        let (writer, token) = (Arc::clone(writer), tokens[0].clone());
        async move {
            let reply = writer
                .send(
                    Method::PATCH,
                    "/api/v1/users/u2",
                    Some(&token),
                    Some(json!({ "name": name })),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    };
    patch("Bob before the last".to_owned()).await;
    let in_flight: Vec<_> = apps
        .iter()
        .zip(&tokens)
        .map(|(app, token)| {
            let (app, token) = (Arc::clone(app), token.clone());
            tokio::spawn(async move { app.get("/api/v1/users/u2", Some(&token)).await })
        })
        .collect();
    tokio::time::sleep(LOAD_LATENCY * 7 / 10).await;
    let last = "Bob the last".to_owned();
    patch(last.clone()).await;
    for read in in_flight {
        read.await.unwrap();
    }
    // The writer's own instance reads its write at once; the others within the L1's bound.
    for _ in 0..20 {
        let reply = writer.get("/api/v1/users/u2", Some(&tokens[0])).await;
        assert_eq!(
            reply.body["name"],
            last.as_str(),
            "the writer read a stale name"
        );
    }
    tokio::time::sleep(Duration::from_millis(STALENESS_MS + 50)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    for _ in 0..3 {
        for (app, token) in apps.iter().zip(&tokens) {
            let reply = app.get("/api/v1/users/u2", Some(token)).await;
            assert_eq!(reply.body["name"], last.as_str(), "a stale name was cached");
        }
        // Past another load's latency: nothing in flight can land afterwards.
        tokio::time::sleep(LOAD_LATENCY * 2).await;
    }
    let rejected: u64 = apps
        .iter()
        .map(|a| a.state.metrics().snapshot("user").fills_rejected)
        .sum();
    eprintln!(
        "{} reads raced {PATCHES} writes; {rejected} stale fills refused",
        reads.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_cache() {
    let dir = tempfile::tempdir().unwrap();
    reads_racing_patches_end_on_the_last_write(instances(None, &dir, 1).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_with_l1_across_two_instances() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    reads_racing_patches_end_on_the_last_write(instances(Some(&redis), &dir, 2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_without_l1_across_two_instances() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::options(&sqlite_url(&dir));
    options.rate_limit_scale = 10_000;
    let mut apps = Vec::new();
    for _ in 0..2 {
        let settings = settings_with(Some(redis.url()), &[("CACHE_L1_MAX_ENTRIES", "0")]);
        let app = app_with(&options, settings).await;
        app.state.simulate_load_latency(LOAD_LATENCY);
        apps.push(app);
    }
    reads_racing_patches_end_on_the_last_write(apps).await;
}
