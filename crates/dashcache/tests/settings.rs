//! `CacheSettings`: bounds, one message for every problem, file and environment merged.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::time::Duration;

use dashcache::CacheSettings;

fn load(env: &[(&str, &str)], file: Option<&str>) -> Result<CacheSettings, String> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    CacheSettings::from_sources(env, file).map_err(|e| e.to_string())
}

#[test]
fn each_bound_is_enforced_with_a_message_naming_the_variable() {
    let cases = [
        (
            "CACHE_TTL_SESSION",
            "59",
            "7776001",
            "60 to 7776000 seconds",
        ),
        ("CACHE_TTL_PERMISSIONS", "9", "3601", "10 to 3600 seconds"),
        ("CACHE_TTL_OAUTH_STATE", "59", "3601", "60 to 3600 seconds"),
        (
            "CACHE_TTL_PROVIDER_CONNECTION",
            "59",
            "3601",
            "60 to 3600 seconds",
        ),
        (
            "CACHE_TTL_ACCOUNTS_LIST",
            "59",
            "3601",
            "60 to 3600 seconds",
        ),
        ("CACHE_TTL_SECURITY_CONFIG", "9", "601", "10 to 600 seconds"),
        (
            "CACHE_TTL_STATIC_DATA",
            "3599",
            "604801",
            "3600 to 604800 seconds",
        ),
        ("CACHE_TTL_USER", "59", "86401", "60 to 86400 seconds"),
        ("CACHE_TTL_RATE_LIMIT", "0", "3601", "1 to 3600 seconds"),
        ("CACHE_STALE_SECS", "-1", "86401", "0 to 86400 seconds"),
        ("CACHE_TTL_JITTER_PERCENT", "-5", "51", "0 to 50 percent"),
        ("CACHE_TTL_PROVIDER_API", "9", "3601", "10 to 3600 seconds"),
        ("CACHE_TTL_TRANSACTIONS", "4", "601", "5 to 600 seconds"),
        ("CACHE_TTL_CREDENTIALS", "4", "301", "5 to 300 seconds"),
        ("CACHE_COMPRESS_LEVEL", "0", "20", "1 to 19"),
        (
            "CACHE_COMPRESS_MIN_BYTES",
            "63",
            "1048577",
            "64 to 1048576 bytes",
        ),
        ("CACHE_TIMEOUT_MS", "9", "10001", "10 to 10000 milliseconds"),
        (
            "CACHE_CONNECT_TIMEOUT_MS",
            "9",
            "30001",
            "10 to 30000 milliseconds",
        ),
        ("CACHE_BREAKER_FAILURES", "0", "1001", "1 to 1000"),
        (
            "CACHE_BREAKER_OPEN_MS",
            "9",
            "60001",
            "10 to 60000 milliseconds",
        ),
        (
            "CACHE_MEMORY_MAX_ENTRIES",
            "999",
            "1000000001",
            "1000 to 1000000000",
        ),
        (
            "CACHE_MEMORY_MAX_BYTES",
            "1048575",
            "1099511627777",
            "1048576 to 1099511627776 bytes",
        ),
    ];
    for (var, low, high, range) in cases {
        for bad in [low, high, "ten", "", "1.5"] {
            let err = load(&[(var, bad)], None).unwrap_err();
            assert!(
                err.contains(&format!("{var}={bad:?}")),
                "{var}={bad}: {err}"
            );
            assert!(err.contains(range), "{var}={bad}: {err}");
        }
    }
    for var in CacheSettings::variables().filter(|v| v.starts_with("CACHE_TTL_")) {
        assert!(cases.iter().any(|c| c.0 == var), "{var} has no bound test");
    }
}

#[test]
fn every_problem_is_listed_in_one_message() {
    let err = load(
        &[
            ("CACHE_TTL_SESSION", "1"),
            ("CACHE_TIMEOUT_MS", "soon"),
            ("REDIS_URL", "http://user:hunter2@example.com"),
            ("CACHE_KEY_PREFIX", "bad prefix*"),
            ("CACHE_KEY_SECRET", "short"),
            ("CACHE_COMPRESSION", "gzip"),
        ],
        None,
    )
    .unwrap_err();
    assert!(
        err.starts_with("invalid cache configuration (6 problems)"),
        "{err}"
    );
    for var in [
        "CACHE_TTL_SESSION",
        "CACHE_TIMEOUT_MS",
        "REDIS_URL",
        "CACHE_KEY_PREFIX",
        "CACHE_KEY_SECRET",
        "CACHE_COMPRESSION",
    ] {
        assert!(err.contains(var), "{var} missing from: {err}");
    }
    assert!(
        !err.contains("hunter2"),
        "secrets stay out of messages: {err}"
    );
    assert!(
        !err.contains("short"),
        "secrets stay out of messages: {err}"
    );
}

