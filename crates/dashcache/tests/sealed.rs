//! `Sealed<C>` on every backend: round trips, tampering, values moved between keys, rotation;
//! sessions and one-time tokens over it.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashcache::sealed::{Keyring, Sealed};
use dashcache::session::{SessionData, SessionStore};
use dashcache::token::OneTimeTokens;
use dashcache::{Cache, Condition, ErrorKind, Keys, Ttl, Write};
use dashcache_testkit::on_every_backend;

const OLD: [u8; 32] = [1; 32];
const NEW: [u8; 32] = [2; 32];

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn values_round_trip_and_are_not_plain_underneath(raw: Arc<dyn Cache>) {
    let sealed = Sealed::new(Arc::clone(&raw), Keyring::new(1, &NEW));
    sealed
        .set("{s}:a", b("alpha"), Ttl::secs(60))
        .await
        .unwrap();
    sealed
        .set_many(&[("s:b", b("beta")), ("s:c", b(""))], Ttl::secs(60))
        .await
        .unwrap();
    assert!(
        sealed
            .set_if_absent("s:d", b("delta"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert_eq!(sealed.get("{s}:a").await.unwrap(), Some(b("alpha")));
    assert_eq!(
        sealed.get_many(&["s:b", "s:missing", "s:c"]).await.unwrap(),
        vec![Some(b("beta")), None, Some(b(""))]
    );
    assert_eq!(sealed.take("s:d").await.unwrap(), Some(b("delta")));
    let writes = [
        Write::Set("{s}:e", b("epsilon"), Ttl::secs(60)),
        Write::Replace("{s}:a", b("alpha2")),
    ];
    assert!(
        sealed
            .write_if(&[Condition::Absent("{s}:e")], &writes)
            .await
            .unwrap()
    );
    assert_eq!(sealed.get("{s}:e").await.unwrap(), Some(b("epsilon")));
    assert_eq!(sealed.get("{s}:a").await.unwrap(), Some(b("alpha2")));
    let underneath = raw.get("{s}:a").await.unwrap().unwrap();
    assert!(
        !underneath.windows(6).any(|w| w == b"alpha2"),
        "plain text reached the cache"
    );
}

async fn a_tampered_value_is_an_error(raw: Arc<dyn Cache>) {
    let sealed = Sealed::new(Arc::clone(&raw), Keyring::new(1, &NEW));
    sealed
        .set("s:a", b("payload"), Ttl::secs(60))
        .await
        .unwrap();
    let good = raw.get("s:a").await.unwrap().unwrap();
    for i in [0, 1, 2, 13, 14, good.len() - 1] {
        let mut bad = good.to_vec();
        bad[i] ^= 0x01;
        raw.set("s:a", Bytes::from(bad), Ttl::secs(60))
            .await
            .unwrap();
        let err = sealed.get("s:a").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Deserialize, "byte {i}");
        assert_eq!(err.key(), Some("s:a"));
    }
    raw.set("s:a", b("never sealed"), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        sealed.get("s:a").await.unwrap_err().kind(),
        ErrorKind::Deserialize
    );
    raw.set("s:a", good.slice(..10), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        sealed.get("s:a").await.unwrap_err().kind(),
        ErrorKind::Deserialize
    );
}

async fn a_value_moved_to_another_key_does_not_open(raw: Arc<dyn Cache>) {
    let sealed = Sealed::new(Arc::clone(&raw), Keyring::new(1, &NEW));
    sealed
        .set("session:alice", b("alice's session"), Ttl::secs(60))
        .await
        .unwrap();
    let copied = raw.get("session:alice").await.unwrap().unwrap();
    raw.set("session:mallory", copied, Ttl::secs(60))
        .await
        .unwrap();
    let err = sealed.get("session:mallory").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deserialize);
}

async fn rotation_reads_old_values_and_writes_with_the_new_key(raw: Arc<dyn Cache>) {
    let before = Sealed::new(Arc::clone(&raw), Keyring::new(1, &OLD));
    before
        .set("s:old", b("sealed with key 1"), Ttl::secs(60))
        .await
        .unwrap();
    let after = Sealed::new(
        Arc::clone(&raw),
        Keyring::new(2, &NEW).with_previous(1, &OLD).unwrap(),
    );
    assert_eq!(
        after.get("s:old").await.unwrap(),
        Some(b("sealed with key 1"))
    );
    after
        .set("s:new", b("sealed with key 2"), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        raw.get("s:new").await.unwrap().unwrap()[1],
        2,
        "new values carry the new key id"
    );
    assert_eq!(
        before.get("s:new").await.unwrap_err().kind(),
        ErrorKind::Deserialize
    );
    // Once the old key is retired, its values no longer open.
    let retired = Sealed::new(Arc::clone(&raw), Keyring::new(2, &NEW));
    assert_eq!(
        retired.get("s:old").await.unwrap_err().kind(),
        ErrorKind::Deserialize
    );
}

async fn sessions_and_tokens_work_sealed(raw: Arc<dyn Cache>) {
    let keys = Keys::new("t", ["session", "oauth_state"]).unwrap();
    let sealed: Arc<dyn Cache> = Arc::new(Sealed::new(Arc::clone(&raw), Keyring::new(1, &NEW)));
    let store: SessionStore = SessionStore::new(Arc::clone(&sealed), keys.clone());
    let issued = store.issue("u1").unwrap();
    let s = SessionData::new(&issued.handle, "u1", Duration::from_secs(600))
        .with_user_agent("secret-agent");
    assert!(store.put(&s, None).await.unwrap());
    assert_eq!(
        store
            .get(&s.id)
            .await
            .unwrap()
            .unwrap()
            .user_agent
            .as_deref(),
        Some("secret-agent")
    );
    assert_eq!(store.list_for_user("u1").await.unwrap(), vec![s.id.clone()]);
    assert!(
        store
            .touch(&s.id, std::time::SystemTime::now(), None)
            .await
            .unwrap()
    );
    assert_eq!(store.revoke_all_for_user("u1").await.unwrap(), 1);
    assert!(
        raw.get(&store.session_key(&s.id).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // The revocation mark is read as an integer: sealed, it must still refuse stale copies.
    assert!(!store.put(&s, None).await.unwrap());
    assert!(store.delete(&s.id).await.is_ok());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = SessionData::new(
        store.issue("u1").unwrap().handle,
        "u1",
        Duration::from_secs(600),
    );
    assert!(store.put(&later, None).await.unwrap());

    let tokens = OneTimeTokens::<String>::new(sealed, keys, "oauth_state");
    let token = tokens
        .issue(&"u1:schwab".to_owned(), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        tokens.consume(&token).await.unwrap().as_deref(),
        Some("u1:schwab")
    );
}

on_every_backend!(
    values_round_trip_and_are_not_plain_underneath,
    a_tampered_value_is_an_error,
    a_value_moved_to_another_key_does_not_open,
    rotation_reads_old_values_and_writes_with_the_new_key,
    sessions_and_tokens_work_sealed,
);
