//! Every example runs — on the embedded cache, and against a spawned Redis as the README says
//! (`REDIS_URL`) — and leaves no key behind on the server.
//!
//! `cargo test` builds the examples before it runs tests; this runs those binaries.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a panic is how a test fails

use std::path::PathBuf;
use std::process::Command;

use dashcache_testkit::RedisServer;

/// Each example, and its arguments.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("basic", &[]),
    ("batch", &[]),
    ("counter", &[]),
    ("keys", &[]),
    ("aside", &[]),
    ("session", &[]),
    ("oauth_state", &[]),
    ("permissions", &[]),
    ("health", &[]),
    #[cfg(feature = "axum")]
    ("ratelimit", &["--once"]),
];

fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo test builds the examples; or run cargo build --examples)",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str], redis_url: Option<&str>) -> String {
    run_both(name, args, redis_url).0
}

/// Runs example `name`; its stdout and stderr (it must succeed).
fn run_both(name: &str, args: &[&str], redis_url: Option<&str>) -> (String, String) {
    let mut command = Command::new(binary(name));
    command.args(args).env_remove("REDIS_URL");
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// With `REDIS_URL` naming a Redis that is down, every example still runs, as a service
/// would: it says which server did not answer and why, in words, never an error's `Debug`
/// dump.
#[test]
fn every_example_fails_open_when_redis_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("redis://127.0.0.1:{port}");
    for (name, args) in EXAMPLES {
        let (stdout, stderr) = run_both(name, args, Some(&dead));
        assert!(
            !stderr.contains("Error {") && !stderr.contains("kind:"),
            "{name}: {stderr}"
        );
        if *name == "health" {
            assert!(stdout.contains("degraded"), "{name}: {stdout}");
        } else {
            assert!(
                stderr.contains(&format!(
                    "Redis at redis://127.0.0.1:{port} does not answer"
                )),
                "{name}: {stderr}"
            );
        }
    }
}

#[test]
fn every_example_runs_embedded_and_on_redis_and_cleans_up() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, args) in EXAMPLES {
        run(name, args, None);
        let out = run(name, args, Some(&server.url()));
        if *name != "health" {
            assert!(
                out.contains("(on Redis at"),
                "{name} did not use REDIS_URL:\n{out}"
            );
        }
        let left: Vec<String> = rt.block_on(server.command(&[b"KEYS", b"*"]));
        assert!(left.is_empty(), "example {name} left keys behind: {left:?}");
    }
    // What the examples show, on Redis: a sample of their promises.
    let out = run("aside", &[], Some(&server.url()));
    assert!(
        out.contains("10 concurrent lookups of user 7 → 1 query"),
        "{out}"
    );
    let out = run("oauth_state", &[], Some(&server.url()));
    assert!(out.contains("replay: None"), "{out}");
}
