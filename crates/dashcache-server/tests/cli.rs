//! The `dashcache` binary: help and version, `config check`, `keys`, `bench`, `serve` on a
//! Redis Cluster, two `serve` processes sharing one Redis through their L1s, and the drill.

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

/// Runs one command on `server` with a plain client.
fn raw(server: &RedisServer, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    query::<redis::Value>(server, &args);
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

/// The subcommands a `--help` text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// `--help` shows which variable sets a flag, never the value: a URL's password stays out of
/// every help text, at every level.
#[test]
fn help_texts_never_show_a_secret_from_the_environment() {
    let env = [
        ("REDIS_URL", "redis://:s3cret-redis@127.0.0.1:1"),
        ("DATABASE_URL", "postgres://u:s3cret-db@127.0.0.1:1/x"),
        ("DASHCACHE_UPSTREAM_URL", "http://u:s3cret-up@127.0.0.1:1"),
    ];
    let (ok, top, _) = dashcache(&["--help"], &env);
    assert!(ok);
    let mut paths: Vec<Vec<String>> = vec![Vec::new()];
    for command in subcommands(&top) {
        let (_, help, _) = dashcache(&[&command, "--help"], &env);
        for nested in subcommands(&help) {
            paths.push(vec![command.clone(), nested]);
        }
        paths.push(vec![command]);
    }
    assert!(paths.len() > 10, "{paths:?}");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (ok, out, err) = dashcache(&args, &env);
        assert!(ok, "{args:?}: {err}");
        assert!(!out.contains("s3cret"), "{args:?} shows a secret:\n{out}");
    }
}

#[test]
fn config_check_lists_every_problem_and_masks_secrets() {
    // What `serve` refuses, `config check` refuses, naming the variable and its source.
    let (ok, _, err) = dashcache(
        &["config", "check"],
        &[
            ("DASHCACHE_ACCESS_LOG", "maybe"),
            ("DASHCACHE_DEMO", "perhaps"),
            ("DASHCACHE_SECURE_COOKIES", "maybe"),
        ],
    );
    assert!(!ok);
    for var in [
        "DASHCACHE_ACCESS_LOG",
        "DASHCACHE_DEMO",
        "DASHCACHE_SECURE_COOKIES",
    ] {
        assert!(
            err.contains(&format!("{var}=\"")) && err.contains("(from the environment)"),
            "{var}: {err}"
        );
    }
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
            ("DASHCACHE_OPS_TOKEN", "ops-token-hunter3"),
        ],
    );
    assert!(ok, "{err}");
    // Every setting it read, each on a line of its own.
    let names = dashcache::CacheSettings::variables()
        .filter(|v| *v != dashcache::settings::CONFIG_FILE_VAR)
        .chain([
            "DATABASE_URL",
            "DASHCACHE_DEMO",
            "DASHCACHE_SECURE_COOKIES",
            "DASHCACHE_ACCESS_LOG",
            "DASHCACHE_ALLOWED_ORIGINS",
            "DASHCACHE_UPSTREAM_URL",
            "DASHCACHE_OPS_TOKEN",
            "DASHCACHE_LOG_FORMAT",
            "RUST_LOG",
        ]);
    for var in names {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var} missing from:\n{out}"
        );
    }
    assert!(
        out.contains("DASHCACHE_OPS_TOKEN=***") && !out.contains("hunter3"),
        "{out}"
    );
    assert!(
        out.contains("REDIS_URL=redis://app:***@127.0.0.1:1 (environment)"),
        "{out}"
    );
    assert!(out.contains("CACHE_TTL_USER=3600 (default)"), "{out}");
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

/// `config check --ping` reads the database it is pointed at and never writes: a missing file
/// stays missing, an empty one stays empty (no migration, no demo users).
#[test]
fn config_check_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    for (path, exists) in [(&missing, false), (&empty, true)] {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let (_, out, err) = dashcache(&["config", "check", "--ping", "--database-url", &url], &[]);
        assert_eq!(path.exists(), exists, "{out}{err}");
        if exists {
            assert_eq!(std::fs::metadata(path).unwrap().len(), 0, "{out}{err}");
        }
    }
}

