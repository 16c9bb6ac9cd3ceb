//! The single-key and batch contracts: values, TTLs, take, delete, batches, counters,
//! expiry and pattern deletes.

use super::*;

pub(super) async fn get_miss_is_none(c: Ctx) {
    assert_eq!(c.cache.get(&c.key("nothing")).await.unwrap(), None);
}

pub(super) async fn set_then_get_round_trips_any_bytes(c: Ctx) {
    let values = [
        Bytes::from_static(b"plain"),
        Bytes::from_static(b""),
        Bytes::from_static(&[0, 159, 146, 150, 255]),
        Bytes::from("é ünïcode ✓"),
    ];
    for (i, value) in values.into_iter().enumerate() {
        let key = c.key(&format!("v{i}"));
        c.cache
            .set(&key, value.clone(), Ttl::secs(60))
            .await
            .unwrap();
        assert_eq!(c.cache.get(&key).await.unwrap(), Some(value));
    }
}

pub(super) async fn set_overwrites_value_and_ttl(c: Ctx) {
    let key = c.key("k");
    c.cache.set(&key, b("one"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&key, b("two"), Ttl::Persist).await.unwrap();
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("two")));
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    c.cache.set(&key, b("three"), Ttl::secs(5)).await.unwrap();
    expires_within(&c, &key, Duration::from_secs(5)).await;
    c.cache.delete(&key).await.unwrap();
}

pub(super) async fn ttl_expiry_is_real(c: Ctx) {
    let key = c.key("short");
    let set = c.key("short-set");
    c.cache.set(&key, b("v"), Ttl::millis(150)).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::millis(150))
        .await
        .unwrap();
    assert!(c.cache.exists(&key).await.unwrap());
    c.wait(Duration::from_millis(400)).await;
    assert_eq!(c.cache.get(&key).await.unwrap(), None);
    assert!(!c.cache.exists(&key).await.unwrap());
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Missing);
    assert!(c.cache.set_members(&set).await.unwrap().is_empty());
    assert!(
        c.cache
            .set_if_absent(&key, b("again"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("again")));
}

pub(super) async fn ttl_reports_missing_persistent_and_remaining(c: Ctx) {
    let (missing, persistent, expiring) = (c.key("m"), c.key("p"), c.key("e"));
    assert_eq!(c.cache.ttl(&missing).await.unwrap(), KeyTtl::Missing);
    c.cache
        .set(&persistent, b("v"), Ttl::Persist)
        .await
        .unwrap();
    assert_eq!(c.cache.ttl(&persistent).await.unwrap(), KeyTtl::Persistent);
    c.cache
        .set(&expiring, b("v"), Ttl::millis(10_500))
        .await
        .unwrap();
    let left = expires_within(&c, &expiring, Duration::from_millis(10_500)).await;
    assert!(left > Duration::from_secs(9), "{left:?}");
    c.cache
        .delete_many(&[&persistent, &expiring])
        .await
        .unwrap();
}

