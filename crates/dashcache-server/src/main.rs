//! `dashcache`: the reference service and its tools. Thin: it parses the command line, sets up
//! tracing, and hands over to the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dashcache::CacheSettings;
use dashcache::ratelimit::{ForwardedHeader, TrustedProxies};
use dashcache_server::cli::bench::{BenchOp, BenchOptions};
use dashcache_server::cli::drill::DrillOptions;
use dashcache_server::cli::http_load::{LoadOptions, TOKEN_VAR};
use dashcache_server::cli::users::NewUser;
use dashcache_server::cli::warm::WarmOptions;
use dashcache_server::cli::{self, CliError};
use dashcache_server::config::{Flags, ServiceConfig};
use dashcache_server::serve::{
    CacheChoice, DEFAULT_DATABASE_URL, DemoData, ServeOptions, build_state, run,
};
use dashcache_server::state::{WarmSet, WebOptions};
use dashcache_server::upstream::{self, KnobSettings, RunningUpstream};
use tracing_subscriber::EnvFilter;

/// The cache layer for Rust web services: the reference service and its tools.
#[derive(Debug, Parser)]
#[command(name = "dashcache", version, about, long_about = None)]
#[command(after_help = "Logs go to standard error; RUST_LOG filters them \
(e.g. RUST_LOG=info,dashcache::access=off).")]
struct Cli {
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "DASHCACHE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference service (SQLite file and embedded cache unless told otherwise).
    Serve(ServeArgs),
    /// Measure dashcache against the raw client on a cache, side by side.
    Bench(BenchArgs),
    /// Inspect or delete keys on the configured Redis.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// Redis (overrides REDIS_URL).
        #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
        redis_url: Option<String>,
    },
    /// Check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the service's users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// HTTP load against a running service (the drill runs it as its second process).
    Load(LoadArgs),
    /// Kill, restart, freeze and resume Redis under load; report each phase.
    Drill(DrillArgs),
    /// Measure the invalidation log: commit to visible on another instance, and what its
    /// trigger adds to a write (a private Redis; a temporary SQLite file unless given a
    /// database).
    LogBench(LogBenchArgs),
    /// Run the stand-in upstream provider API on its own (what `serve` otherwise runs
    /// in-process), with the latency and errors of a real one.
    Upstream(UpstreamArgs),
    /// Load the hot sets (users, account lists) into the cache before traffic: at deploy time.
    Warm(WarmArgs),
}

#[derive(Debug, clap::Args)]
struct WarmArgs {
    /// The database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// What to warm.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "users,accounts"
    )]
    sets: Vec<WarmSet>,
    /// Keys per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// At most this many keys loaded from the database per second.
    #[arg(long, default_value_t = 1000)]
    per_second: u32,
}

