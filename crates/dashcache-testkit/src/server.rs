//! [`RedisServer`]: a private `redis-server` per test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The `redis-server` binary: `$REDIS_SERVER_BIN`, or `redis-server` on the `PATH`.
pub fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A `redis-server` of the test's own, on a free loopback port, with nothing saved to disk.
///
/// Killed on drop. Its log is kept in its temporary directory and shown in every failure
/// message of the harness.
///
/// ```no_run
/// let server = dashcache_testkit::RedisServer::start();
/// let url = server.url(); // redis://127.0.0.1:<port>
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a server with the default configuration.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not answer within 15 s; the message carries the
    /// server's log.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line configuration (e.g. `["--maxmemory", "1mb"]`).
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_with_args(args: &[&str]) -> Self {
        let mut server = Self::unstarted(0, args);
        // Another process may take the free port between our probe and redis' bind: retry on a
        // fresh port a few times.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    server.kill();
                }
            }
        }
        panic!("{last_error}");
    }

    /// Starts a server on `port` (which must be free) with extra configuration.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let mut server = Self::unstarted(port, args);
        if let Err(e) = server.spawn_and_wait() {
            panic!("{e}");
        }
        server
    }

    /// The server's temporary directory and configuration, no process yet.
    fn unstarted(port: u16, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dashcache-redis-")
            .tempdir()
            .expect("create a temporary directory for redis-server");
        Self {
            dir,
            port,
            child: None,
            extra_args: args.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The port it listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Resumes a frozen server with `SIGCONT`.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Kills the server with `SIGKILL` and waits for it to exit. Connections are reset and the
    /// port refuses new ones.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process still dies of SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a fresh one on the same port (empty: nothing is
    /// persisted) and waits until it answers.
    ///
    /// # Panics
    /// When it does not come back within 15 s.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // The old socket may linger for a moment; redis sets SO_REUSEADDR, so this is
                // rare, but a retry costs nothing.
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                Err(_) => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// A `redis` client for this server, to inspect or prepare state behind the cache's back.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid loopback URL")
    }

    /// Runs one command on a fresh connection and returns its reply (for test set-up).
    ///
    /// # Panics
    /// When the command fails; the message carries the server's log.
    pub async fn command<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut conn = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.url(), self.log()));
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.url()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            kill(Pid::from_raw(pid), signal)
                .unwrap_or_else(|e| panic!("send {signal} to redis-server {pid}: {e}"));
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let binary = redis_server_binary();
        let child = Command::new(&binary)
            .args(self.base_args(self.dir.path()))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e}. Install Redis (scripts/test.sh does it as root, or \
                     `apt-get install redis-server`) or set REDIS_SERVER_BIN.",
                    binary.display()
                )
            })?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn base_args(&self, dir: &Path) -> Vec<String> {
        [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.display().to_string(),
            "--logfile",
            &self.log_path().display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "redis-server on port {} exited with {status}; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {} did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1, and that no other server of this process
/// was given before.
///
/// Never handing a port out twice matters when tests run in parallel: a server killed by one
/// test frees its port, and a server started by another test on that port would answer the
/// first test's clients — which reconnect to it — with another server's data.
pub(crate) fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral loopback port");
        if reserve(port) {
            return port;
        }
    }
}

/// Marks `port` as handed out; false when it already was.
pub(crate) fn reserve(port: u16) -> bool {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(port)
}

/// One blocking `PING` with short timeouts: true when the server answers it (`+PONG`, or
/// `-NOAUTH` from a server that requires a password).
pub(crate) fn ping(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
}
