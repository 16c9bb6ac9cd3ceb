//! [`RedisProcess`]: a private `redis-server` in a temporary directory, with errors rather
//! than panics, for tools (the service's `dashcache drill`) as well as tests.
//!
//! Every server is started behind a lifeline: a small shell that holds the read end of a pipe
//! whose write end this process keeps, and kills the server when the pipe closes. A test
//! process that dies — killed by a timeout, or exiting with a shared server still in a static
//! — therefore never leaves a `redis-server` behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Kills the server when its standard input closes (`$1` is the binary, the rest its
/// arguments); prints the server's pid first.
const LIFELINE: &str = r#"bin="$1"; shift
"$bin" "$@" </dev/null >/dev/null 2>&1 &
echo $!
read -r _
kill -9 $! 2>/dev/null
wait $!"#;

/// The `redis-server` binary: `$REDIS_SERVER_BIN`, or `redis-server` on the `PATH`.
pub fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A `redis-server` of its own, on a loopback port, with nothing saved to disk; killed on drop.
#[derive(Debug)]
pub struct RedisProcess {
    dir: TempDir,
    port: u16,
    running: Option<Running>,
    extra_args: Vec<String>,
    /// A configuration file's text, written to the directory and named first on the command
    /// line (a sentinel needs a file it can rewrite).
    config: Option<String>,
}

/// A started server: its lifeline shell, the pipe that keeps it alive, and its own pid.
#[derive(Debug)]
struct Running {
    lifeline: Child,
    _pipe: ChildStdin,
    pid: i32,
}

impl RedisProcess {
    /// Starts a server on a free port with extra configuration (e.g. `["--maxmemory",
    /// "1mb"]`), retrying on another port when one is taken between the probe and the bind.
    ///
    /// # Errors
    /// When the binary is missing, or no server answers; the message carries its log.
    pub fn start(args: &[&str]) -> Result<Self, String> {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::start_on(free_port()?, args) {
                Ok(process) => return Ok(process),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Starts a server on `port`, which must be free.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_on(port: u16, args: &[&str]) -> Result<Self, String> {
        Self::start_with_config(port, None, args)
    }

    /// Starts a server on `port` (which must be free) with `config` as its configuration file
    /// (kept, and rewritten by the server if it does that, across restarts) and extra
    /// arguments; e.g. a sentinel: `sentinel monitor …` and `["--sentinel"]`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_config(
        port: u16,
        config: Option<&str>,
        args: &[&str],
    ) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("dashcache-redis-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for redis-server: {e}"))?;
        let mut process = Self {
            dir,
            port,
            running: None,
            extra_args: args.iter().map(|s| (*s).to_owned()).collect(),
            config: None,
        };
        if let Some(text) = config {
            std::fs::write(process.config_path(), text)
                .map_err(|e| format!("cannot write the server's configuration: {e}"))?;
            process.config = Some(text.to_owned());
        }
        process.spawn_and_wait()?;
        Ok(process)
    }

    /// The port it listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running
            .as_ref()
            .and_then(|r| u32::try_from(r.pid).ok())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing is answered.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn freeze(&self) -> Result<(), String> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a frozen server with `SIGCONT`.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn thaw(&self) -> Result<(), String> {
        self.signal(Signal::SIGCONT)
    }

    /// Kills the server with `SIGKILL` and waits for it to go: connections are reset and the
    /// port refuses new ones.
    pub fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            // A frozen process still dies of SIGKILL.
            let _ = kill(Pid::from_raw(running.pid), Signal::SIGKILL);
            // Closing the pipe ends the lifeline shell, which reaps the server first.
            drop(running._pipe);
            let _ = running.lifeline.wait();
        }
    }

    /// Kills the server if it runs, then starts a fresh one on the same port and directory
    /// (empty, unless its configuration persists something) and waits until it answers.
    ///
    /// # Errors
    /// When it does not come back within 15 s.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                // The old socket may linger for a moment: a retry costs nothing.
                Err(_) => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn signal(&self, signal: Signal) -> Result<(), String> {
        match &self.running {
            Some(running) => kill(Pid::from_raw(running.pid), signal)
                .map_err(|e| format!("send {signal} to redis-server {}: {e}", running.pid)),
            None => Ok(()),
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let binary = redis_server_binary();
        let mut lifeline = Command::new("sh")
            .arg("-c")
            .arg(LIFELINE)
            .arg("sh")
            .arg(&binary)
            .args(self.config.as_ref().map(|_| self.config_path()))
            .args(self.base_args(self.dir.path()))
            .args(&self.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh to start {}: {e}", binary.display()))?;
        let pipe = lifeline.stdin.take();
        let pid = lifeline
            .stdout
            .take()
            .and_then(|out| {
                let mut line = String::new();
                BufReader::new(out).read_line(&mut line).ok()?;
                line.trim().parse::<i32>().ok()
            })
            .filter(|pid| *pid > 0);
        let (Some(pipe), Some(pid)) = (pipe, pid) else {
            let _ = lifeline.kill();
            let _ = lifeline.wait();
            return Err(format!("cannot start {}", binary.display()));
        };
        self.running = Some(Running {
            lifeline,
            _pipe: pipe,
            pid,
        });
        self.wait_until_ready(&binary)
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

    fn wait_until_ready(&mut self, binary: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(running) = &self.running
                && kill(Pid::from_raw(running.pid), None).is_err()
            {
                let log = self.log();
                self.kill();
                return Err(format!(
                    "{} on port {} exited at once{}; log:\n{log}",
                    binary.display(),
                    self.port,
                    if log.is_empty() {
                        " (is it installed? scripts/test.sh installs it as root, or set \
                         REDIS_SERVER_BIN)"
                    } else {
                        ""
                    }
                ));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log();
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer within {START_TIMEOUT:?}; log:\n{log}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisProcess {
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
///
/// # Errors
/// When no loopback port can be bound.
pub fn free_port() -> Result<u16, String> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
        if reserve(port) {
            return Ok(port);
        }
    }
}

/// Marks `port` as handed out; false when it already was.
pub fn reserve(port: u16) -> bool {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(port)
}

/// One blocking `PING` with short timeouts: true when the server answers it (`+PONG`, or
/// `-NOAUTH` from a server that requires a password).
pub fn ping(port: u16) -> bool {
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