#[derive(Debug, clap::Args)]
struct UpstreamArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Added to every data call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// The share of data calls answered 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Redis (`redis://host:port`, `rediss://` for TLS), a cluster (`redis+cluster://host:port`
    /// or comma-separated seed URLs) or a Sentinel set
    /// (`redis+sentinel://host:port,…/<master-name>`); the embedded cache when absent.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// DANGER: do not verify the Redis server's TLS certificate (a test bench only; warned
    /// about at start). `CACHE_TLS_INSECURE=true` does the same.
    #[arg(long)]
    tls_insecure: bool,
    /// The database: a SQLite file (created on first run) or `postgres://…`. `DATABASE_URL`
    /// sets it too; the default is `sqlite://dashcache.db?mode=rwc`.
    #[arg(long)]
    database_url: Option<String>,
    /// Demo users (with published passwords) for an empty database: `auto` only for the
    /// default SQLite file; `yes` for any empty database; `no` never. `DASHCACHE_DEMO` sets it
    /// too (default `auto`).
    #[arg(long, value_enum)]
    demo: Option<DemoData>,
    /// A proxy (address or CIDR) whose forwarding header is believed; repeatable.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// The header the trusted proxies write the client address into (only that one is read).
    #[arg(long, value_enum, default_value = "x-forwarded-for")]
    forwarded_header: HeaderChoice,
    /// Mark the session cookie `Secure` (serve behind TLS). `DASHCACHE_SECURE_COOKIES=true`
    /// sets it too.
    #[arg(long)]
    secure_cookies: bool,
    /// An origin (`https://app.example`) whose cookie-authenticated writes are accepted besides
    /// the service's own (behind a proxy that changes the host); repeatable, or comma
    /// separated in `DASHCACHE_ALLOWED_ORIGINS`.
    #[arg(long = "allowed-origin", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// A file holding the operations token: with it as a bearer token, `/health` shows its
    /// details and `/metrics` and `/api/v1/cache/stats` answer — and nobody else gets them.
    /// `DASHCACHE_OPS_TOKEN` sets it too.
    #[arg(long)]
    ops_token_file: Option<std::path::PathBuf>,
    /// Multiply every rate limit, for load tests that measure the routes and not the limiter
    /// (1 in production).
    #[arg(long, default_value_t = 1)]
    rate_limit_scale: u64,
    /// Add this many milliseconds to every cache-aside load from the database (half before
    /// the query, half after), as a database across a network would: for drills and demos of
    /// what the cache saves. 0 in production.
    #[arg(long, default_value_t = 0)]
    db_latency_ms: u64,
    /// `none` runs with no cache at all (every read from the database): a kill switch, and the
    /// baseline of what the cache is worth.
    #[arg(long, value_enum, default_value = "auto")]
    cache: CacheChoice,
    /// The upstream provider API (`http://host:port`, e.g. a `dashcache upstream`); when
    /// absent, one runs in-process on a free loopback port with the two settings below.
    #[arg(long, env = "DASHCACHE_UPSTREAM_URL", hide_env_values = true)]
    upstream_url: Option<String>,
    /// The in-process upstream's latency per call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    upstream_latency_ms: u64,
    /// The in-process upstream's share of calls answered 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    upstream_error_rate: f64,
    /// One `info` log line per request: method, route pattern, status, latency, request id.
    /// `DASHCACHE_ACCESS_LOG` sets it too (default `on`).
    #[arg(long, value_enum)]
    access_log: Option<Switch>,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// `redis://…` or a cluster URL (as for `serve`); the embedded cache (against raw moka)
    /// when absent.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    url: Option<String>,
    /// Operations to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "get,set,get-many"
    )]
    ops: Vec<BenchOp>,
    /// Concurrent tasks.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds per operation (both sides together).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys per get-many.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// With a Redis URL: measure the hybrid cache (L1 in front of Redis) against the embedded
    /// cache, plain `RedisCache` and the raw client, in the same run.
    #[arg(long)]
    l1: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Delete the keys matching a Redis glob, non-blocking (SCAN + UNLINK).
    DeletePattern {
        /// The glob, e.g. `dashcache:user:*`.
        pattern: String,
        /// Count the matching keys, by namespace, without deleting them.
        #[arg(long)]
        dry_run: bool,
        /// Allow a pattern outside this service's prefix (`CACHE_KEY_PREFIX`): other
        /// applications' keys on the same Redis can match it.
        #[arg(long)]
        all_prefixes: bool,
    },
    /// Keys per namespace.
    Stats,
}

/// The forwarding header of `serve --forwarded-header`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HeaderChoice {
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user; the password comes from DASHCACHE_PASSWORD or one line on standard input.
    Create {
        /// The user id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// E-mail address.
        #[arg(long)]
        email: String,
        /// Make them an admin.
        #[arg(long)]
        admin: bool,
        /// The database.
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the settings and print the effective configuration (secrets masked).
    Check {
        /// The database to check with `--ping` (read, never written); `DATABASE_URL` sets it
        /// too.
        #[arg(long)]
        database_url: Option<String>,
        /// Also check that the cache and the database answer.
        #[arg(long)]
        ping: bool,
    },
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The service, `http://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A path to GET (repeatable; used in turn).
    #[arg(long = "path", required = true)]
    paths: Vec<String>,
    /// A file holding a session token to send as a bearer token (or set DASHCACHE_TOKEN):
    /// never on the command line, which every local user can read.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Concurrent connections (1 to 4096).
    #[arg(long, default_value_t = 32,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    concurrency: usize,
    /// How long, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Print a JSON line every this many milliseconds.
    #[arg(long)]
    report_every_ms: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct LogBenchArgs {
    /// The database (a `postgres://` one measures LISTEN/NOTIFY wake-ups); a temporary SQLite
    /// file when absent. Its `users` table gets the demo users when empty.
    #[arg(long)]
    database_url: Option<String>,
    /// Commits to measure.
    #[arg(long, default_value_t = 300)]
    samples: usize,
}