/// `users create` makes an admin for an empty database, the password from the environment or
/// standard input (never an argument), and refuses a short password or a taken id.
#[test]
fn users_create_makes_an_admin_with_a_password_from_outside_the_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("users.db").display()
    );
    let create = |id: &str| {
        vec![
            "users".to_owned(),
            "create".to_owned(),
            id.to_owned(),
            "--name".to_owned(),
            "The Boss".to_owned(),
            "--email".to_owned(),
            format!("{id}@example.com"),
            "--admin".to_owned(),
            "--database-url".to_owned(),
            url.clone(),
        ]
    };
    let args = create("boss");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = dashcache(&args, &[("DASHCACHE_PASSWORD", "short")]);
    assert!(!ok && err.contains("12"), "{err}");
    let password = "correct horse battery staple";
    let (ok, out, err) = dashcache(&args, &[("DASHCACHE_PASSWORD", password)]);
    assert!(ok, "{err}");
    assert!(out.contains("created boss (admin, user)"), "{out}");
    assert!(!out.contains(password) && !err.contains(password));
    let (ok, _, err) = dashcache(&args, &[("DASHCACHE_PASSWORD", password)]);
    assert!(!ok && err.contains("already exists"), "{err}");

    // From standard input.
    let stdin_args = create("deputy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dashcache"))
        .args(&stdin_args)
        .env_remove("DASHCACHE_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "another long passphrase").unwrap();
    }
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use dashcache_server::auth::password;
        let db = dashcache_server::db::Db::connect(&url).await.unwrap();
        assert_eq!(db.user_count().await.unwrap(), 2, "no demo users either");
        let boss = db.user("boss").await.unwrap().unwrap();
        assert_eq!(boss.roles, ["admin", "user"]);
        let hash = db.password_hash("boss").await.unwrap().unwrap();
        assert!(!hash.contains(password), "hashed at rest");
        assert!(password::verify(password.to_owned(), hash.clone()).await);
        assert!(!password::verify("wrong".to_owned(), hash).await);
        let hash = db.password_hash("deputy").await.unwrap().unwrap();
        assert!(password::verify("another long passphrase".to_owned(), hash).await);
    });
}

#[test]
fn keys_delete_pattern_and_stats() {
    let server = RedisServer::start();
    let mut mset = vec!["MSET".to_owned()];
    for i in 0..1200 {
        mset.extend([format!("dashcache:user:{i}"), "v".into()]);
    }
    mset.extend(["dashcache:session:id:x", "v", "unrelated", "v"].map(str::to_owned));
    raw(&server, &mset);
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
    // Only keys under the prefix count: "unrelated" belongs to someone else.
    assert!(
        out.lines()
            .any(|l| l.starts_with("total") && l.ends_with("1201")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("other") && l.ends_with(" 0")),
        "{out}"
    );
    assert!(out.contains("of 1202 keys on the server"), "{out}");
    let (ok, out, _) = dashcache(
        &["keys", "delete-pattern", "dashcache:session:*", "--dry-run"],
        &env,
    );
    assert!(ok && out.contains("1 key matches"), "{out}");
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
    // Tests run a debug build, and the table says so.
    assert!(out.contains("WARNING: this is a debug build"), "{out}");

    // The bench's keys live under the prefix and are gone after it; another
    // application's keys are not touched.
    raw(
        &server,
        &["SET", "other:bench:1", "theirs"].map(str::to_owned),
    );
    assert_eq!(
        query::<Vec<String>>(&server, &["KEYS", "*"]),
        vec!["other:bench:1".to_owned()]
    );

    // Failures are counted on both sides: a counter holding text fails every
    // INCRBY, and a bench whose operations failed exits non-zero.
    raw(
        &server,
        &["SET", "dashcache:bench:counter", "not a number"].map(str::to_owned),
    );
    let (ok, _, err) = dashcache(
        &[
            "bench",
            "--url",
            &server.url(),
            "--ops",
            "incr",
            "--duration-secs",
            "1",
        ],
        &[],
    );
    assert!(!ok, "{err}");
    assert!(err.contains("operations failed"), "{err}");
    for side in ["dashcache", "raw redis"] {
        let errors = error_cell(&err, "Incr", side);
        assert!(errors > 0, "{side}'s failures not counted:\n{err}");
    }
    assert_eq!(
        query::<Vec<String>>(&server, &["KEYS", "*"]),
        vec!["other:bench:1".to_owned()]
    );
}

