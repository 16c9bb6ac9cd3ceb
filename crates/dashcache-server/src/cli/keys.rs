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

/// An operation's failure, naming the server (masked) and where its URL came from.
fn failed_at(cache: &RedisCache, e: dashcache::Error) -> CliError {
    format!(
        "the Redis at {} (REDIS_URL or --redis-url): {e}",
        cache.url()
    )
    .into()
}

/// Deletes (or, `dry_run`, counts by namespace) the keys matching `pattern`, with a progress
/// spinner; the report. The pattern must stay inside the configured prefix (it starts with
/// `<prefix>:`) unless `all_prefixes`: the Redis may hold other applications' keys.
///
/// # Errors
/// No Redis configured, a pattern outside the prefix, an empty pattern, or transport errors.
pub async fn delete_pattern(
    settings: &CacheSettings,
    pattern: &str,
    dry_run: bool,
    all_prefixes: bool,
) -> Result<String, CliError> {
    let keys = crate::state::keys_for(settings)?;
    let inside = format!("{}:", dashcache::glob::escape(keys.prefix()));
    if !all_prefixes && !pattern.starts_with(&inside) {
        return Err(format!(
            "{pattern:?} is not confined to this service's prefix: start it with {inside:?} (the \
             prefix is CACHE_KEY_PREFIX), or add --all-prefixes to match every application's keys \
             on this Redis"
        )
        .into());
    }
    let cache = redis(settings)?;
    let total = cache.key_count().await.map_err(|e| failed_at(&cache, e))?;
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
    // What a dry run would delete, by namespace (by first segment outside the prefix).
    let mut by_group: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let prefix = format!("{}:", keys.prefix());
    let mut inspect = |batch: &[Vec<u8>]| {
        if !dry_run {
            return;
        }
        for key in batch {
            let key = String::from_utf8_lossy(key);
            let group = match key.strip_prefix(&prefix) {
                Some(_) => format!("{prefix}{}", keys.namespace_of(&key)),
                None => format!(
                    "{} (another prefix)",
                    key.split(':').next().unwrap_or_default()
                ),
            };
            *by_group.entry(group).or_default() += 1;
        }
    };
    let n = cache
        .sweep_inspecting(pattern, mode, &mut report, &mut inspect)
        .await
        .map_err(|e| failed_at(&cache, e))?;
    bar.finish_and_clear();
    if !dry_run {
        return Ok(format!("deleted {} matching {pattern:?}", plural(n, "key")));
    }
    let mut lines = vec![format!(
        "{} {pattern:?} (dry run: nothing deleted)",
        match n {
            1 => "1 key matches".to_owned(),
            n => format!("{n} keys match"),
        }
    )];
    for (group, count) in &by_group {
        lines.push(format!("  {group:<32} {count:>10}"));
    }
    Ok(lines.join("\n"))
}

/// Key counts per namespace under the configured prefix, and the server's totals.
///
/// # Errors
/// No Redis configured, or transport errors.
pub async fn stats(settings: &CacheSettings) -> Result<String, CliError> {
    let cache = redis(settings)?;
    let keys = crate::state::keys_for(settings)?;
    let server_total = cache.key_count().await.map_err(|e| failed_at(&cache, e))?;
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
            .await
            .map_err(|e| failed_at(&cache, e))?;
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
        .await
        .map_err(|e| failed_at(&cache, e))?;
    bar.finish_and_clear();
    lines.push(format!(
        "{:<14} {:>10}",
        "other",
        under_prefix.saturating_sub(counted)
    ));
    lines.push(format!("{:<14} {:>10}", "total", under_prefix));
    Ok(lines.join("\n"))
}