#[derive(Debug, clap::Args)]
struct DrillArgs {
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    phase_secs: u64,
    /// Concurrent connections of the load.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(&cli.command)));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        // Colour codes are for a person at a terminal, not for a file or a log collector.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dashcache: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(Some(output)) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dashcache: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The service logs at `info`; the tools only warn, so their output stays readable.
fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Serve(_) | Command::Upstream(_) => "info",
        _ => "warn",
    }
}

async fn execute(command: Command) -> Result<Option<String>, CliError> {
    Ok(match command {
        Command::Serve(args) => {
            serve(args).await?;
            None
        }
        Command::Bench(args) => Some(
            cli::bench::run(&BenchOptions {
                url: args.url,
                ops: args.ops,
                concurrency: args.concurrency,
                duration: Duration::from_secs(args.duration_secs),
                keys: args.keys,
                value_size: args.value_size,
                batch: args.batch,
                l1: args.l1,
                prefix: CacheSettings::from_env()?.key_prefix,
            })
            .await?,
        ),
        Command::Keys { command, redis_url } => {
            let mut settings = CacheSettings::from_env()?;
            if redis_url.is_some() {
                settings.redis_url = redis_url;
            }
            Some(match command {
                KeysCommand::DeletePattern {
                    pattern,
                    dry_run,
                    all_prefixes,
                } => cli::keys::delete_pattern(&settings, &pattern, dry_run, all_prefixes).await?,
                KeysCommand::Stats => cli::keys::stats(&settings).await?,
            })
        }
        Command::Config {
            command: ConfigCommand::Check { database_url, ping },
        } => Some(cli::config::check(database_url, ping).await?),
        Command::Users {
            command:
                UsersCommand::Create {
                    id,
                    name,
                    email,
                    admin,
                    database_url,
                },
        } => Some(
            cli::users::create(
                &database_url,
                NewUser {
                    id,
                    name,
                    email,
                    admin,
                },
            )
            .await?,
        ),
        Command::Load(args) => {
            let total = cli::http_load::run(&LoadOptions {
                base: args.url,
                paths: args.paths,
                token: secret_from(args.token_file.as_deref(), TOKEN_VAR)?,
                concurrency: args.concurrency,
                duration: Duration::from_secs(args.duration_secs),
                report_every: args.report_every_ms.map(Duration::from_millis),
            })
            .await?;
            if total.ok == 0 {
                let why = total
                    .first_failure
                    .clone()
                    .unwrap_or_else(|| "every answer was 429 (rate limited)".to_owned());
                return Err(
                    format!("no request succeeded ({} sent): {why}", total.requests).into(),
                );
            }
            let seconds = total.t.max(f64::EPSILON);
            let summary = format!(
                "{} in {seconds:.1} s ({:.0}/s): {} ok, {} limited (429), {} failed; p50 {:.2} ms, p99 {:.2} ms",
                cli::plural(total.requests as u64, "request"),
                total.requests as f64 / seconds,
                total.ok,
                total.limited,
                total.failed,
                total.p50_ms,
                total.p99_ms
            );
            // With periodic reports, stdout is for the JSON lines.
            if args.report_every_ms.is_some() {
                eprintln!("{summary}");
                None
            } else {
                Some(summary)
            }
        }
        Command::Warm(args) => Some(
            cli::warm::run(
                &WarmOptions {
                    database_url: args.database_url,
                    sets: args.sets,
                    batch: args.batch,
                    per_second: args.per_second,
                },
                CacheSettings::from_env()?,
            )
            .await?,
        ),
        Command::Upstream(args) => {
            let running = RunningUpstream::start(
                args.listen,
                KnobSettings {
                    latency_ms: args.latency_ms,
                    error_rate: args.error_rate,
                    down: false,
                },
            )
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
            eprintln!(
                "upstream provider API on {} ({} ms latency, {:.1} % errors); knobs: POST /_admin/knobs",
                running.url(),
                args.latency_ms,
                args.error_rate * 100.0
            );
            let _ = tokio::signal::ctrl_c().await;
            None
        }
        Command::LogBench(args) => Some(
            cli::log_bench::run(&cli::log_bench::LogBenchOptions {
                database_url: args.database_url,
                samples: args.samples,
            })
            .await?,
        ),
        Command::Drill(args) => Some(
            cli::drill::run(DrillOptions {
                phase: Duration::from_secs(args.phase_secs.max(1)),
                concurrency: args.concurrency.max(1),
            })
            .await?,
        ),
    })
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut settings = CacheSettings::from_env()?;
    if args.redis_url.is_some() {
        settings.redis_url = args.redis_url;
    }
    settings.tls_insecure |= args.tls_insecure;
    // The same reading `config check` does: a value it refuses, this refuses, naming the
    // variable (or the flag) and where it came from.
    let service = ServiceConfig::read(&Flags {
        demo: args.demo,
        secure_cookies: args.secure_cookies,
        access_log: args.access_log.map(|s| s == Switch::On),
        allowed_origins: args.allowed_origins.clone(),
        database_url: args.database_url.clone(),
    })?;
    // Kept alive for as long as the service runs.
    let (_in_process, upstream_url) = match args.upstream_url {
        Some(url) => (None, url),
        None => {
            let running = RunningUpstream::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                KnobSettings {
                    latency_ms: args.upstream_latency_ms,
                    error_rate: args.upstream_error_rate,
                    down: false,
                },
            )
            .await
            .map_err(|e| format!("cannot start the in-process upstream: {e}"))?;
            tracing::info!(
                url = %running.url(),
                latency_ms = args.upstream_latency_ms,
                "upstream provider API running in-process"
            );
            let url = running.url();
            (Some(running), url)
        }
    };
    let header = match args.forwarded_header {
        HeaderChoice::XForwardedFor => ForwardedHeader::XForwardedFor,
        HeaderChoice::Forwarded => ForwardedHeader::Forwarded,
    };
    let options = ServeOptions {
        listen: args.listen,
        database_url: service.database_url.value.clone(),
        rate_limit_scale: args.rate_limit_scale,
        cache: args.cache,
        demo: service.demo.value,
        web: WebOptions {
            secure_cookies: service.secure_cookies.value,
            ops_token: ops_token(args.ops_token_file.as_deref())?,
            trusted_proxies: TrustedProxies::parse(&args.trusted_proxies)?.with_header(header),
            session_lookups: None,
            login_accounts: None,
            allowed_origins: service.allowed_origins.value.clone(),
            loopback_only: args.listen.ip().is_loopback(),
            upstream: Some(upstream::client_for(&upstream_url)),
            access_log: service.access_log.value,
        },
    };
    if !args.listen.ip().is_loopback() {
        if options.web.ops_token.is_some() {
            tracing::warn!(
                listen = %args.listen,
                "the operations token travels in clear: this listener speaks plain HTTP on a \
                 non-loopback address. Put TLS in front (a proxy) before anyone sends it."
            );
        } else {
            tracing::warn!(
                listen = %args.listen,
                "no operations token: /metrics and /api/v1/cache/stats refuse everyone on a \
                 non-loopback listener (set DASHCACHE_OPS_TOKEN or --ops-token-file)"
            );
        }
    }
    let state = build_state(&options, settings).await?;
    if args.db_latency_ms > 0 {
        state.simulate_load_latency(std::time::Duration::from_millis(args.db_latency_ms));
        tracing::warn!(
            ms = args.db_latency_ms,
            "every database load is slowed down on purpose (--db-latency-ms)"
        );
    }
    run(options, state).await
}

/// A secret from `file` (its first line), else from the environment variable `var`.
fn secret_from(file: Option<&std::path::Path>, var: &str) -> Result<Option<String>, CliError> {
    let secret = match file {
        Some(path) => {
            let first = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            // A file named on purpose that holds nothing is a mistake, not "no secret".
            if first.is_empty() {
                return Err(format!(
                    "{}: its first line is empty; write the secret there",
                    path.display()
                )
                .into());
            }
            Some(first)
        }
        None => std::env::var(var).ok(),
    };
    Ok(secret.filter(|s| !s.is_empty()))
}

/// The operations token, from `file` or `DASHCACHE_OPS_TOKEN`: at least 16 characters, as it
/// is the one secret that opens `/metrics` and the statistics.
fn ops_token(file: Option<&std::path::Path>) -> Result<Option<String>, CliError> {
    let token = secret_from(file, "DASHCACHE_OPS_TOKEN")?;
    if let Some(t) = &token
        && t.chars().count() < 16
    {
        return Err(
            "the operations token (DASHCACHE_OPS_TOKEN or --ops-token-file) has fewer \
                    than 16 characters: make a long random one (e.g. `openssl rand -hex 32`)"
                .into(),
        );
    }
    Ok(token)
}
