//! The README's commands, so a wrong one fails CI:
//!
//! - every `dashcache …` line of its `sh` blocks parses: the binary is asked for that line's
//!   help, which it gives only once every subcommand and flag before it is valid;
//! - `cargo run --release -p dashcache-server -- serve` names a package whose one binary is
//!   `dashcache`, and `.ci/run` compiles it under the release profile;
//! - `config check`, `keys stats` (on a spawned Redis), `serve` with the load-test flags, and
//!   `load` against that service run for real, as written;
//! - the lists of namespaces in the README and `.env.example` are the service's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dashcache_testkit::RedisServer;

const README: &str = include_str!("../../../README.md");

const ENV_EXAMPLE: &str = include_str!("../../../.env.example");

/// The README's sentence on what L1 tracks names every namespace the service reads through
/// L1, and no other; `.env.example` gives `CACHE_DB_COHERENT`'s default as the service's.
#[test]
fn the_namespace_lists_of_the_docs_are_the_services() {
    let start = README
        .find("with L1 on (the default) tracks the namespaces")
        .expect("the README's L1 sentence");
    let sentence = &README[start..start + README[start..].find(';').unwrap()];
    let mut listed: Vec<&str> = sentence.split('`').skip(1).step_by(2).collect();
    let mut served = dashcache_server::serve::L1_NAMESPACES.to_vec();
    listed.sort_unstable();
    served.sort_unstable();
    assert_eq!(listed, served, "{sentence}");

    let default = ENV_EXAMPLE
        .lines()
        .find_map(|l| l.split("as before). Default: ").nth(1))
        .expect("CACHE_DB_COHERENT's default in .env.example");
    let mut documented: Vec<&str> = default.trim().split(',').collect();
    let mut coherent = dashcache_server::state::COHERENT_NAMESPACES.to_vec();
    documented.sort_unstable();
    coherent.sort_unstable();
    assert_eq!(documented, coherent, "{default}");
}