pub(super) async fn set_if_absent_writes_once(c: Ctx) {
    let key = c.key("k");
    assert!(
        c.cache
            .set_if_absent(&key, b("first"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert!(
        !c.cache
            .set_if_absent(&key, b("second"), Ttl::secs(60))
            .await
            .unwrap()
    );
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("first")));
    expires_within(&c, &key, Duration::from_secs(60)).await;
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(
        !c.cache
            .set_if_absent(&set, b("x"), Ttl::secs(60))
            .await
            .unwrap()
    );
}

pub(super) async fn take_returns_the_value_once(c: Ctx) {
    let key = c.key("k");
    c.cache.set(&key, b("once"), Ttl::secs(60)).await.unwrap();
    assert_eq!(c.cache.take(&key).await.unwrap(), Some(b("once")));
    assert_eq!(c.cache.take(&key).await.unwrap(), None);
    assert!(!c.cache.exists(&key).await.unwrap());
}

pub(super) async fn take_of_a_set_is_wrong_type_and_keeps_it(c: Ctx) {
    let key = c.key("set");
    c.cache
        .set_add(&key, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(kind(c.cache.take(&key).await), Some(ErrorKind::WrongType));
    assert_eq!(c.cache.set_members(&key).await.unwrap(), vec![b("m")]);
}

pub(super) async fn delete_reports_removal(c: Ctx) {
    let key = c.key("k");
    assert!(!c.cache.delete(&key).await.unwrap());
    c.cache.set(&key, b("v"), Ttl::secs(60)).await.unwrap();
    assert!(c.cache.delete(&key).await.unwrap());
    assert!(!c.cache.delete(&key).await.unwrap());
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(c.cache.delete(&set).await.unwrap());
}

pub(super) async fn delete_many_counts_removed_keys(c: Ctx) {
    let (a, bk, missing) = (c.key("a"), c.key("b"), c.key("missing"));
    c.cache.set(&a, b("1"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&bk, b("2"), Ttl::secs(60)).await.unwrap();
    let removed = c.cache.delete_many(&[&a, &missing, &bk, &a]).await.unwrap();
    assert_eq!(removed, 2);
    assert!(!c.cache.exists(&a).await.unwrap());
    assert!(!c.cache.exists(&bk).await.unwrap());
}

pub(super) async fn exists_sees_every_type(c: Ctx) {
    let (s, set) = (c.key("s"), c.key("set"));
    assert!(!c.cache.exists(&s).await.unwrap());
    c.cache.set(&s, b("v"), Ttl::secs(60)).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(c.cache.exists(&s).await.unwrap());
    assert!(c.cache.exists(&set).await.unwrap());
}

pub(super) async fn get_many_keeps_order_misses_and_duplicates(c: Ctx) {
    let (k1, k2, miss, set) = (c.key("1"), c.key("2"), c.key("miss"), c.key("set"));
    c.cache.set(&k1, b("one"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&k2, b("two"), Ttl::secs(60)).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let got = c
        .cache
        .get_many(&[&k2, &miss, &k1, &k2, &set])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(b("two")), None, Some(b("one")), Some(b("two")), None]
    );
}

pub(super) async fn empty_batches_are_no_ops(c: Ctx) {
    assert!(c.cache.get_many(&[]).await.unwrap().is_empty());
    assert_eq!(c.cache.delete_many(&[]).await.unwrap(), 0);
    c.cache.set_many(&[], Ttl::secs(60)).await.unwrap();
    assert_eq!(
        c.cache
            .set_add(&c.key("set"), &[], Ttl::secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(c.cache.set_remove(&c.key("set"), &[]).await.unwrap(), 0);
    assert!(!c.cache.exists(&c.key("set")).await.unwrap());
}

pub(super) async fn set_many_writes_all_with_the_ttl(c: Ctx) {
    let keys: Vec<String> = (0..50).map(|i| c.key(&format!("k{i}"))).collect();
    let entries: Vec<(&str, Bytes)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), Bytes::from(i.to_string())))
        .collect();
    c.cache.set_many(&entries, Ttl::secs(30)).await.unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.cache.get_many(&refs).await.unwrap();
    for (i, value) in got.into_iter().enumerate() {
        assert_eq!(value, Some(Bytes::from(i.to_string())));
    }
    for key in &keys[..3] {
        let left = expires_within(&c, key, Duration::from_secs(30)).await;
        assert!(left > Duration::from_secs(25), "{left:?}");
    }
    c.cache.set_many(&entries[..2], Ttl::Persist).await.unwrap();
    assert_eq!(c.cache.ttl(&keys[0]).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(c.cache.delete_many(&refs).await.unwrap(), 50);
}

pub(super) async fn set_many_is_all_or_nothing_on_bad_input(c: Ctx) {
    let (ok1, ok2) = (c.key("ok1"), c.key("ok2"));
    let too_big = Bytes::from(vec![0u8; Limits::default().max_value_bytes + 1]);
    let bad_batches: Vec<Vec<(&str, Bytes)>> = vec![
        vec![(ok1.as_str(), b("1")), ("", b("2")), (ok2.as_str(), b("3"))],
        vec![(ok1.as_str(), b("1")), (ok2.as_str(), too_big)],
    ];
    for batch in bad_batches {
        assert!(c.cache.set_many(&batch, Ttl::secs(60)).await.is_err());
        assert_eq!(
            c.cache.get_many(&[&ok1, &ok2]).await.unwrap(),
            vec![None, None]
        );
    }
    let good = [(ok1.as_str(), b("1"))];
    assert_eq!(
        kind(c.cache.set_many(&good, Ttl::secs(0)).await),
        Some(ErrorKind::InvalidArgument)
    );
    assert_eq!(c.cache.get(&ok1).await.unwrap(), None);
}

pub(super) async fn increment_counts_from_zero_both_ways(c: Ctx) {
    let key = c.key("n");
    assert_eq!(c.cache.increment(&key, 1, None).await.unwrap(), 1);
    assert_eq!(c.cache.increment(&key, 41, None).await.unwrap(), 42);
    assert_eq!(c.cache.increment(&key, -50, None).await.unwrap(), -8);
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("-8")));
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    let fresh = c.key("neg");
    assert_eq!(c.cache.increment(&fresh, -3, None).await.unwrap(), -3);
    c.cache.set(&fresh, b("10"), Ttl::secs(60)).await.unwrap();
    assert_eq!(c.cache.increment(&fresh, 5, None).await.unwrap(), 15);
    c.cache.delete_many(&[&key, &fresh]).await.unwrap();
}