#[test]
fn the_file_is_merged_under_the_environment() {
    let file = r#"
        CACHE_TTL_SESSION = 86400
        CACHE_TTL_USER = 120
        cache_timeout_ms = "500"
        REDIS_URL = "redis://127.0.0.1:6390/2"
    "#;
    let s = load(&[("CACHE_TTL_USER", "600"), ("UNRELATED", "x")], Some(file)).unwrap();
    assert_eq!(s.ttl.session, Duration::from_secs(86400), "from the file");
    assert_eq!(s.ttl.user, Duration::from_secs(600), "the environment wins");
    assert_eq!(
        s.timeout,
        Duration::from_millis(500),
        "keys are case-insensitive"
    );
    assert_eq!(s.redis_url.as_deref(), Some("redis://127.0.0.1:6390/2"));
    assert_eq!(
        s.ttl.permissions,
        Duration::from_secs(300),
        "the default stands"
    );
}

#[test]
fn a_bad_file_is_reported_with_the_rest() {
    let err = load(&[("CACHE_TTL_USER", "1")], Some("CACHE_TTL_SESION = 5\n")).unwrap_err();
    assert!(
        err.contains("CACHE_TTL_SESION"),
        "a typo is not a default: {err}"
    );
    assert!(err.contains("CACHE_TTL_USER"), "{err}");
    let err = load(&[], Some("not = [valid")).unwrap_err();
    assert!(err.contains("CACHE_CONFIG_FILE"), "{err}");
    let missing = std::path::Path::new("/nonexistent/dashcache.toml");
    let err = CacheSettings::load(missing).unwrap_err().to_string();
    assert!(
        err.contains("CACHE_CONFIG_FILE") && err.contains("nonexistent"),
        "{err}"
    );
}

#[test]
fn the_effective_configuration_masks_secrets() {
    let s = load(
        &[
            ("REDIS_URL", "redis://app:hunter2@cache:6379/0"),
            ("CACHE_KEY_SECRET", "0123456789abcdef-secret"),
        ],
        None,
    )
    .unwrap();
    let shown = s.to_string();
    assert!(
        shown.contains("REDIS_URL=redis://app:***@cache:6379/0"),
        "{shown}"
    );
    assert!(shown.contains("CACHE_KEY_SECRET=***"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("abcdef-secret"),
        "{shown}"
    );
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(s.redis_cache_builder().is_some());
}

#[test]
fn env_example_documents_every_variable() {
    let example = include_str!("../../../.env.example");
    for var in CacheSettings::variables() {
        assert!(example.contains(var), ".env.example lacks {var}");
    }
    // And its values are the defaults.
    let pairs: Vec<(String, String)> = example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let from_example = CacheSettings::from_sources(pairs, None).unwrap();
    assert_eq!(
        from_example,
        CacheSettings::from_sources(Vec::<(String, String)>::new(), None).unwrap()
    );
}

#[test]
fn cluster_urls_are_accepted_and_checked_seed_by_seed() {
    for url in [
        "redis+cluster://10.0.0.1:7000",
        "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
        "redis://:pw@a:7000, redis://:pw@b:7001",
    ] {
        let s = load(&[("REDIS_URL", url)], None).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(s.redis_url.as_deref(), Some(url.trim()));
    }
    for url in [
        "redis://a:7000,http://b:7000",
        "redis://a:7000,unix:///tmp/redis.sock",
        ",",
    ] {
        let err = load(&[("REDIS_URL", url)], None).unwrap_err();
        assert!(err.contains("REDIS_URL"), "{url}: {err}");
    }
    let err = load(
        &[("REDIS_URL", "redis://:hunter2@a:1,http://:hunter3@b:2")],
        None,
    )
    .unwrap_err();
    assert!(
        !err.contains("hunter2") && !err.contains("hunter3"),
        "{err}"
    );
}

#[test]
fn sentinel_credentials_need_a_sentinel_url_and_stay_masked() {
    let url = "redis+sentinel://:master-pw@10.0.0.1:26379,10.0.0.2:26379/mymaster";
    let settings = load(
        &[
            ("REDIS_URL", url),
            ("CACHE_SENTINEL_USERNAME", "watcher"),
            ("CACHE_SENTINEL_PASSWORD", "sentinel-pw"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        settings.sentinel_credentials,
        Some((Some("watcher".into()), "sentinel-pw".into()))
    );
    for shown in [settings.to_string(), format!("{settings:?}")] {
        assert!(!shown.contains("sentinel-pw"), "{shown}");
        assert!(!shown.contains("master-pw"), "{shown}");
        assert!(shown.contains("CACHE_SENTINEL_PASSWORD=***"), "{shown}");
        assert!(shown.contains("CACHE_SENTINEL_USERNAME=watcher"), "{shown}");
    }
    let builder = settings.redis_cache_builder().unwrap();
    assert!(!format!("{builder:?}").contains("sentinel-pw"));
    // A user without a password, and sentinel credentials without a Sentinel URL: refused,
    // without showing the password.
    let e = load(
        &[("REDIS_URL", url), ("CACHE_SENTINEL_USERNAME", "watcher")],
        None,
    )
    .unwrap_err();
    assert!(e.contains("CACHE_SENTINEL_PASSWORD"), "{e}");
    let e = load(
        &[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("CACHE_SENTINEL_PASSWORD", "sentinel-pw"),
        ],
        None,
    )
    .unwrap_err();
    assert!(e.contains("redis+sentinel://"), "{e}");
    assert!(!e.contains("sentinel-pw"), "{e}");
}