/// The lines of the README's `sh` blocks.
fn sh_lines() -> Vec<&'static str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in README.lines() {
        if line.starts_with("```") {
            inside = line == "```sh";
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

/// A README line as arguments of `dashcache`, if it runs `dashcache`: leading `VAR=value`
/// words dropped, a trailing `# comment` and `&` dropped, `[optional]` parts left out, quotes
/// removed.
fn dashcache_args(line: &str) -> Option<Vec<String>> {
    parse_line(line, false)
}

/// As [`dashcache_args`], with the `[optional]` parts in (brackets removed, `…` as `x`).
fn with_optional_parts(line: &str) -> Option<Vec<String>> {
    parse_line(&line.replace('…', "x"), true)
}

fn parse_line(line: &str, keep_optional: bool) -> Option<Vec<String>> {
    let line = match line.find(" #") {
        Some(at) => &line[..at],
        None => line,
    };
    let mut words = Vec::new();
    let mut optional = 0;
    for word in line.split_whitespace() {
        if word.starts_with('[') {
            optional += 1;
        }
        let closes = word.ends_with(']');
        if (optional == 0 || keep_optional) && word != "&" {
            let word = if keep_optional {
                word.trim_matches(['[', ']'])
            } else {
                word
            };
            words.push(word.trim_matches('\'').to_owned());
        }
        if closes && optional > 0 {
            optional -= 1;
        }
    }
    let start = words.iter().position(|w| !is_assignment(w))?;
    (words.get(start).map(String::as_str) == Some("dashcache")).then(|| words[start + 1..].to_vec())
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

fn dashcache() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dashcache"));
    command
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("DASHCACHE_TOKEN");
    command
}

/// The README line that contains `needle`, as `dashcache` arguments.
fn readme_command(needle: &str) -> Vec<String> {
    sh_lines()
        .into_iter()
        .find(|l| l.contains(needle))
        .and_then(dashcache_args)
        .unwrap_or_else(|| panic!("the README has no dashcache line with {needle:?}"))
}

#[test]
fn every_dashcache_line_of_the_readme_parses() {
    let commands: Vec<Vec<String>> = sh_lines()
        .into_iter()
        .flat_map(|line| [dashcache_args(line), with_optional_parts(line)])
        .flatten()
        .collect();
    assert!(commands.len() >= 20, "found only {commands:?}");
    for args in commands {
        let out = dashcache().args(&args).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "README: `dashcache {}` does not parse:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_release_serve_command_names_the_dashcache_binary() {
    assert!(
        README.contains("cargo run --release -p dashcache-server -- serve"),
        "the README's serve command changed: update this test"
    );
    let manifest = include_str!("../Cargo.toml");
    assert!(manifest.contains("name = \"dashcache-server\""));
    assert_eq!(
        manifest.matches("[[bin]]").count(),
        1,
        "cargo run needs one binary"
    );
    assert!(manifest.contains("name = \"dashcache\""));
    // The build itself: `.ci/run` compiles it under the release profile.
    let ci = include_str!("../../../.ci/run");
    assert!(
        ci.contains("cargo check --release -p dashcache-server --bin dashcache"),
        "{ci}"
    );
}

#[test]
fn config_check_and_keys_stats_run_as_written() {
    let check = readme_command("dashcache config check");
    let out = dashcache().args(&check).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("configuration OK"),
        "{stdout}"
    );

    let server = RedisServer::start();
    let stats = readme_command("dashcache keys stats");
    let out = dashcache()
        .args(&stats)
        .env("REDIS_URL", server.url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("total"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A service started by this test, killed on drop.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; the status and body.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    http_as(port, method, path, None, body)
}

/// One HTTP/1.1 request with `token` as the bearer; the status and body.
fn http_as(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    let bearer = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         {bearer}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The routes of the README's route table: every `` `METHOD /path` `` of its first column
/// (a query string dropped).
fn readme_routes() -> Vec<(String, String)> {
    let mut routes = Vec::new();
    let table = README
        .lines()
        .skip_while(|l| !l.starts_with("| route | pattern |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in table {
        let first = row
            .trim_start_matches('|')
            .split(" | ")
            .next()
            .unwrap_or_default();
        for span in first.split('`').skip(1).step_by(2) {
            if let Some((method, path)) = span.split_once(' ')
                && ["GET", "POST", "PATCH", "DELETE"].contains(&method)
            {
                let path = path.split('?').next().unwrap_or(path);
                routes.push((method.to_owned(), path.to_owned()));
            }
        }
    }
    routes
}

/// The README's route table lists every route of the service, each once, and nothing else.
#[test]
fn the_route_table_of_the_readme_is_the_services() {
    let mut readme = readme_routes();
    readme.sort();
    let mut service: Vec<(String, String)> = dashcache_server::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    service.sort();
    assert_eq!(readme, service);
}

/// Every route of the README's table, called as a newcomer would on a fresh `serve --demo yes`
/// (the embedded cache, the in-process provider, production limits): each answers 2xx. The
/// only other answer the table documents, a replayed OAuth state's 400, is checked too.
#[test]
fn every_route_of_the_readme_answers_on_a_fresh_demo() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = Service(
        dashcache()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                &format!("sqlite://{}/fresh.db?mode=rwc", dir.path().display()),
                "--demo",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while http(port, "GET", "/health", None).map(|(s, _)| s) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let login = |user: &str, password: &str| {
        let body = format!(r#"{{"user_id":"{user}","password":"{password}"}}"#);
        let (status, reply) = http(port, "POST", "/api/v1/sessions", Some(&body)).unwrap();
        assert_eq!(status, 201, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        reply["token"].as_str().unwrap().to_owned()
    };
    let alice = login("u1", "alice-password");
    let other = login("u1", "alice-password");
    let leaving = login("u1", "alice-password");
    let mut called: Vec<(String, String)> = vec![("POST".into(), "/api/v1/sessions".into())];
    let mut call =
        |method: &str, route: &str, path: &str, token: Option<&str>, body: Option<&str>| {
            let (status, reply) = http_as(port, method, path, token, body)
                .unwrap_or_else(|| panic!("{method} {path}: no answer"));
            assert!(
                (200..300).contains(&status),
                "{method} {path}: {status} {reply}"
            );
            called.push((method.to_owned(), route.to_owned()));
            serde_json::from_str::<serde_json::Value>(&reply).unwrap_or_default()
        };
    let a = Some(alice.as_str());

    call("GET", "/health", "/health", None, None);
    call("GET", "/metrics", "/metrics", None, None);
    call(
        "GET",
        "/api/v1/cache/stats",
        "/api/v1/cache/stats",
        None,
        None,
    );
    call(
        "GET",
        "/api/v1/sessions/current",
        "/api/v1/sessions/current",
        a,
        None,
    );
    call("GET", "/api/v1/users/{id}", "/api/v1/users/u1", a, None);
    let patch = Some(r#"{"name":"Alice A."}"#);
    call("PATCH", "/api/v1/users/{id}", "/api/v1/users/u1", a, patch);
    let sessions = call(
        "GET",
        "/api/v1/users/{id}/sessions",
        "/api/v1/users/u1/sessions",
        a,
        None,
    );
    let other_handle = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["handle"].as_str().unwrap().to_owned())
        .find(|h| !sessions_current_is(port, &alice, h) && !sessions_current_is(port, &leaving, h))
        .unwrap();
    let role = Some(r#"{"role":"admin"}"#);
    call(
        "POST",
        "/api/v1/users/{id}/roles",
        "/api/v1/users/u2/roles",
        a,
        role,
    );
    call(
        "DELETE",
        "/api/v1/users/{id}/roles/{role}",
        "/api/v1/users/u2/roles/admin",
        a,
        None,
    );
    call(
        "GET",
        "/api/v1/providers/{connection_id}",
        "/api/v1/providers/c1",
        a,
        None,
    );
    // The demo's connections answer from the first start: no connecting needed.
    call(
        "GET",
        "/api/v1/accounts/{id}/balance",
        "/api/v1/accounts/a1/balance",
        a,
        None,
    );
    call(
        "GET",
        "/api/v1/accounts/{id}/holdings",
        "/api/v1/accounts/a1/holdings",
        a,
        None,
    );
    let alias = Some(r#"{"alias":"brokerage"}"#);
    let connect = call(
        "POST",
        "/api/v1/providers/{slug}/connect",
        "/api/v1/providers/schwab/connect",
        a,
        alias,
    );
    let state = connect["state"].as_str().unwrap().to_owned();
    let callback = format!("/api/v1/providers/callback?state={state}&code=the-code");
    call("GET", "/api/v1/providers/callback", &callback, a, None);
    let (replay, _) = http_as(port, "GET", &callback, a, None).unwrap();
    assert_eq!(replay, 400, "a replayed state");
    call(
        "POST",
        "/api/v1/providers/{connection_id}/refresh",
        "/api/v1/providers/c1/refresh",
        a,
        None,
    );
    call(
        "GET",
        "/api/v1/accounts/{id}/balance",
        "/api/v1/accounts/a1/balance",
        a,
        None,
    );
    call("GET", "/api/v1/accounts", "/api/v1/accounts", a, None);
    let account = Some(r#"{"connection_id":"c1","name":"Savings","balance_cents":100}"#);
    call("POST", "/api/v1/accounts", "/api/v1/accounts", a, account);
    call(
        "GET",
        "/api/v1/accounts/{id}/transactions",
        "/api/v1/accounts/a1/transactions?limit=10",
        a,
        None,
    );
    let transaction = Some(r#"{"amount_cents":-1250,"description":"Coffee"}"#);
    call(
        "POST",
        "/api/v1/accounts/{id}/transactions",
        "/api/v1/accounts/a1/transactions",
        a,
        transaction,
    );
    call(
        "DELETE",
        "/api/v1/users/{id}/sessions/{handle}",
        &format!("/api/v1/users/u1/sessions/{other_handle}"),
        a,
        None,
    );
    call(
        "DELETE",
        "/api/v1/sessions/current",
        "/api/v1/sessions/current",
        Some(&leaving),
        None,
    );
    call(
        "POST",
        "/api/v1/users/{id}/security/rotate",
        "/api/v1/users/u2/security/rotate",
        a,
        None,
    );
    call(
        "DELETE",
        "/api/v1/users/{id}/sessions",
        "/api/v1/users/u2/sessions",
        a,
        None,
    );
    call(
        "POST",
        "/api/v1/security/rotate",
        "/api/v1/security/rotate",
        a,
        None,
    );
    drop(other);

    called.sort();
    called.dedup();
    let mut readme = readme_routes();
    readme.sort();
    assert_eq!(called, readme, "every route of the table is called");
    drop(service);
}

/// Whether `handle` is the session `token` authenticates.
fn sessions_current_is(port: u16, token: &str, handle: &str) -> bool {
    let (_, reply) = http_as(port, "GET", "/api/v1/sessions/current", Some(token), None).unwrap();
    reply.contains(handle)
}

#[test]
fn serve_and_load_run_as_written_and_measure_the_route() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let serve = readme_command("dashcache serve --rate-limit-scale");
    let service = Service(
        dashcache()
            .args(&serve)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                &format!("sqlite://{}/readme.db?mode=rwc", dir.path().display()),
                "--demo",
                "yes",
            ])
            .env("REDIS_URL", server.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while http(port, "GET", "/health", None).map(|(s, _)| s) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/sessions",
        Some(r#"{"user_id":"u2","password":"bob-password"}"#),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let login: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = login["token"].as_str().unwrap();

    let mut load = readme_command("dashcache load");
    // The README's run, shortened to one second against this service.
    for (flag, value) in [
        ("--url", format!("http://127.0.0.1:{port}")),
        ("--duration-secs", "1".to_owned()),
    ] {
        let at = load.iter().position(|a| a == flag).expect(flag);
        load[at + 1] = value;
    }
    let out = dashcache()
        .args(&load)
        .args(["--concurrency", "4"])
        .env("DASHCACHE_TOKEN", token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Well past 100 reads a minute, and none limited: the limiter was scaled out of the way.
    assert!(stdout.contains(" 0 limited (429), 0 failed"), "{stdout}");
    let requests: u64 = stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 100, "{stdout}");
    drop(service);
}
