//! Atomicity: single winners under contention, `write_if` and its conditions, multi-key
//! writes never seen half done; and `ping`.

use super::*;

pub(super) async fn take_is_exactly_once_under_contention(c: Ctx) {
    let key = c.key("token");
    c.cache
        .set(&key, b("payload"), Ttl::secs(60))
        .await
        .unwrap();
    let takers = (0..200).map(|_| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move { cache.take(&key).await })
    });
    let results = join_all(takers).await;
    let winners = results
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(Option::is_some)
        .count();
    assert_eq!(winners, 1);
}

pub(super) async fn increment_is_atomic_under_contention(c: Ctx) {
    let key = c.key("counter");
    let tasks = (0..1000).map(|_| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move { cache.increment(&key, 1, Some(Ttl::secs(60))).await })
    });
    let mut seen: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=1000).collect::<Vec<_>>(),
        "every increment saw a distinct value"
    );
    assert_eq!(c.cache.get(&key).await.unwrap(), Some(b("1000")));
    expires_within(&c, &key, Duration::from_secs(60)).await;
}

pub(super) async fn set_if_absent_has_one_winner_under_contention(c: Ctx) {
    let key = c.key("lock");
    let tasks = (0..200).map(|i| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move {
            cache
                .set_if_absent(&key, Bytes::from(i.to_string()), Ttl::secs(60))
                .await
        })
    });
    let wins = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
}

pub(super) async fn set_add_is_atomic_under_contention(c: Ctx) {
    let key = c.key("index");
    let tasks = (0..200).map(|i| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move {
            cache
                .set_add(&key, &[Bytes::from(format!("m{i}"))], Ttl::secs(60))
                .await
        })
    });
    let added: u64 = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .sum();
    assert_eq!(added, 200);
    assert_eq!(c.cache.set_members(&key).await.unwrap().len(), 200);
}

