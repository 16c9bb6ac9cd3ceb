//! `dashcache keys delete-pattern` and `dashcache keys stats`, on the configured Redis.

use std::time::Duration;

use dashcache::{CacheSettings, RedisCache, Sweep, SweepProgress};
use indicatif::ProgressBar;

use super::{CliError, plural, style};
use crate::state::NAMESPACES;

fn redis(settings: &CacheSettings) -> Result<RedisCache, CliError> {
    let builder = settings
        .redis_cache_builder()
        .ok_or("REDIS_URL (or --redis-url) is not set: the embedded cache lives inside each process and has no keys to manage from here")?;
    // A sweep step over a large keyspace can take longer than a request should, and an
    // operator watching the progress stops the whole when they want.
    Ok(builder
        .timeout(Duration::from_secs(5))
        .sweep_timeout(None)
        .build()?)
}

/// Deletes (or, `dry_run`, counts) the keys matching `pattern`, with a progress spinner;
/// a one-line report.
///
/// # Errors
/// No Redis configured, an empty pattern, or transport errors.
pub async fn delete_pattern(
    settings: &CacheSettings,
    pattern: &str,
    dry_run: bool,
) -> Result<String, CliError> {
    let cache = redis(settings)?;
    let total = cache.key_count().await?;
    let bar = ProgressBar::new_spinner().with_style(style("{spinner} {msg} [{elapsed}]"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let mode = if dry_run { Sweep::Count } else { Sweep::Delete };
    let mut report = |p: SweepProgress| {
        bar.set_message(format!(
            "{} over {}: {} matched, {} deleted",
            plural(p.batches, "SCAN step"),
            plural(total, "key"),
            p.matched,
            p.deleted
        ));
    };
    let n = cache.sweep(pattern, mode, &mut report).await?;
    bar.finish_and_clear();
    Ok(if dry_run {
        format!(
            "{} {pattern:?} (dry run: nothing deleted)",
            match n {
                1 => "1 key matches".to_owned(),
                n => format!("{n} keys match"),
            }
        )
    } else {
        format!("deleted {} matching {pattern:?}", plural(n, "key"))
    })
}

/// Key counts per namespace under the configured prefix, and the server's totals.
///
/// # Errors
/// No Redis configured, or transport errors.
pub async fn stats(settings: &CacheSettings) -> Result<String, CliError> {
    let cache = redis(settings)?;
    let keys = crate::state::keys_for(settings)?;
    let server_total = cache.key_count().await?;
    let bar = ProgressBar::new(NAMESPACES.len() as u64 + 1)
        .with_style(style("{bar:30} {pos}/{len} {msg}"));
    let mut lines = vec![format!(
        "keys under {:?} (of {} on the server)",
        format!("{}:", keys.prefix()),
        plural(server_total, "key")
    )];
    lines.push(format!("{:<14} {:>10}", "namespace", "keys"));
    let mut counted = 0;
    for ns in NAMESPACES {
        bar.set_message(ns);
        let n = cache
            .sweep(&keys.pattern([ns])?, Sweep::Count, &mut |_| {})
            .await?;
        counted += n;
        lines.push(format!("{ns:<14} {n:>10}"));
        bar.inc(1);
    }
    // Only this service's keys: another application's keys on a shared server are not ours
    // to count (or to worry about).
    bar.set_message("all");
    let under_prefix = cache
        .sweep(
            &format!("{}:*", dashcache::glob::escape(keys.prefix())),
            Sweep::Count,
            &mut |_| {},
        )
        .await?;
    bar.finish_and_clear();
    lines.push(format!(
        "{:<14} {:>10}",
        "other",
        under_prefix.saturating_sub(counted)
    ));
    lines.push(format!("{:<14} {:>10}", "total", under_prefix));
    Ok(lines.join("\n"))
}
