//! `SessionStore` on every backend: round trips, the user index, revocation that sticks, and
//! 500 concurrent logins.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashcache::session::{SessionData, SessionStore};
use dashcache::{Cache, ErrorKind, KeyTtl, Keys, Ttl};
use dashcache_testkit::on_every_backend;
use futures::future::join_all;

fn store(cache: Arc<dyn Cache>) -> SessionStore {
    SessionStore::new(cache, Keys::new("t", ["session"]).unwrap())
}

/// A session of `user` under a handle the store issued (tagged for Redis Cluster).
fn session(user: &str, lifetime: Duration) -> SessionData {
    SessionData::new(store_for_ids().issue(user).unwrap().handle, user, lifetime)
}

/// A ten-minute session of `user` under `handle`.
fn session_with(handle: &str, user: &str) -> SessionData {
    SessionData::new(handle, user, Duration::from_secs(600))
}

/// A store only for making ids: tags depend on the key declarations alone.
fn store_for_ids() -> SessionStore {
    store(Arc::new(dashcache::MemoryCache::new()))
}

/// A session created `age` ago.
fn older_session(user: &str, age: Duration, lifetime: Duration) -> SessionData {
    let mut s = session(user, lifetime);
    s.created_at -= age;
    s.last_activity = s.created_at;
    s
}

async fn ttl_of(cache: &Arc<dyn Cache>, key: &str) -> Duration {
    match cache.ttl(key).await.unwrap() {
        KeyTtl::Expires(d) => d,
        other => panic!("{key}: expected a TTL, got {other:?}"),
    }
}

async fn round_trip_with_every_field_and_without_the_optional_ones(cache: Arc<dyn Cache>) {
    let store = store(cache);
    let mut full = session("u1", Duration::from_secs(600))
        .with_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        .with_user_agent("Mozilla/5.0");
    full.device = Some("laptop".into());
    full.location = Some("Lisbon, PT".into());
    full.providers = vec!["schwab".into(), "plaid".into()];
    full.extra = BTreeMap::from([("mfa".to_owned(), serde_json::json!(true))]);
    let bare = session("u1", Duration::from_secs(600));
    for s in [&full, &bare] {
        assert!(store.put(s, None).await.unwrap());
        let back = store.get(&s.id).await.unwrap().unwrap();
        assert_eq!(back.id, s.id);
        assert_eq!(back.user_id, s.user_id);
        assert_eq!(back.ip, s.ip);
        assert_eq!(back.user_agent, s.user_agent);
        assert_eq!(back.device, s.device);
        assert_eq!(back.location, s.location);
        assert_eq!(back.providers, s.providers);
        assert_eq!(back.extra, s.extra);
        assert!(store.exists(&s.id).await.unwrap());
    }
    assert!(store.get("no-such-session").await.unwrap().is_none());
}

async fn ttl_is_explicit_or_derived_and_never_past_expiry(cache: Arc<dyn Cache>) {
    let store = store(cache.clone());
    let derived = session("u1", Duration::from_secs(600));
    store.put(&derived, None).await.unwrap();
    let left = ttl_of(&cache, &store.session_key(&derived.id).unwrap()).await;
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );

    let explicit = session("u1", Duration::from_secs(600));
    store.put(&explicit, Some(Ttl::secs(60))).await.unwrap();
    let left = ttl_of(&cache, &store.session_key(&explicit.id).unwrap()).await;
    assert!(left <= Duration::from_secs(60), "{left:?}");

    // Neither longer than the session's life nor forever.
    for ttl in [Ttl::secs(86_400), Ttl::Persist] {
        let capped = session("u1", Duration::from_secs(120));
        store.put(&capped, Some(ttl)).await.unwrap();
        let left = ttl_of(&cache, &store.session_key(&capped.id).unwrap()).await;
        assert!(left <= Duration::from_secs(120), "{ttl:?}: {left:?}");
    }
    // The index lives at least as long as the longest session.
    let index = ttl_of(&cache, &store.index_key("u1").unwrap()).await;
    assert!(index > Duration::from_secs(590), "{index:?}");
}