pub(super) async fn write_if_applies_every_write_when_conditions_hold(c: Ctx) {
    let (a, bk, set, gone) = (
        c.tagged("a"),
        c.tagged("b"),
        c.tagged("set"),
        c.tagged("gone"),
    );
    c.cache.set(&gone, b("x"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&bk, b("old"), Ttl::secs(60)).await.unwrap();
    let members = [b("m1"), b("m2")];
    let applied = c
        .cache
        .write_if(
            &[
                Condition::Absent(&a),
                Condition::Exists(&bk),
                Condition::MissingOrBelow(&c.tagged("v"), 5),
            ],
            &[
                Write::Set(&a, b("new"), Ttl::secs(30)),
                Write::Replace(&bk, b("replaced")),
                Write::SetAdd(&set, &members, Ttl::secs(30)),
                Write::Delete(&gone),
            ],
        )
        .await
        .unwrap();
    assert!(applied);
    assert_eq!(c.cache.get(&a).await.unwrap(), Some(b("new")));
    expires_within(&c, &a, Duration::from_secs(30)).await;
    assert_eq!(c.cache.get(&bk).await.unwrap(), Some(b("replaced")));
    let mut got = c.cache.set_members(&set).await.unwrap();
    got.sort();
    assert_eq!(got, members.to_vec());
    assert!(!c.cache.exists(&gone).await.unwrap());
    assert!(
        c.cache.write_if(&[], &[]).await.unwrap(),
        "nothing to do is done"
    );
}

pub(super) async fn write_if_refuses_and_writes_nothing_when_a_condition_fails(c: Ctx) {
    let (present, missing, version, target) =
        (c.tagged("p"), c.tagged("m"), c.tagged("v"), c.tagged("t"));
    c.cache.set(&present, b("x"), Ttl::secs(60)).await.unwrap();
    c.cache.set(&version, b("10"), Ttl::secs(60)).await.unwrap();
    let failing = [
        Condition::Absent(&present),
        Condition::Exists(&missing),
        Condition::MissingOrBelow(&version, 10),
        Condition::MissingOrBelow(&version, 9),
    ];
    for condition in failing {
        let applied = c
            .cache
            .write_if(
                &[Condition::Absent(&missing), condition],
                &[Write::Set(&target, b("w"), Ttl::secs(60))],
            )
            .await
            .unwrap();
        assert!(!applied, "{condition:?}");
        assert!(
            !c.cache.exists(&target).await.unwrap(),
            "{condition:?} wrote"
        );
    }
    let applied = c
        .cache
        .write_if(
            &[Condition::MissingOrBelow(&version, 11)],
            &[Write::Set(&target, b("w"), Ttl::secs(60))],
        )
        .await
        .unwrap();
    assert!(applied);
}

pub(super) async fn write_if_compares_integers_exactly(c: Ctx) {
    let k = c.key("n");
    let big = (1i64 << 60) + 1;
    let holds = |bound: i64| {
        let (cache, k) = (Arc::clone(&c.cache), k.clone());
        async move {
            cache
                .write_if(&[Condition::MissingOrBelow(&k, bound)], &[])
                .await
        }
    };
    assert!(
        holds(i64::MIN).await.unwrap(),
        "a missing key is below anything"
    );
    for (value, bound, below) in [
        (big, big + 1, true),
        (big, big, false),
        (big + 1, big, false),
        (-5, 0, true),
        (-5, -10, false),
        (-10, -5, true),
        (0, 0, false),
        (0, 1, true),
        (i64::MIN, i64::MAX, true),
        (i64::MAX, i64::MAX, false),
        (i64::MIN, i64::MIN, false),
    ] {
        c.cache
            .set(&k, Bytes::from(value.to_string()), Ttl::secs(60))
            .await
            .unwrap();
        assert_eq!(holds(bound).await.unwrap(), below, "{value} < {bound}");
    }
    for text in ["abc", "007", "1.5", "99999999999999999999", ""] {
        c.cache.set(&k, b(text), Ttl::secs(60)).await.unwrap();
        assert_eq!(kind(holds(5).await), Some(ErrorKind::WrongType), "{text:?}");
    }
    let set = c.key("set");
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let on_set = c
        .cache
        .write_if(&[Condition::MissingOrBelow(&set, 5)], &[])
        .await;
    assert_eq!(kind(on_set), Some(ErrorKind::WrongType));
}

pub(super) async fn write_if_int_equals_matches_only_that_integer(c: Ctx) {
    let k = c.key("gen");
    let big = (1i64 << 60) + 1;
    let equals = |expected: i64| {
        let (cache, k) = (Arc::clone(&c.cache), k.clone());
        async move {
            cache
                .write_if(&[Condition::IntEquals(&k, expected)], &[])
                .await
        }
    };
    assert!(!equals(0).await.unwrap(), "a missing key equals nothing");
    for (value, expected, holds) in [
        (big, big, true),
        (big, big + 1, false),
        (big + 1, big, false),
        (0, 0, true),
        (-5, -5, true),
        (-5, 5, false),
        (i64::MIN, i64::MIN, true),
        (i64::MAX, i64::MAX, true),
        (i64::MAX, i64::MIN, false),
    ] {
        c.cache
            .set(&k, Bytes::from(value.to_string()), Ttl::secs(60))
            .await
            .unwrap();
        assert_eq!(
            equals(expected).await.unwrap(),
            holds,
            "{value} == {expected}"
        );
    }
    for text in ["abc", "007", "+5", "-0", ""] {
        c.cache.set(&k, b(text), Ttl::secs(60)).await.unwrap();
        assert_eq!(
            kind(equals(5).await),
            Some(ErrorKind::WrongType),
            "{text:?}"
        );
    }
    let (gen_key, target) = (c.tagged("g"), c.tagged("t"));
    c.cache.set(&gen_key, b("7"), Ttl::secs(60)).await.unwrap();
    let fill = |expected: i64| {
        let (cache, gen_key, target) = (Arc::clone(&c.cache), gen_key.clone(), target.clone());
        async move {
            cache
                .write_if(
                    &[Condition::IntEquals(&gen_key, expected)],
                    &[
                        Write::Set(&target, b("v"), Ttl::secs(60)),
                        Write::SetInt(&gen_key, expected + 1, Ttl::secs(60)),
                    ],
                )
                .await
                .unwrap()
        }
    };
    assert!(!fill(6).await);
    assert!(!c.cache.exists(&target).await.unwrap());
    assert!(fill(7).await, "the fill of generation 7 commits");
    assert!(!fill(7).await, "and only one fill of it");
    assert_eq!(c.cache.get(&gen_key).await.unwrap(), Some(b("8")));
}

pub(super) async fn write_if_differs_holds_until_the_marker_is_there(c: Ctx) {
    let (marker, target, set) = (c.tagged("marker"), c.tagged("target"), c.tagged("set"));
    let step = |stamp: i64| {
        let (cache, marker, target) = (Arc::clone(&c.cache), marker.clone(), target.clone());
        async move {
            cache
                .write_if(
                    &[Condition::Differs(&marker, stamp)],
                    &[
                        Write::Delete(&target),
                        Write::SetInt(&marker, stamp, Ttl::secs(60)),
                    ],
                )
                .await
                .unwrap()
        }
    };
    c.cache.set(&target, b("v"), Ttl::secs(60)).await.unwrap();
    assert!(step(-7).await, "a missing marker differs");
    assert!(!c.cache.exists(&target).await.unwrap());
    c.cache.set(&target, b("v"), Ttl::secs(60)).await.unwrap();
    assert!(!step(-7).await, "the same step again does nothing");
    assert!(c.cache.exists(&target).await.unwrap());
    assert!(step(8).await, "another step differs");
    // Anything else differs, without a type error: text, or another kind of value.
    c.cache.set(&marker, b("x8"), Ttl::secs(60)).await.unwrap();
    assert!(step(8).await);
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    assert!(
        c.cache
            .write_if(&[Condition::Differs(&set, 1)], &[])
            .await
            .unwrap()
    );
}

pub(super) async fn write_if_replace_keeps_the_ttl_and_skips_missing_keys(c: Ctx) {
    let (k, missing) = (c.tagged("k"), c.tagged("missing"));
    c.cache.set(&k, b("v1"), Ttl::secs(20)).await.unwrap();
    let writes = [
        Write::Replace(&k, b("v2")),
        Write::Replace(&missing, b("v2")),
    ];
    assert!(c.cache.write_if(&[], &writes).await.unwrap());
    assert_eq!(c.cache.get(&k).await.unwrap(), Some(b("v2")));
    let left = expires_within(&c, &k, Duration::from_secs(20)).await;
    assert!(left > Duration::from_secs(15), "{left:?}");
    assert!(
        !c.cache.exists(&missing).await.unwrap(),
        "replace never creates a key"
    );
}

pub(super) async fn write_if_set_add_extends_but_never_shortens(c: Ctx) {
    let (fresh, long, short, forever) = (
        c.tagged("fresh"),
        c.tagged("long"),
        c.tagged("short"),
        c.tagged("forever"),
    );
    let m = [b("m")];
    let n = [b("n")];
    c.cache.set_add(&long, &m, Ttl::secs(100)).await.unwrap();
    c.cache.set_add(&short, &m, Ttl::secs(5)).await.unwrap();
    c.cache.set_add(&forever, &m, Ttl::Persist).await.unwrap();
    let writes = [
        Write::SetAdd(&fresh, &n, Ttl::secs(50)),
        Write::SetAdd(&long, &n, Ttl::secs(50)),
        Write::SetAdd(&short, &n, Ttl::secs(50)),
        Write::SetAdd(&forever, &n, Ttl::secs(50)),
    ];
    assert!(c.cache.write_if(&[], &writes).await.unwrap());
    let fresh_left = expires_within(&c, &fresh, Duration::from_secs(50)).await;
    assert!(
        fresh_left > Duration::from_secs(45),
        "a new set gets the TTL: {fresh_left:?}"
    );
    let long_left = expires_within(&c, &long, Duration::from_secs(100)).await;
    assert!(
        long_left > Duration::from_secs(90),
        "a longer TTL stands: {long_left:?}"
    );
    let short_left = expires_within(&c, &short, Duration::from_secs(50)).await;
    assert!(
        short_left > Duration::from_secs(45),
        "a shorter TTL is extended: {short_left:?}"
    );
    assert_eq!(c.cache.ttl(&forever).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(c.cache.set_members(&short).await.unwrap().len(), 2);
    let persist = [Write::SetAdd(&long, &n, Ttl::Persist)];
    assert!(c.cache.write_if(&[], &persist).await.unwrap());
    assert_eq!(c.cache.ttl(&long).await.unwrap(), KeyTtl::Persistent);
}

pub(super) async fn write_if_wrong_type_changes_nothing(c: Ctx) {
    let (a, string, set) = (c.tagged("a"), c.tagged("string"), c.tagged("set"));
    c.cache.set(&string, b("s"), Ttl::Persist).await.unwrap();
    c.cache
        .set_add(&set, &[b("m")], Ttl::secs(60))
        .await
        .unwrap();
    let m = [b("x")];
    let attempts: [&[Write<'_>]; 2] = [
        &[
            Write::Set(&a, b("1"), Ttl::secs(60)),
            Write::Delete(&set),
            Write::SetAdd(&string, &m, Ttl::secs(9)),
        ],
        &[
            Write::Set(&a, b("1"), Ttl::secs(60)),
            Write::Delete(&set),
            Write::SetRemove(&string, &m),
        ],
    ];
    for writes in attempts {
        let result = c.cache.write_if(&[], writes).await;
        assert_eq!(kind(result), Some(ErrorKind::WrongType));
        assert!(
            !c.cache.exists(&a).await.unwrap(),
            "an earlier write was applied"
        );
        assert!(
            c.cache.exists(&set).await.unwrap(),
            "an earlier delete was applied"
        );
        assert_eq!(c.cache.ttl(&string).await.unwrap(), KeyTtl::Persistent);
    }
}

pub(super) async fn write_if_applies_writes_in_order(c: Ctx) {
    let (k, s) = (c.tagged("k"), c.tagged("s"));
    c.cache.set(&k, b("string"), Ttl::secs(60)).await.unwrap();
    c.cache
        .set_add(&s, &[b("only")], Ttl::secs(60))
        .await
        .unwrap();
    let m = [b("m")];
    let only = [b("only")];
    let writes = [
        // A delete turns the string key into a set key within the same step...
        Write::Delete(&k),
        Write::SetAdd(&k, &m, Ttl::secs(60)),
        // ...and removing a set's last member leaves nothing to replace.
        Write::SetRemove(&s, &only),
        Write::Replace(&s, b("nothing")),
    ];
    assert!(c.cache.write_if(&[], &writes).await.unwrap());
    assert_eq!(c.cache.set_members(&k).await.unwrap(), vec![b("m")]);
    assert!(!c.cache.exists(&s).await.unwrap());
}

pub(super) async fn write_if_has_one_winner_under_contention(c: Ctx) {
    let key = c.tagged("claim");
    let tasks = (0..200).map(|i| {
        let (cache, key) = (Arc::clone(&c.cache), key.clone());
        tokio::spawn(async move {
            let index = format!("{key}:idx");
            let writes = [
                Write::Set(&key, Bytes::from(i.to_string()), Ttl::secs(60)),
                Write::SetAdd(&index, &[Bytes::from(i.to_string())], Ttl::secs(60)),
            ];
            cache.write_if(&[Condition::Absent(&key)], &writes).await
        })
    });
    let wins = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
    let winner = c.cache.get(&key).await.unwrap().unwrap();
    assert_eq!(
        c.cache.set_members(&format!("{key}:idx")).await.unwrap(),
        vec![winner]
    );
}

/// Regression (memory backend): readers took no lock, so a reader could see one key of a
/// `write_if` or `set_many` written and the other not yet — `list_for_user` saw a session's
/// index entry before the session and pruned it as dead.
pub(super) async fn multi_key_writes_are_never_seen_half_done(c: Ctx) {
    const WRITES: u64 = 10_000;
    let (a, b) = (c.tagged("a"), c.tagged("b"));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let value = |v: Option<Bytes>| -> u64 {
        v.map_or(0, |b| {
            String::from_utf8_lossy(&b).parse().unwrap_or(u64::MAX)
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, a, b, done) = (Arc::clone(&c.cache), a.clone(), b.clone(), done.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    // Written together, with increasing values: once `a` shows a write, `b`
                    // shows it or a later one; a batch read shows one write whole.
                    let first = value(cache.get(&a).await.unwrap());
                    let second = value(cache.get(&b).await.unwrap());
                    assert!(second >= first, "read a = {first}, then b = {second}");
                    let both = cache.get_many(&[&b, &a]).await.unwrap();
                    let (vb, va) = (value(both[0].clone()), value(both[1].clone()));
                    assert_eq!(va, vb, "one batch read saw a = {va} and b = {vb}");
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    for i in 1..=WRITES {
        let v = Bytes::from(i.to_string());
        if i % 2 == 0 {
            let writes = [
                Write::Set(&a, v.clone(), Ttl::secs(60)),
                Write::Set(&b, v, Ttl::secs(60)),
            ];
            assert!(c.cache.write_if(&[], &writes).await.unwrap());
        } else {
            let entries = [(a.as_str(), v.clone()), (b.as_str(), v)];
            c.cache.set_many(&entries, Ttl::secs(60)).await.unwrap();
        }
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
}

pub(super) async fn ping_answers(c: Ctx) {
    let rtt = c.cache.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
}
