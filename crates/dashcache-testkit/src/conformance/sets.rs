//! Sets, and bad input of every kind: keys, TTLs, sizes, patterns, corrupt JSON.

use super::*;

pub(super) async fn sets_add_remove_and_list_members(c: Ctx) {
    let key = c.key("s");
    assert!(c.cache.set_members(&key).await.unwrap().is_empty());
    assert_eq!(
        c.cache
            .set_add(&key, &[b("a"), b("b"), b("a")], Ttl::secs(60))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        c.cache
            .set_add(&key, &[b("b"), b("c")], Ttl::secs(60))
            .await
            .unwrap(),
        1
    );
    let mut members = c.cache.set_members(&key).await.unwrap();
    members.sort();
    assert_eq!(members, vec![b("a"), b("b"), b("c")]);
    assert_eq!(
        c.cache.set_remove(&key, &[b("a"), b("zz")]).await.unwrap(),
        1
    );
    assert_eq!(
        c.cache
            .set_remove(&c.key("missing"), &[b("a")])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        c.cache.set_remove(&key, &[b("b"), b("c")]).await.unwrap(),
        2
    );
    assert!(
        !c.cache.exists(&key).await.unwrap(),
        "removing the last member removes the key"
    );
}

pub(super) async fn set_add_refreshes_the_ttl(c: Ctx) {
    let key = c.key("s");
    c.cache
        .set_add(&key, &[b("a")], Ttl::secs(5))
        .await
        .unwrap();
    expires_within(&c, &key, Duration::from_secs(5)).await;
    c.cache
        .set_add(&key, &[b("a")], Ttl::secs(100))
        .await
        .unwrap();
    let left = expires_within(&c, &key, Duration::from_secs(100)).await;
    assert!(
        left > Duration::from_secs(90),
        "set_add sets the TTL on every call: {left:?}"
    );
    c.cache
        .set_add(&key, &[b("b")], Ttl::Persist)
        .await
        .unwrap();
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    // Removing a member keeps the TTL of the set.
    c.cache
        .set_add(&key, &[b("c")], Ttl::secs(50))
        .await
        .unwrap();
    c.cache.set_remove(&key, &[b("c")]).await.unwrap();
    expires_within(&c, &key, Duration::from_secs(50)).await;
    c.cache.delete(&key).await.unwrap();
}

