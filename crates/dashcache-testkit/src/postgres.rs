//! [`PostgresServer`]: a PostgreSQL for tests, and [`PgSchema`]: a schema of a test's own in it.
//!
//! With `DATABASE_URL` set to a `postgres://` URL, that server is used; otherwise a throwaway
//! cluster is made with `initdb` in a temporary directory and started on a free loopback port
//! (as the `postgres` user when the tests run as root, which PostgreSQL refuses to run as), and
//! killed on drop. Either way each test works in a schema created for it and dropped after it,
//! so tests never see each other's tables nor a database someone else left behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use tempfile::TempDir;

use crate::process::free_port;

/// A PostgreSQL server for tests; see the module docs.
#[derive(Debug)]
pub struct PostgresServer {
    base_url: String,
    psql: PathBuf,
    child: Option<Child>,
    /// How the throwaway cluster was started, to start it again.
    launch: Option<Launch>,
    _dir: Option<TempDir>,
}

/// A throwaway cluster's program, directory, port and owner.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
}

impl Launch {
    fn spawn(&self) -> Child {
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("postgres.log"))
                    .expect("a log file"),
            ));
        if let Some((uid, gid)) = self.owner {
            postgres.uid(uid).gid(gid);
        }
        postgres.spawn().expect("start postgres")
    }
}

/// A schema of one test's own, dropped with it.
#[derive(Debug)]
pub struct PgSchema {
    url: String,
    name: String,
    base_url: String,
    psql: PathBuf,
}

impl PgSchema {
    /// A URL whose connections work in this schema (`search_path`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = psql(
            &self.psql,
            &self.base_url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// The directory of the PostgreSQL programs: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off the `PATH`).
fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn psql(psql: &Path, url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new(psql)
        .args([
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", psql.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl PostgresServer {
    /// `DATABASE_URL`'s server, or a throwaway cluster.
    ///
    /// # Panics
    /// When neither is possible; the message says what to install.
    pub fn start() -> Self {
        let bin = bin_dir();
        let psql_bin = bin
            .as_ref()
            .map_or_else(|| PathBuf::from("psql"), |b| b.join("psql"));
        if let Ok(url) = std::env::var("DATABASE_URL")
            && url.starts_with("postgres")
        {
            return Self {
                base_url: url,
                psql: psql_bin,
                child: None,
                launch: None,
                _dir: None,
            };
        }
        let bin = bin.unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed: run scripts/test.sh as root (it installs it), \
                 `apt-get install postgresql`, or set DATABASE_URL=postgres://…"
            )
        });
        Self::throwaway(&bin)
    }

    fn throwaway(bin: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dashcache-pg-")
            .tempdir()
            .expect("a temporary directory");
        // PostgreSQL will not run as root: as root, run it as `postgres`.
        let owner = if Uid::effective().is_root() {
            Some(
                User::from_name("postgres")
                    .ok()
                    .flatten()
                    .expect("the `postgres` user (from the postgresql package)"),
            )
        } else {
            None
        };
        let data = dir.path().join("data");
        if let Some(user) = &owner {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .expect("chown the cluster directory");
        }
        let as_owner = |cmd: &mut Command| {
            if let Some(user) = &owner {
                cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            }
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null());
        as_owner(&mut initdb);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().unwrap_or_else(|e| panic!("{e}"));
            let launch = Launch {
                bin: bin.to_path_buf(),
                dir: dir.path().to_path_buf(),
                port,
                owner: owner.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw())),
            };
            let mut child = launch.spawn();
            let base_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
            let psql_bin = bin.join("psql");
            match wait_until_up(&psql_bin, &base_url, &mut child, dir.path()) {
                Ok(()) => {
                    return Self {
                        base_url,
                        psql: psql_bin,
                        child: Some(child),
                        launch: Some(launch),
                        _dir: Some(dir),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("{last_error}");
    }

    /// Stops the server (immediate shutdown: every connection drops) and starts it again on
    /// the same port with the same data, like a crash and a restart.
    ///
    /// # Panics
    /// With a `DATABASE_URL` server (not ours to restart), or when it does not come back.
    pub fn restart(&mut self) {
        let launch = self
            .launch
            .clone()
            .expect("only a throwaway cluster can be restarted (unset DATABASE_URL)");
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            }
            let _ = child.wait();
        }
        let mut child = launch.spawn();
        wait_until_up(&self.psql, &self.base_url, &mut child, &launch.dir)
            .unwrap_or_else(|e| panic!("postgres did not restart: {e}"));
        self.child = Some(child);
    }

    /// Runs `sql` on the server's own database (not a test schema).
    ///
    /// # Panics
    /// When it fails; the message carries psql's.
    pub fn exec(&self, sql: &str) {
        psql(&self.psql, &self.base_url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Terminates every connection whose `application_name` is `name`.
    pub fn terminate(&self, name: &str) {
        self.exec(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
            name.replace('\'', "''")
        ));
    }

    /// A fresh schema for one test.
    ///
    /// # Panics
    /// When the schema cannot be created.
    pub fn schema(&self) -> PgSchema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "dashcache_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        psql(&self.psql, &self.base_url, &format!("CREATE SCHEMA {name}"))
            .unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        PgSchema {
            url: format!(
                "{}{separator}options=-c%20search_path%3D{name}",
                self.base_url
            ),
            name,
            base_url: self.base_url.clone(),
            psql: self.psql.clone(),
        }
    }
}

/// Waits until the server at `url` answers (20 s at most).
fn wait_until_up(psql_bin: &Path, url: &str, child: &mut Child, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if psql(psql_bin, url, "SELECT 1").is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "postgres exited with {status}: {}",
                std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("postgres did not answer within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl PgSchema {
    /// Runs `sql` in this schema.
    ///
    /// # Panics
    /// When it fails; the message carries psql's.
    pub fn exec(&self, sql: &str) {
        psql(&self.psql, &self.url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: immediate shutdown, the postmaster takes its backends down with it.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            }
            let _ = child.wait();
        }
    }
}