pub(super) async fn increment_sets_ttl_only_when_missing(c: Ctx) {
    // A new counter gets the TTL in the same step.
    let fresh = c.key("fresh");
    assert_eq!(
        c.cache
            .increment(&fresh, 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        1
    );
    expires_within(&c, &fresh, Duration::from_secs(60)).await;
    // An existing TTL stands (EXPIRE NX).
    let short = c.key("short");
    c.cache.set(&short, b("5"), Ttl::secs(10)).await.unwrap();
    assert_eq!(
        c.cache
            .increment(&short, 1, Some(Ttl::secs(600)))
            .await
            .unwrap(),
        6
    );
    expires_within(&c, &short, Duration::from_secs(10)).await;
    // A counter left without a TTL gets one: no counter is left without expiry.
    let bare = c.key("bare");
    c.cache.increment(&bare, 1, None).await.unwrap();
    assert_eq!(c.cache.ttl(&bare).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(
        c.cache
            .increment(&bare, 1, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        2
    );
    expires_within(&c, &bare, Duration::from_secs(60)).await;
    // The exact value survives above 2^53.
    let big = c.key("big");
    let start = (1i64 << 60) + 1;
    c.cache
        .set(&big, Bytes::from(start.to_string()), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        c.cache
            .increment(&big, 2, Some(Ttl::secs(60)))
            .await
            .unwrap(),
        start + 2
    );
}

pub(super) async fn increment_of_a_non_integer_is_wrong_type_and_changes_nothing(c: Ctx) {
    for (i, text) in [
        "abc",
        "1.5",
        "007",
        " 1",
        "+1",
        "-0",
        "",
        "99999999999999999999",
    ]
    .into_iter()
    .enumerate()
    {
        let key = c.key(&format!("k{i}"));
        c.cache.set(&key, b(text), Ttl::Persist).await.unwrap();
        for ttl in [None, Some(Ttl::secs(60))] {
            assert_eq!(
                kind(c.cache.increment(&key, 1, ttl).await),
                Some(ErrorKind::WrongType),
                "{text:?} with {ttl:?}"
            );
        }
        assert_eq!(c.cache.get(&key).await.unwrap(), Some(b(text)));
        assert_eq!(
            c.cache.ttl(&key).await.unwrap(),
            KeyTtl::Persistent,
            "{text:?}"
        );
        c.cache.delete(&key).await.unwrap();
    }
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(
        kind(c.cache.increment(&set, 1, None).await),
        Some(ErrorKind::WrongType)
    );
}

pub(super) async fn increment_overflow_is_invalid_argument_and_changes_nothing(c: Ctx) {
    let (max, min) = (c.key("max"), c.key("min"));
    c.cache
        .set(&max, Bytes::from(i64::MAX.to_string()), Ttl::Persist)
        .await
        .unwrap();
    c.cache
        .set(&min, Bytes::from(i64::MIN.to_string()), Ttl::Persist)
        .await
        .unwrap();
    for ttl in [None, Some(Ttl::secs(60))] {
        assert_eq!(
            kind(c.cache.increment(&max, 1, ttl).await),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(
            kind(c.cache.increment(&min, -1, ttl).await),
            Some(ErrorKind::InvalidArgument)
        );
    }
    assert_eq!(
        c.cache.get(&max).await.unwrap(),
        Some(Bytes::from(i64::MAX.to_string()))
    );
    assert_eq!(c.cache.ttl(&max).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(
        c.cache.increment(&max, -1, None).await.unwrap(),
        i64::MAX - 1
    );
    c.cache.delete_many(&[&max, &min]).await.unwrap();
}

pub(super) async fn expire_sets_and_removes_ttls(c: Ctx) {
    let key = c.key("k");
    assert!(!c.cache.expire(&key, Ttl::secs(10)).await.unwrap());
    assert!(!c.cache.expire(&key, Ttl::Persist).await.unwrap());
    c.cache.set(&key, b("v"), Ttl::Persist).await.unwrap();
    assert!(c.cache.expire(&key, Ttl::secs(10)).await.unwrap());
    expires_within(&c, &key, Duration::from_secs(10)).await;
    assert!(c.cache.expire(&key, Ttl::Persist).await.unwrap());
    assert_eq!(c.cache.ttl(&key).await.unwrap(), KeyTtl::Persistent);
    assert!(
        c.cache.expire(&key, Ttl::Persist).await.unwrap(),
        "true for an existing key"
    );
    assert!(c.cache.expire(&key, Ttl::millis(100)).await.unwrap());
    c.wait(Duration::from_millis(300)).await;
    assert!(!c.cache.exists(&key).await.unwrap());
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(c.cache.expire(&set, Ttl::secs(5)).await.unwrap());
    expires_within(&c, &set, Duration::from_secs(5)).await;
}

pub(super) async fn delete_pattern_deletes_exactly_the_matches(c: Ctx) {
    let matching = ["user:1:a", "user:1:b", "user:1:c:d"];
    let others = ["user:10:a", "user:2:a", "user:1", "other:1:a"];
    for name in matching.iter().chain(&others) {
        c.cache
            .set(&c.key(name), b("v"), Ttl::secs(60))
            .await
            .unwrap();
    }
    c.cache
        .set_add(&c.key("user:1:set"), &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let deleted = c.cache.delete_pattern(&c.key("user:1:*")).await.unwrap();
    assert_eq!(deleted, 4, "three strings and one set");
    for name in matching {
        assert!(!c.cache.exists(&c.key(name)).await.unwrap(), "{name}");
    }
    for name in others {
        assert!(
            c.cache.exists(&c.key(name)).await.unwrap(),
            "{name} must survive"
        );
    }
    assert_eq!(c.cache.delete_pattern(&c.key("user:1:*")).await.unwrap(), 0);
    assert_eq!(
        c.cache.delete_pattern(&c.key("nothing:*")).await.unwrap(),
        0
    );
    assert_eq!(c.cache.delete_pattern(&c.key("*")).await.unwrap(), 4);
}

pub(super) async fn delete_pattern_honours_glob_syntax(c: Ctx) {
    let names = ["a1", "a2", "a3", "b1", "a*", "a?", "ab", "[a]"];
    for name in names {
        c.cache
            .set(&c.key(name), b("v"), Ttl::secs(60))
            .await
            .unwrap();
    }
    let cases: &[(&str, &[&str])] = &[
        ("a\\*", &["a*"]),
        ("a[12]", &["a1", "a2"]),
        ("a[^0-9*?]", &["ab"]),
        ("\\[a\\]", &["[a]"]),
        ("?1", &["b1"]),
    ];
    for (pattern, expected) in cases {
        let deleted = c.cache.delete_pattern(&c.key(pattern)).await.unwrap();
        assert_eq!(deleted, expected.len() as u64, "{pattern}");
        for name in *expected {
            assert!(
                !c.cache.exists(&c.key(name)).await.unwrap(),
                "{pattern} {name}"
            );
        }
    }
    for survivor in ["a3", "a?"] {
        assert!(
            c.cache.exists(&c.key(survivor)).await.unwrap(),
            "{survivor}"
        );
    }
}

pub(super) async fn delete_pattern_sweeps_many_batches(c: Ctx) {
    let keys: Vec<String> = (0..3000)
        .map(|i| c.key(&format!("{}:{i}", if i % 3 == 0 { "hit" } else { "miss" })))
        .collect();
    for chunk in keys.chunks(500) {
        let entries: Vec<(&str, Bytes)> = chunk.iter().map(|k| (k.as_str(), b("v"))).collect();
        c.cache.set_many(&entries, Ttl::secs(120)).await.unwrap();
    }
    assert_eq!(c.cache.delete_pattern(&c.key("hit:*")).await.unwrap(), 1000);
    assert_eq!(
        c.cache.delete_pattern(&c.key("miss:*")).await.unwrap(),
        2000
    );
}