async fn an_expired_session_is_not_stored(cache: Arc<dyn Cache>) {
    let store = store(cache);
    let mut s = older_session("u1", Duration::from_secs(120), Duration::from_secs(60));
    s.expires_at = SystemTime::now() - Duration::from_secs(1);
    assert!(!store.put(&s, None).await.unwrap());
    assert!(!store.exists(&s.id).await.unwrap());
    assert!(store.list_for_user("u1").await.unwrap().is_empty());
}

async fn a_session_may_not_outlive_the_maximum_lifetime(cache: Arc<dyn Cache>) {
    let store = store(cache).with_max_lifetime(Duration::from_secs(3600));
    let s = session("u1", Duration::from_secs(7200));
    let err = store.put(&s, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

async fn the_index_is_idempotent_and_follows_deletes(cache: Arc<dyn Cache>) {
    let store = store(cache.clone());
    let (a, b) = (
        session("u1", Duration::from_secs(600)),
        session("u1", Duration::from_secs(600)),
    );
    for _ in 0..3 {
        assert!(store.put(&a, None).await.unwrap());
    }
    store.put(&b, None).await.unwrap();
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(store.list_for_user("u1").await.unwrap(), both);

    assert!(store.delete(&a.id).await.unwrap());
    assert_eq!(store.list_for_user("u1").await.unwrap(), vec![b.id.clone()]);
    assert!(!store.delete(&a.id).await.unwrap(), "already gone");
    assert!(store.delete(&b.id).await.unwrap());
    assert!(store.list_for_user("u1").await.unwrap().is_empty());
    assert!(
        !cache.exists(&store.index_key("u1").unwrap()).await.unwrap(),
        "the last delete empties the index"
    );
}

async fn users_are_isolated_and_revoke_all_counts(cache: Arc<dyn Cache>) {
    let store = store(cache);
    // Glob metacharacters in ids must not widen anything.
    let users = ["alice", "a*", "a?ice", "bob"];
    let mut ids = BTreeMap::new();
    for user in users {
        for _ in 0..3 {
            let s = session(user, Duration::from_secs(600));
            store.put(&s, None).await.unwrap();
            ids.entry(user).or_insert_with(Vec::new).push(s.id);
        }
    }
    assert_eq!(store.revoke_all_for_user("a*").await.unwrap(), 3);
    assert!(store.list_for_user("a*").await.unwrap().is_empty());
    for user in ["alice", "a?ice", "bob"] {
        assert_eq!(
            store.list_for_user(user).await.unwrap().len(),
            3,
            "{user} untouched"
        );
        for id in &ids[user] {
            assert!(
                store.get(id).await.unwrap().is_some(),
                "{user}'s session {id}"
            );
        }
    }
    assert_eq!(
        store.revoke_all_for_user("a*").await.unwrap(),
        0,
        "nothing left"
    );
    assert_eq!(store.revoke_all_for_user("nobody").await.unwrap(), 0);
}

async fn touch_records_activity_and_keeps_the_ttl(cache: Arc<dyn Cache>) {
    let store = store(cache.clone());
    let s = session("u1", Duration::from_secs(600));
    store.put(&s, Some(Ttl::secs(100))).await.unwrap();
    let at = SystemTime::now() + Duration::from_secs(5);
    let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    assert!(store.touch(&s.id, at, Some(ip)).await.unwrap());
    let back = store.get(&s.id).await.unwrap().unwrap();
    assert_eq!(back.ip, Some(ip));
    assert_eq!(
        back.last_activity
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let left = ttl_of(&cache, &store.session_key(&s.id).unwrap()).await;
    assert!(
        left <= Duration::from_secs(100),
        "the TTL is kept: {left:?}"
    );
    assert!(!store.touch("missing", at, None).await.unwrap());
    store.delete(&s.id).await.unwrap();
    assert!(
        !store.touch(&s.id, at, None).await.unwrap(),
        "a touch never brings one back"
    );
    assert!(store.get(&s.id).await.unwrap().is_none());
}

async fn five_hundred_concurrent_logins_are_all_indexed_then_all_revoked(cache: Arc<dyn Cache>) {
    let store = store(cache);
    let sessions: Vec<SessionData> = (0..500)
        .map(|_| session("busy", Duration::from_secs(600)))
        .collect();
    let puts = sessions.iter().map(|s| {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move { store.put(&s, None).await })
    });
    for put in join_all(puts).await {
        assert!(put.unwrap().unwrap());
    }
    let mut expected: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    expected.sort();
    assert_eq!(store.list_for_user("busy").await.unwrap(), expected);
    assert_eq!(store.revoke_all_for_user("busy").await.unwrap(), 500);
    for s in &sessions {
        assert!(store.get(&s.id).await.unwrap().is_none());
    }
}

async fn a_put_racing_a_revoke_cannot_resurrect_the_session(cache: Arc<dyn Cache>) {
    let store = store(cache);
    let s = session("u1", Duration::from_secs(600));
    store.put(&s, None).await.unwrap();
    // A request read the session from the database before the revoke...
    let stale_copy = s.clone();
    assert_eq!(store.revoke_all_for_user("u1").await.unwrap(), 1);
    // ...and re-caches it after.
    assert!(!store.put(&stale_copy, None).await.unwrap(), "refused");
    assert!(store.get(&s.id).await.unwrap().is_none());
    assert!(store.list_for_user("u1").await.unwrap().is_empty());
    // A session created after the revoke is fine.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = session("u1", Duration::from_secs(600));
    assert!(store.put(&fresh, None).await.unwrap());
    assert!(store.get(&fresh.id).await.unwrap().is_some());
}

async fn a_deleted_session_cannot_be_put_back(cache: Arc<dyn Cache>) {
    let store = store(cache.clone());
    let s = session("u1", Duration::from_secs(600));
    store.put(&s, None).await.unwrap();
    assert!(store.delete(&s.id).await.unwrap());
    assert!(
        !store.put(&s, None).await.unwrap(),
        "the tombstone refuses it"
    );
    assert!(store.get(&s.id).await.unwrap().is_none());
    let tombstone = ttl_of(&cache, &tombstone_key(&s.id)).await;
    assert!(
        tombstone <= Duration::from_secs(600),
        "for the id's remaining life: {tombstone:?}"
    );
    // Deleting an id the cache does not know still guards it.
    let unknown = session("u1", Duration::from_secs(600));
    assert!(!store.delete(&unknown.id).await.unwrap());
    assert!(!store.put(&unknown, None).await.unwrap());
}

async fn dead_ids_are_pruned_from_the_index(backend: &dashcache_testkit::Backend) {
    let cache = backend.cache();
    let store = store(cache.clone());
    let (short, long) = (
        session("u1", Duration::from_secs(600)),
        session("u1", Duration::from_secs(600)),
    );
    store.put(&short, Some(Ttl::millis(150))).await.unwrap();
    store.put(&long, None).await.unwrap();
    backend.wait(Duration::from_millis(350)).await;
    assert_eq!(
        store.list_for_user("u1").await.unwrap(),
        vec![long.id.clone()]
    );
    let members = cache
        .set_members(&store.index_key("u1").unwrap())
        .await
        .unwrap();
    assert_eq!(members.len(), 1, "the dead id was pruned");
}

async fn bad_ids_are_typed_errors(cache: Arc<dyn Cache>) {
    let store = store(cache);
    for bad in ["", "has space", "new\nline"] {
        assert_eq!(
            store.get(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidKey,
            "{bad:?}"
        );
        assert_eq!(
            store.list_for_user(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
        assert_eq!(
            store.revoke_all_for_user(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
    }
}

/// The tombstone key of session `id` (the store keeps it private; this mirrors its layout).
fn tombstone_key(id: &str) -> String {
    let tag = id.rsplit_once('.').map_or(id, |(_, t)| t);
    Keys::new("t", ["session"])
        .unwrap()
        .tagged_key(tag, ["session", "deleted", id])
        .unwrap()
}

/// Regression: `list_for_user` pruned every index member whose session it did not find — also a
/// session stored again between its read and the removal (or, in memory, one whose index entry
/// was visible before the session itself). That session stayed live but left the index, so
/// `revoke_all_for_user` missed it.
async fn a_put_racing_list_for_user_stays_in_the_index(cache: Arc<dyn Cache>) {
    let store = store(cache.clone());
    for round in 0..300 {
        let s = session("racer", Duration::from_secs(600));
        assert!(store.put(&s, None).await.unwrap());
        // Evicted behind the store's back: the index still names it.
        cache
            .delete(&store.session_key(&s.id).unwrap())
            .await
            .unwrap();
        let (lister, putter) = (store.clone(), store.clone());
        let listing = tokio::spawn(async move { lister.list_for_user("racer").await });
        let again = s.clone();
        let putting = tokio::spawn(async move { putter.put(&again, None).await });
        listing.await.unwrap().unwrap();
        assert!(putting.await.unwrap().unwrap());
        assert!(
            store.list_for_user("racer").await.unwrap().contains(&s.id),
            "round {round}: a live session left its user's index"
        );
    }
    assert_eq!(store.revoke_all_for_user("racer").await.unwrap(), 300);
}

on_every_backend!(
    a_put_racing_list_for_user_stays_in_the_index,
    round_trip_with_every_field_and_without_the_optional_ones,
    ttl_is_explicit_or_derived_and_never_past_expiry,
    an_expired_session_is_not_stored,
    a_session_may_not_outlive_the_maximum_lifetime,
    the_index_is_idempotent_and_follows_deletes,
    users_are_isolated_and_revoke_all_counts,
    touch_records_activity_and_keeps_the_ttl,
    five_hundred_concurrent_logins_are_all_indexed_then_all_revoked,
    a_put_racing_a_revoke_cannot_resurrect_the_session,
    a_deleted_session_cannot_be_put_back,
    bad_ids_are_typed_errors,
);

// The embedded cache's clock is advanced instead of sleeping.
dashcache_testkit::on_every_backend!(|backend| &backend; dead_ids_are_pruned_from_the_index);

/// A session token is a bearer secret: it is in no key, no value and no index member — the
/// store keeps the session under a keyed hash of it — and what a listing shows does not
/// authenticate. On Redis every key the servers hold is read back and searched.
async fn no_token_is_stored_and_listings_do_not_authenticate(backend: &dashcache_testkit::Backend) {
    let cache = backend.cache();
    let store = store(cache.clone());
    let issued = store.issue("u9").unwrap();
    let secret = issued.token.split('.').next().unwrap().to_owned();
    assert!(!issued.handle.contains(&secret));
    assert!(!format!("{issued:?}").contains(&secret), "{issued:?}");
    let s = session_with(&issued.handle, "u9");
    assert!(store.put(&s, None).await.unwrap());
    assert!(store.get_by_token(&issued.token).await.unwrap().is_some());
    // The listing's handles revoke but never authenticate.
    let listed = store.list_for_user("u9").await.unwrap();
    assert_eq!(listed, vec![issued.handle.clone()]);
    for handle in &listed {
        assert!(store.get_by_token(handle).await.unwrap().is_none());
    }
    let session_key = store.session_key(&issued.handle).unwrap();
    let stored = cache.get(&session_key).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(&secret));
    let members = cache
        .set_members(&store.index_key("u9").unwrap())
        .await
        .unwrap();
    assert!(
        members
            .iter()
            .all(|m| !String::from_utf8_lossy(m).contains(&secret))
    );
    for (key, values) in backend.stored().await {
        assert!(!key.contains(&secret), "the token is in key {key}");
        for value in values {
            assert!(
                !String::from_utf8_lossy(&value).contains(&secret),
                "the token is in the value of {key}"
            );
        }
    }
    assert!(store.delete(&issued.handle).await.unwrap());
    assert!(store.get_by_token(&issued.token).await.unwrap().is_none());
}

dashcache_testkit::on_every_backend!(|backend| &backend; no_token_is_stored_and_listings_do_not_authenticate);
