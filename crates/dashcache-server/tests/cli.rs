//! The `dashcache` binary: help and version, `config check`, `keys`, `bench`, `serve` on a
//! Redis Cluster, and the drill.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::process::Command;

use dashcache_testkit::{RedisCluster, RedisServer};

fn dashcache(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dashcache"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (ok, out, _) = dashcache(&["--version"], &[]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("dashcache {}", env!("CARGO_PKG_VERSION"))
    );
    let (ok, out, _) = dashcache(&["--help"], &[]);
    assert!(ok);
    for command in ["serve", "bench", "keys", "config", "drill"] {
        assert!(out.contains(command), "{out}");
    }
    let (ok, _, err) = dashcache(&["--no-such-flag"], &[]);
    assert!(!ok);
    assert!(err.contains("Usage"), "{err}");
}

#[test]
fn config_check_lists_every_problem_and_masks_secrets() {
    let (ok, _, err) = dashcache(
        &["config", "check"],
        &[("CACHE_TTL_SESSION", "5"), ("CACHE_TIMEOUT_MS", "soon")],
    );
    assert!(!ok);
    assert!(
        err.contains("CACHE_TTL_SESSION") && err.contains("CACHE_TIMEOUT_MS"),
        "{err}"
    );
    let (ok, out, err) = dashcache(
        &["config", "check"],
        &[
            ("REDIS_URL", "redis://app:hunter2@127.0.0.1:1"),
            ("CACHE_KEY_SECRET", "0123456789abcdef-secret"),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("REDIS_URL=redis://app:***@127.0.0.1:1"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2") && !out.contains("abcdef-secret"),
        "{out}"
    );
    // --ping tells a dead cache.
    let (ok, _, err) = dashcache(
        &[
            "config",
            "check",
            "--ping",
            "--database-url",
            "sqlite::memory:",
        ],
        &[("REDIS_URL", "redis://127.0.0.1:1")],
    );
    assert!(!ok);
    assert!(err.contains("cache_unavailable"), "{err}");
}

#[test]
fn keys_delete_pattern_and_stats() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut cmd = redis::cmd("MSET");
        for i in 0..1200 {
            cmd.arg(format!("dashcache:user:{i}")).arg("v");
        }
        cmd.arg("dashcache:session:id:x")
            .arg("v")
            .arg("unrelated")
            .arg("v");
        let () = cmd.query_async(&mut conn).await.unwrap();
    });
    let url = server.url();
    let env = [("REDIS_URL", url.as_str())];
    let (ok, out, err) = dashcache(
        &["keys", "delete-pattern", "dashcache:user:*", "--dry-run"],
        &env,
    );
    assert!(ok, "{err}");
    assert!(out.contains("1200 keys match"), "{out}");
    let (ok, out, _) = dashcache(&["keys", "stats"], &env);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("user") && l.ends_with("1200")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("session") && l.ends_with('1')),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("total") && l.ends_with("1202")),
        "{out}"
    );
    let (ok, out, _) = dashcache(&["keys", "delete-pattern", "dashcache:user:*"], &env);
    assert!(ok);
    assert!(out.contains("deleted 1200 keys"), "{out}");
    let (ok, out, _) = dashcache(
        &["keys", "delete-pattern", "dashcache:user:*", "--dry-run"],
        &env,
    );
    assert!(ok);
    assert!(out.contains("0 keys match"), "{out}");
    let (ok, _, err) = dashcache(&["keys", "stats"], &[]);
    assert!(!ok);
    assert!(err.contains("REDIS_URL"), "{err}");
}

#[test]
fn bench_prints_both_sides_and_a_ratio() {
    let (ok, out, err) = dashcache(
        &[
            "bench",
            "--ops",
            "get,set",
            "--duration-secs",
            "1",
            "--concurrency",
            "4",
            "--keys",
            "200",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("| Get | dashcache |") && out.contains("| Get | raw moka |"),
        "{out}"
    );
    assert!(out.contains("| Set | dashcache |"), "{out}");
    let server = RedisServer::start();
    let (ok, out, err) = dashcache(
        &[
            "bench",
            "--url",
            &server.url(),
            "--ops",
            "get-many",
            "--duration-secs",
            "1",
            "--keys",
            "200",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("| GetMany | raw redis |"), "{out}");
}

#[test]
fn the_drill_serves_through_a_dead_and_a_frozen_redis() {
    let (ok, out, err) = dashcache(&["drill", "--phase-secs", "1", "--concurrency", "4"], &[]);
    assert!(ok, "{err}");
    for phase in [
        "baseline",
        "redis killed",
        "restarted",
        "redis frozen",
        "resumed",
    ] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {phase} |")))
            .unwrap_or_else(|| panic!("{out}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            cells[2].parse::<u64>().unwrap() > 0,
            "requests in {phase}: {out}"
        );
        assert_eq!(cells[3], "0", "non-2xx in {phase}: {out}");
    }
}

#[test]
fn bench_and_serve_take_a_cluster_url() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (ok, out, err) = dashcache(
        &[
            "bench",
            "--url",
            &url,
            "--ops",
            "get,get-many",
            "--batch",
            "1000",
            "--duration-secs",
            "1",
            "--keys",
            "2000",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("redis cluster"), "{out}");
    assert!(out.contains("get-many of 1000"), "{out}");
    assert!(out.contains("| GetMany | raw redis |"), "{out}");
    assert!(!err.contains("bench:"), "operations failed: {err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_dashcache"))
        .args(["serve", "--listen", &listen])
        .env("REDIS_URL", &url)
        .env("DATABASE_URL", "sqlite::memory:")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let health = loop {
        if let Some(reply) = http_get(&listen, "/health") {
            break reply;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let users = http_get(&listen, "/api/v1/users/u1");
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""status":"healthy""#), "{health}");
    assert!(health.contains(r#""backend":"redis-cluster""#), "{health}");
    let users = users.unwrap();
    assert!(users.starts_with("HTTP/1.1 "), "{users}");
    assert!(!users.starts_with("HTTP/1.1 5"), "{users}");
}

/// A GET over a plain socket; the whole reply, or `None` when nothing listens yet.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}
