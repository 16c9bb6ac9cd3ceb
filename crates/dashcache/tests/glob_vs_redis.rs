//! Differential property test: `MemoryCache::delete_pattern` (our glob) and a real
//! `redis-server` (`SCAN MATCH` and `RedisCache::delete_pattern`) select the same keys for random
//! patterns and keys, metacharacters and non-ASCII bytes included.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is how a test fails

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashcache::{Cache, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::RedisServer;
use proptest::prelude::*;

/// Glob syntax, separators and a two-byte character (its bytes compare as signed `char`s in
/// Redis' ranges).
const KEY: &str = "[ab:\\-*?\\[\\]^\\\\é]{1,6}";

/// Patterns built from glob tokens, so classes, ranges and escapes are common, with some raw
/// noise mixed in for the malformed cases.
fn pattern() -> impl Strategy<Value = String> {
    let class = (
        "\\^?",
        "([ab\\-\\]é^]|[ab\\]é]-[ab\\]é]|\\\\[\\]ab-]){0,3}",
        any::<bool>(),
    )
        .prop_map(|(neg, body, close)| format!("[{neg}{body}{}", if close { "]" } else { "" }));
    let token = prop_oneof![
        3 => "[ab:\\-é]",
        2 => Just("*".to_owned()),
        2 => Just("?".to_owned()),
        1 => "\\\\[ab*?\\[\\]\\\\é]?",
        3 => class,
        1 => "[ab:\\-*?\\[\\]^\\\\é]",
    ];
    prop::collection::vec(token, 1..5).prop_map(|tokens| tokens.concat())
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: RedisServer,
    redis: RedisCache,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let redis = rt.block_on(async {
        RedisCache::builder(server.url())
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    });
    Fixture { rt, server, redis }
}

impl Fixture {
    /// (keys SCAN MATCH selects, keys RedisCache deletes and its count, keys MemoryCache
    /// deletes and its count) for one fresh key set.
    async fn compare(&self, keys: &BTreeSet<String>, pattern: &str) {
        let () = self.server.command(&[b"FLUSHDB"]).await;
        let memory = Arc::new(MemoryCache::new());
        let entries: Vec<(&str, Bytes)> = keys.iter().map(|k| (k.as_str(), Bytes::new())).collect();
        self.redis.set_many(&entries, Ttl::secs(60)).await.unwrap();
        memory.set_many(&entries, Ttl::secs(60)).await.unwrap();

        let mut scanned = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .server
                .command(&[
                    b"SCAN",
                    cursor.to_string().as_bytes(),
                    b"MATCH",
                    pattern.as_bytes(),
                    b"COUNT",
                    b"1000",
                ])
                .await;
            scanned.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }

        let redis_count = self.redis.delete_pattern(pattern).await.unwrap();
        let memory_count = memory.delete_pattern(pattern).await.unwrap();
        let mut memory_deleted = BTreeSet::new();
        let mut redis_deleted = BTreeSet::new();
        for key in keys {
            if !memory.exists(key).await.unwrap() {
                memory_deleted.insert(key.clone());
            }
            if !self.redis.exists(key).await.unwrap() {
                redis_deleted.insert(key.clone());
            }
        }
        assert_eq!(memory_deleted, scanned, "pattern {pattern:?} over {keys:?}");
        assert_eq!(redis_deleted, scanned, "pattern {pattern:?} over {keys:?}");
        assert_eq!(memory_count, scanned.len() as u64, "pattern {pattern:?}");
        assert_eq!(redis_count, scanned.len() as u64, "pattern {pattern:?}");
        for key in keys {
            assert_eq!(
                dashcache::glob::matches(pattern, key),
                scanned.contains(key),
                "matches({pattern:?}, {key:?})"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn memory_and_redis_select_the_same_keys(
        keys in prop::collection::btree_set(KEY, 1..24),
        pattern in pattern(),
    ) {
        thread_local! {
            static FIXTURE: Fixture = fixture();
        }
        FIXTURE.with(|f| f.rt.block_on(f.compare(&keys, &pattern)));
    }
}

#[test]
fn handpicked_quirks_agree_with_redis() {
    let f = fixture();
    let keys: BTreeSet<String> = [
        "a", "b", "]", "-", "a-", "ab", "\\", "a\\", "[a", "é", "*", "?", "^", "a]b",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for pattern in [
        "[a-]", "[ab", "a\\", "\\", "[^a]", "[]a]", "[\\]]", "[z-a]", "[é]", "[a-é]", "*\\", "[^]",
        "[", "a[", "?*?", "[\\", "[a-\\]]", "**a", "\\[a",
    ] {
        f.rt.block_on(f.compare(&keys, pattern));
    }
}