/// One command's answer from `server`.
fn query<T: redis::FromRedisValue>(server: &RedisServer, args: &[&str]) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    rt.block_on(server.command::<T>(&args))
}

/// The errors column of `op`'s row for `side` in a bench table.
fn error_cell(table: &str, op: &str, side: &str) -> u64 {
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| {op} | {side} |")))
        .unwrap_or_else(|| panic!("no {op} row for {side}:\n{table}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    cells[6]
        .parse()
        .unwrap_or_else(|_| panic!("no error count in {row}"))
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
    for side in ["dashcache", "raw redis"] {
        assert_eq!(
            error_cell(&out, "GetMany", side),
            0,
            "{side} failed:\n{out}\n{err}"
        );
    }

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
        // The operations token from the environment, never the command line.
        .env("DASHCACHE_OPS_TOKEN", OPS_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let health = loop {
        if let Some(reply) = http_get(&listen, "/health", None) {
            break reply;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let details = http_get(&listen, "/health", Some(OPS_TOKEN)).unwrap();
    let metrics_anonymous = http_get(&listen, "/metrics", None).unwrap();
    let metrics = http_get(&listen, "/metrics", Some(OPS_TOKEN)).unwrap();
    let users = http_get(&listen, "/api/v1/users/u1", None);
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"healthy"}"#), "{health}");
    assert!(
        details.contains(r#""backend":"redis-cluster""#),
        "{details}"
    );
    assert!(!details.contains("redis://"), "no URL: {details}");
    assert!(
        metrics_anonymous.starts_with("HTTP/1.1 401"),
        "{metrics_anonymous}"
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let users = users.unwrap();
    assert!(users.starts_with("HTTP/1.1 "), "{users}");
    assert!(!users.starts_with("HTTP/1.1 5"), "{users}");
}

const OPS_TOKEN: &str = "ops-token-for-the-test-0123456789";

/// A `dashcache serve` process, killed when dropped.
struct Serve {
    child: std::process::Child,
    listen: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dashcache serve` on a free port with `env`, and waits until it answers.
fn serve(env: &[(&str, &str)], args: &[&str]) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dashcache"));
    cmd.args(["serve", "--listen", &listen])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("DASHCACHE_OPS_TOKEN", OPS_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let serve = Serve {
        child: cmd.spawn().unwrap(),
        listen,
    };
    let started = std::time::Instant::now();
    while http_get(&serve.listen, "/health", None).is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    serve
}

#[test]
fn two_serve_processes_on_one_redis_see_a_logout_within_the_bound() {
    use std::time::{Duration, Instant};
    let delta = Duration::from_millis(300);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let database = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("shared.db").display()
    );
    let staleness = delta.as_millis().to_string();
    let env = [
        ("REDIS_URL", redis.url()),
        ("DATABASE_URL", database),
        ("DASHCACHE_DEMO", "yes".to_owned()),
        ("CACHE_L1_STALENESS_MS", staleness),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // One after the other: the first seeds the shared database.
    let a = serve(&env, &["--rate-limit-scale", "100"]);
    let b = serve(&env, &["--rate-limit-scale", "100"]);
    for s in [&a, &b] {
        let started = Instant::now();
        loop {
            let health = http_get(&s.listen, "/health", Some(OPS_TOKEN)).unwrap();
            if health.contains(r#""serving":true"#) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{health}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let login = http(
        &a.listen,
        "POST",
        "/api/v1/sessions",
        None,
        Some(r#"{"user_id":"u2","password":"bob-password"}"#),
    );
    assert!(login.starts_with("HTTP/1.1 201"), "{login}");
    let body = login.split("\r\n\r\n").nth(1).unwrap();
    let token = serde_json::from_str::<serde_json::Value>(body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        let reply = http_get(&b.listen, "/api/v1/users/u2", Some(&token)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    let stats = http_get(&b.listen, "/api/v1/cache/stats", Some(OPS_TOKEN)).unwrap();
    let body = stats.split("\r\n\r\n").nth(1).unwrap();
    let stats: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        stats["namespaces"]["session"]["l1_hits"].as_u64().unwrap() > 0,
        "B answered the session from its L1: {stats}"
    );

    let logout = http(
        &a.listen,
        "DELETE",
        "/api/v1/sessions/current",
        Some(&token),
        None,
    );
    assert!(logout.starts_with("HTTP/1.1 204"), "{logout}");
    let done = Instant::now();
    loop {
        let started = Instant::now();
        let reply = http_get(&b.listen, "/api/v1/users/u2", Some(&token)).unwrap();
        if reply.starts_with("HTTP/1.1 401") {
            eprintln!(
                "B refused the session {:?} after A's logout",
                started - done
            );
            break;
        }
        assert!(
            started - done <= delta,
            "B accepted a logged-out session {:?} after the logout: {reply}",
            started - done
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A request over a plain socket; the whole reply.
fn http(addr: &str, method: &str, path: &str, bearer: Option<&str>, body: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// A GET over a plain socket, with `bearer` as its token; the whole reply, or `None` when
/// nothing listens yet.
fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}

#[test]
fn warm_loads_users_and_account_lists_then_finds_them_cached() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("warm.db").display());
    let make = |id: &str| {
        // One account per e-mail address.
        let email = format!("{id}@example.com");
        let args = [
            "users",
            "create",
            id,
            "--name",
            "Someone",
            "--email",
            &email,
            "--database-url",
            &url,
        ];
        let (ok, _, err) = dashcache(&args, &[("DASHCACHE_PASSWORD", "a long enough password")]);
        assert!(ok, "{err}");
    };
    for id in ["w1", "w2", "w3"] {
        make(id);
    }
    let env = [
        ("REDIS_URL", server.url()),
        ("CACHE_KEY_PREFIX", "warmtest".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // What a running service cached: warm is not the first reader of the database's log
    // (which would sweep the shared cache), it follows no log at all.
    raw(
        &server,
        &["SET", "warmtest:session:id:kept", "v"].map(str::to_owned),
    );
    let args = ["warm", "--database-url", &url, "--batch", "2"];
    let (ok, out, err) = dashcache(&args, &env);
    assert!(ok, "{err}");
    assert_eq!(
        query::<Option<String>>(&server, &["GET", "warmtest:session:id:kept"]).as_deref(),
        Some("v"),
        "warm swept the service's cache"
    );
    // A database that does not exist is a wrong DATABASE_URL: refused, not created.
    let missing = dir.path().join("missing.db");
    let missing_url = format!("sqlite://{}?mode=rwc", missing.display());
    let (ok, _, err) = dashcache(&["warm", "--database-url", &missing_url], &env);
    assert!(!ok);
    assert!(
        err.contains("does not exist") && err.contains("DATABASE_URL"),
        "{err}"
    );
    assert!(!missing.exists(), "warm created the database");
    assert!(
        out.contains(
            "Users: 3 keys, 0 already cached, 3 loaded, 0 not found, 0 failed, in 2 batches"
        ),
        "{out}"
    );
    assert!(
        out.contains("Accounts: 3 keys, 0 already cached, 3 loaded"),
        "{out}"
    );
    let (ok, out, err) = dashcache(&args, &env);
    assert!(ok, "{err}");
    assert!(
        out.contains("Users: 3 keys, 3 already cached, 0 loaded"),
        "{out}"
    );
    let (ok, out, _) = dashcache(&["keys", "stats"], &env);
    assert!(ok && out.contains("user"), "{out}");
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh SQLite URL in `dir`.
fn sqlite_in(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join(name).display())
}

/// Every CLI command whose work did not happen exits non-zero, and says why in its last line:
/// `load` against nothing and with a token that is not a session, `warm` without a shared
/// cache and with the cache down. (`bench`'s failures: `bench_prints_both_sides_and_a_ratio`.)
#[test]
fn failed_commands_exit_non_zero_and_say_why() {
    // load: nothing listens.
    let port = dead_port();
    let base = format!("http://127.0.0.1:{port}");
    let load = |base: &str, token: &str| {
        dashcache(
            &[
                "load",
                "--url",
                base,
                "--path",
                "/api/v1/accounts",
                "--duration-secs",
                "1",
                "--concurrency",
                "2",
            ],
            &[("DASHCACHE_TOKEN", token)],
        )
    };
    let (ok, _, err) = load(&base, "x");
    assert!(!ok);
    assert!(
        err.contains("no request succeeded") && err.contains(&format!("cannot reach {base}")),
        "{err}"
    );

    // load: a logged-out token gets only 401s; the first one is shown.
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite_in(&dir, "load.db");
    let service = serve(&[], &["--database-url", &database, "--demo", "yes"]);
    let token = "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAA";
    let (ok, _, err) = load(&format!("http://{}", service.listen), token);
    assert!(!ok);
    assert!(
        err.contains("no request succeeded") && err.contains("401"),
        "{err}"
    );
    drop(service);

    // load: a path without its slash is named, not reported as an unreachable service; a
    // URL's credentials are masked in its failures.
    let (ok, _, err) = dashcache(&["load", "--path", "health", "--duration-secs", "1"], &[]);
    assert!(!ok);
    assert!(err.contains("must start with `/`"), "{err}");
    let with_password = format!("http://user:s3cret@127.0.0.1:{port}");
    let (ok, _, err) = load(&with_password, "x");
    assert!(!ok);
    assert!(
        !err.contains("s3cret") && err.contains("cannot reach"),
        "{err}"
    );

    // keys and bench: the server that failed, masked.
    let dead = format!("redis://:s3cret@127.0.0.1:{}", dead_port());
    let (ok, _, err) = dashcache(&["keys", "stats"], &[("REDIS_URL", &dead)]);
    assert!(!ok);
    assert!(
        err.contains("the Redis at redis://:***@127.0.0.1:") && !err.contains("s3cret"),
        "{err}"
    );
    let (ok, _, err) = dashcache(&["bench", "--url", &dead, "--ops", "get"], &[]);
    assert!(!ok);
    assert!(
        err.contains("the Redis at redis://:***@127.0.0.1:") && !err.contains("s3cret"),
        "{err}"
    );

    // warm: no shared cache to fill.
    let args = ["warm", "--database-url", &database];
    let (ok, _, err) = dashcache(&args, &[]);
    assert!(!ok);
    assert!(err.contains("REDIS_URL"), "{err}");
    // warm: the cache is down.
    let url = format!("redis://127.0.0.1:{}", dead_port());
    let (ok, _, err) = dashcache(&args, &[("REDIS_URL", &url)]);
    assert!(!ok);
    assert!(
        err.contains(&format!("the cache at {url} is unreachable")),
        "{err}"
    );
}

/// `serve` refuses to start, naming the address or the setting and what to try, when its port
/// is taken, when `REDIS_URL` names a server that is not Redis or refuses the password (said
/// once, with no Sentinel hint on a plain URL), and when the database is down; `users create`
/// and `serve` say which database they use.
#[test]
fn start_failures_name_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite_in(&dir, "start.db");
    let start = |env: &[(&str, &str)], listen: &str, database: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dashcache"));
        cmd.args(["serve", "--listen", listen, "--database-url", database])
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Each of these stops the process by itself: no kill needed.
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (ok, err) = start(&[], &listen, &database);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot listen on {listen}")) && err.contains("--listen"),
        "{err}"
    );
    // It said which database it had opened, and that nobody can log in yet.
    assert!(err.contains("this database has no users"), "{err}");
    drop(taken);

    // An operations token that opens nothing worth guarding: too short, or an empty file.
    let (ok, err) = start(
        &[("DASHCACHE_OPS_TOKEN", "short")],
        "127.0.0.1:0",
        &database,
    );
    assert!(!ok);
    assert!(
        err.contains("fewer than 16 characters") && !err.contains("short\n"),
        "{err}"
    );
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dashcache"));
    let out = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ])
        .arg("--ops-token-file")
        .arg(&empty)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("its first line is empty"), "{err}");

    // Something that answers, but not in Redis's protocol.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_url = format!("redis://{}", http.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut socket in http.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf);
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n<html>");
        }
    });
    let free = format!("127.0.0.1:{}", dead_port());
    let (ok, err) = start(&[("REDIS_URL", &http_url)], &free, &database);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot use the Redis at {http_url}"))
            && err.contains("not Redis's protocol"),
        "{err}"
    );

    // A wrong password: the final line names the server; no Sentinel hint, no password.
    let redis = RedisServer::start_with_args(&["--requirepass", "the-right-one"]);
    let wrong = format!("redis://:not-the-one@127.0.0.1:{}", redis.port());
    let (ok, err) = start(&[("REDIS_URL", &wrong)], &free, &database);
    assert!(!ok);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "cannot use the Redis at redis://:***@127.0.0.1:{}",
            redis.port()
        )) && last.contains("password in the URL"),
        "{err}"
    );
    assert!(
        !err.contains("SENTINEL") && !err.contains("not-the-one"),
        "{err}"
    );

    // The database is down.
    let postgres = format!("postgres://dashcache:pw@127.0.0.1:{}/app", dead_port());
    let (ok, err) = start(&[], &free, &postgres);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the database at postgres://dashcache:***@127.0.0.1:")
            && err.contains("DATABASE_URL")
            && !err.contains(":pw@"),
        "{err}"
    );

    // users create says where the user went.
    let (ok, out, err) = dashcache(
        &[
            "users",
            "create",
            "someone",
            "--name",
            "Some One",
            "--email",
            "someone@example.com",
            "--database-url",
            &database,
        ],
        &[("DASHCACHE_PASSWORD", "a long enough password")],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("in {database}")), "{out}");
}

/// A pattern delete stays inside this service's prefix: `*` is refused without
/// `--all-prefixes`; `<prefix>:*` deletes this service's keys and not another application's
/// on the same Redis; the dry run counts by namespace.
#[test]
fn pattern_deletes_leave_other_applications_keys_alone() {
    let server = RedisServer::start();
    raw(
        &server,
        &[
            "MSET",
            "dashcache:user:1",
            "v",
            "dashcache:session:id:x",
            "v",
            "billing:invoice:1",
            "theirs",
            "billing:user:1",
            "theirs",
        ]
        .map(str::to_owned),
    );
    let url = server.url();
    let env = [("REDIS_URL", url.as_str())];
    for pattern in ["*", "*:user:*", "billing:*"] {
        let (ok, _, err) = dashcache(&["keys", "delete-pattern", pattern], &env);
        assert!(!ok, "{pattern}");
        assert!(err.contains("--all-prefixes"), "{pattern}: {err}");
    }
    let (ok, out, err) = dashcache(
        &["keys", "delete-pattern", "*", "--dry-run", "--all-prefixes"],
        &env,
    );
    assert!(ok, "{err}");
    assert!(out.contains("4 keys match"), "{out}");
    let (ok, out, err) = dashcache(
        &["keys", "delete-pattern", "dashcache:*", "--dry-run"],
        &env,
    );
    assert!(ok, "{err}");
    assert!(out.contains("2 keys match"), "{out}");
    let (ok, out, err) = dashcache(&["keys", "delete-pattern", "dashcache:*"], &env);
    assert!(ok, "{err}");
    assert!(out.contains("deleted 2 keys"), "{out}");
    let mut left: Vec<String> = query(&server, &["KEYS", "*"]);
    left.sort();
    assert_eq!(left, ["billing:invoice:1", "billing:user:1"]);
}
