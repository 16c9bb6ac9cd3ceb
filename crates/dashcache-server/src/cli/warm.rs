//! `dashcache warm`: loads the service's hot sets into the cache before traffic arrives (at
//! deploy time), in batches, at a bounded rate of database rows, with a progress bar.

use std::time::{Duration, Instant};

use dashcache::CacheSettings;
use dashcache::aside::WarmReport;
use indicatif::ProgressBar;

use super::{CliError, style};
use crate::serve::{CacheChoice, DemoData, ServeOptions, build_state};
use crate::state::{WarmSet, WebOptions};

/// What to warm, and how fast.
#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// The database.
    pub database_url: String,
    /// The sets.
    pub sets: Vec<WarmSet>,
    /// Keys per batch (one cache round trip, one loader call).
    pub batch: usize,
    /// At most this many keys loaded per second, to spare the database.
    pub per_second: u32,
}

/// Warms `options.sets`; a one-line report per set.
///
/// # Errors
/// The database or the settings are unusable; no shared cache is configured (the embedded
/// cache would die with this process); the cache is unreachable before or after warming (what
/// was "loaded" then reached no cache); a batch failed.
pub async fn run(options: &WarmOptions, settings: CacheSettings) -> Result<String, CliError> {
    let Some(url) = settings.redis_url.clone() else {
        return Err(
            "warm fills the shared cache, and none is configured: set REDIS_URL (an \
                    embedded cache lives and dies with this process: warming it warms nothing)"
                .into(),
        );
    };
    let shown = dashcache::url::mask_url(&url);
    // Warm reads the service's database. A SQLite file that does not exist is a DATABASE_URL
    // that names the wrong one (or none), not an empty service: creating it warms nothing.
    if let Some(path) = super::config::sqlite_file(&options.database_url)
        && !path.exists()
    {
        return Err(format!(
            "the database {} does not exist: warm reads the service's users from its database; \
             set DATABASE_URL (or --database-url) to the service's",
            dashcache::url::mask_url(&options.database_url)
        )
        .into());
    }
    let mut settings = settings;
    // A one-shot writer follows no invalidation log: the first reader of a log sweeps the
    // shared cache (it cannot know what the cache holds), and a reader registers itself in the
    // database for the retention's sake. Its fills are fenced like any other, so a change
    // committed while it runs still wins. Nor does it keep an L1 it would drop at exit.
    settings.db_coherent = Some(Vec::new());
    settings.l1_max_entries = 0;
    let serve = ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        database_url: options.database_url.clone(),
        rate_limit_scale: 1,
        cache: CacheChoice::Auto,
        demo: DemoData::No,
        web: WebOptions::default(),
    };
    let state = build_state(&serve, settings).await?;
    let reachable = |when: &'static str| {
        let state = state.clone();
        let shown = shown.clone();
        async move {
            state
                .cache()
                .ping()
                .await
                .map(drop)
                .map_err(|e| -> CliError {
                    format!("the cache at {shown} is unreachable {when} ({e}): nothing is warmed")
                        .into()
                })
        }
    };
    reachable("before warming").await?;
    let users = state.db().user_ids().await?;
    let batch = options.batch.max(1);
    let pace = Duration::from_secs_f64(batch as f64 / f64::from(options.per_second.max(1)));
    let mut lines = Vec::new();
    for set in &options.sets {
        let bar = ProgressBar::new(users.len() as u64).with_style(style(
            "{msg:>8} [{bar:30}] {pos}/{len} keys [{elapsed}, {eta} left]",
        ));
        bar.set_message(format!("{set:?}").to_lowercase());
        let mut total = WarmReport::default();
        for chunk in users.chunks(batch) {
            let started = Instant::now();
            let report = state.warm(*set, chunk).await?;
            total.merge(&report);
            bar.inc(chunk.len() as u64);
            // Paced by what reached the database: a batch all cached already costs no wait.
            if report.loaded + report.not_found + report.failed > 0 {
                tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
            }
        }
        bar.finish_and_clear();
        if total.failed > 0 {
            return Err(format!(
                "{set:?}: {} of {} keys failed to load from the database",
                total.failed, total.keys
            )
            .into());
        }
        lines.push(format!(
            "{set:?}: {}, {} already cached, {} loaded, {} not found, {} failed, in {}",
            super::plural(total.keys as u64, "key"),
            total.cached,
            total.loaded,
            total.not_found,
            total.failed,
            super::plural(total.batches as u64, "batch")
        ));
    }
    // A cache that failed meanwhile took none of it: the fills bypass a failing cache.
    reachable("after warming").await?;
    Ok(lines.join("\n"))
}