pub(super) async fn sets_and_strings_do_not_mix(c: Ctx) {
    let (string, set) = (c.key("string"), c.key("set"));
    c.cache.set(&string, b("v"), Ttl::Persist).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let m = [b("m")];
    assert_eq!(
        kind(c.cache.set_add(&string, &m, Ttl::secs(9)).await),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(
        kind(c.cache.set_remove(&string, &m).await),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(
        kind(c.cache.set_members(&string).await),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(kind(c.cache.get(&set).await), Some(ErrorKind::WrongType));
    // A failed set_add changed nothing, not even the TTL.
    assert_eq!(c.cache.get(&string).await.unwrap(), Some(b("v")));
    assert_eq!(c.cache.ttl(&string).await.unwrap(), KeyTtl::Persistent);
    // set overwrites any type.
    c.cache
        .set(&set, b("now a string"), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(c.cache.get(&set).await.unwrap(), Some(b("now a string")));
    c.cache.delete(&string).await.unwrap();
}

pub(super) async fn bad_keys_are_invalid_key_everywhere(c: Ctx) {
    let long = c.key(&"k".repeat(Limits::default().max_key_bytes));
    let bad = ["", "with\nnewline", "nul\0byte", "del\u{7f}", long.as_str()];
    let v = b("v");
    let t = Ttl::secs(60);
    for key in bad {
        let show = key.chars().take(20).collect::<String>();
        let results = [
            kind(c.cache.get(key).await),
            kind(c.cache.set(key, v.clone(), t).await),
            kind(c.cache.set_if_absent(key, v.clone(), t).await),
            kind(c.cache.take(key).await),
            kind(c.cache.delete(key).await),
            kind(c.cache.delete_many(&[key]).await),
            kind(c.cache.exists(key).await),
            kind(c.cache.get_many(&[key]).await),
            kind(c.cache.set_many(&[(key, v.clone())], t).await),
            kind(c.cache.increment(key, 1, None).await),
            kind(c.cache.expire(key, t).await),
            kind(c.cache.ttl(key).await),
            kind(c.cache.set_add(key, std::slice::from_ref(&v), t).await),
            kind(c.cache.set_remove(key, std::slice::from_ref(&v)).await),
            kind(c.cache.set_members(key).await),
            kind(c.cache.get_str(key).await),
            kind(c.cache.write_if(&[Condition::Absent(key)], &[]).await),
            kind(c.cache.write_if(&[], &[Write::Delete(key)]).await),
        ];
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(
                result,
                Some(ErrorKind::InvalidKey),
                "method #{i} with key {show:?}"
            );
        }
    }
    let at_limit = c.key(&"k".repeat(Limits::default().max_key_bytes - c.ns.len()));
    assert_eq!(at_limit.len(), Limits::default().max_key_bytes);
    c.cache.set(&at_limit, v, Ttl::secs(5)).await.unwrap();
    assert!(c.cache.delete(&at_limit).await.unwrap());
}

pub(super) async fn zero_ttls_are_invalid_arguments_everywhere(c: Ctx) {
    let (key, v, zero) = (c.key("k"), b("v"), Ttl::secs(0));
    let results = [
        kind(c.cache.set(&key, v.clone(), zero).await),
        kind(c.cache.set_if_absent(&key, v.clone(), zero).await),
        kind(c.cache.set_many(&[(&key, v.clone())], zero).await),
        kind(c.cache.increment(&key, 1, Some(zero)).await),
        kind(c.cache.expire(&key, zero).await),
        kind(c.cache.set_add(&key, std::slice::from_ref(&v), zero).await),
        kind(
            c.cache
                .set(
                    &key,
                    v.clone(),
                    Ttl::from(Duration::from_secs(200 * 365 * 86_400)),
                )
                .await,
        ),
    ];
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result, Some(ErrorKind::InvalidArgument), "method #{i}");
    }
    assert!(!c.cache.exists(&key).await.unwrap(), "nothing was written");
}

pub(super) async fn values_over_the_limit_are_too_large(c: Ctx) {
    let limit = Limits::default().max_value_bytes;
    let (key, set) = (c.key("big"), c.key("set"));
    let too_big = Bytes::from(vec![7u8; limit + 1]);
    let err = c
        .cache
        .set(&key, too_big.clone(), Ttl::secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(err.key(), Some(key.as_str()));
    assert_eq!(
        kind(
            c.cache
                .set_if_absent(&key, too_big.clone(), Ttl::secs(60))
                .await
        ),
        Some(ErrorKind::TooLarge)
    );
    assert_eq!(
        kind(c.cache.set_add(&set, &[too_big], Ttl::secs(60)).await),
        Some(ErrorKind::TooLarge)
    );
    assert!(!c.cache.exists(&key).await.unwrap());
    let at_limit = Bytes::from(vec![7u8; limit]);
    c.cache
        .set(&key, at_limit.clone(), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        c.cache.get(&key).await.unwrap().map(|v| v.len()),
        Some(limit)
    );
    c.cache.delete(&key).await.unwrap();
}

pub(super) async fn empty_pattern_is_invalid_argument(c: Ctx) {
    assert_eq!(
        kind(c.cache.delete_pattern("").await),
        Some(ErrorKind::InvalidArgument)
    );
    assert_eq!(
        kind(c.cache.delete_pattern("a\nb*").await),
        Some(ErrorKind::InvalidArgument)
    );
}

pub(super) async fn json_round_trips_and_corrupt_json_names_the_key(c: Ctx) {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
        roles: Vec<String>,
    }
    let key = c.key("user");
    let user = User {
        id: 7,
        name: "Ada".into(),
        roles: vec!["admin".into()],
    };
    c.cache.set_json(&key, &user, Ttl::secs(60)).await.unwrap();
    assert_eq!(c.cache.get_json::<User>(&key).await.unwrap(), Some(user));
    assert_eq!(
        c.cache.get_json::<User>(&c.key("missing")).await.unwrap(),
        None
    );

    c.cache
        .set(&key, b("{not json"), Ttl::secs(60))
        .await
        .unwrap();
    let err = c.cache.get_json::<User>(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deserialize);
    assert_eq!(err.key(), Some(key.as_str()));
    c.cache
        .set(&key, b("{\"id\":\"seven\"}"), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        kind(c.cache.get_json::<User>(&key).await),
        Some(ErrorKind::Deserialize)
    );
    c.cache
        .set(&key, Bytes::from_static(&[0xff, 0xfe]), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        kind(c.cache.get_str(&key).await),
        Some(ErrorKind::Deserialize)
    );
    c.cache.set_str(&key, "text", Ttl::secs(60)).await.unwrap();
    assert_eq!(
        c.cache.get_str(&key).await.unwrap().as_deref(),
        Some("text")
    );

    let mut bad_map = std::collections::HashMap::new();
    bad_map.insert(vec![1u8], 1);
    assert_eq!(
        kind(c.cache.set_json(&key, &bad_map, Ttl::secs(60)).await),
        Some(ErrorKind::Serialize)
    );
}
