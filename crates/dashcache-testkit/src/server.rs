//! [`RedisServer`]: a private `redis-server` per test, failing the test when it cannot start.

use crate::process::RedisProcess;

/// A `redis-server` of the test's own, on a free loopback port, with nothing saved to disk.
///
/// Killed on drop (and, behind its lifeline, when the test process dies). Its log is kept in
/// its temporary directory and shown in every failure message of the harness.
///
/// ```no_run
/// let server = dashcache_testkit::RedisServer::start();
/// let url = server.url(); // redis://127.0.0.1:<port>
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    process: RedisProcess,
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
        Self::from(RedisProcess::start(args))
    }

    /// Starts a server on `port` (which must be free) with extra configuration.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        Self::from(RedisProcess::start_on(port, args))
    }

    /// As [`start_on`](Self::start_on), with the failure (and the server's log) as an error:
    /// another process may have taken the port since it was found free.
    ///
    /// # Errors
    /// The server did not start or answer; the message carries its log.
    pub fn try_start_on(port: u16, args: &[&str]) -> Result<Self, String> {
        RedisProcess::start_on(port, args).map(|process| Self { process })
    }

    /// As [`try_start_on`](Self::try_start_on), with `config` as its configuration file (a
    /// sentinel's: `sentinel monitor …`, started with `--sentinel`).
    ///
    /// # Errors
    /// As [`try_start_on`](Self::try_start_on).
    pub fn try_start_with_config(port: u16, config: &str, args: &[&str]) -> Result<Self, String> {
        RedisProcess::start_with_config(port, Some(config), args).map(|process| Self { process })
    }

    fn from(started: Result<RedisProcess, String>) -> Self {
        match started {
            Ok(process) => Self { process },
            Err(e) => panic!("{e}"),
        }
    }

    /// The port it listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing is answered.
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn freeze(&self) {
        self.process.freeze().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Resumes a frozen server with `SIGCONT`.
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn thaw(&self) {
        self.process.thaw().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills the server with `SIGKILL` and waits for it to exit. Connections are reset and the
    /// port refuses new ones.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills the server if it runs, then starts a fresh one on the same port (empty: nothing is
    /// persisted) and waits until it answers.
    ///
    /// # Panics
    /// When it does not come back within 15 s.
    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
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
}
