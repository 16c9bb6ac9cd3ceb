//! `dashcache`: the reference service and its tools. Thin: it parses the command line, sets up
//! tracing, and hands over to the library.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dashcache::CacheSettings;
use dashcache::ratelimit::TrustedProxies;
use dashcache_server::serve::{ServeOptions, build_state, run};
use tracing_subscriber::EnvFilter;

/// The cache layer for Rust web services: the reference service and its tools.
#[derive(Debug, Parser)]
#[command(name = "dashcache", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference service (SQLite file and embedded cache unless told otherwise).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Redis (`redis://host:port`); the embedded cache when absent.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// The database: a SQLite file (created on first run) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://dashcache.db?mode=rwc"
    )]
    database_url: String,
    /// A proxy (address or CIDR) whose X-Forwarded-For / Forwarded is believed; repeatable.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dashcache: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dashcache: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut settings = CacheSettings::from_env()?;
    if args.redis_url.is_some() {
        settings.redis_url = args.redis_url;
    }
    let options = ServeOptions {
        listen: args.listen,
        database_url: args.database_url,
        trusted_proxies: TrustedProxies::parse(&args.trusted_proxies)?,
    };
    let state = build_state(&options, settings).await?;
    run(options, state).await
}
