//! `dashcache config check`: validates the settings and prints the effective configuration,
//! each value with where it came from, secrets masked.

use std::time::Duration;

use dashcache::health::probe;
use dashcache::{Cache, CacheSettings};

use super::CliError;
use crate::config::{Flags, ServiceConfig};

/// Variables read outside [`CacheSettings`] and [`ServiceConfig`], shown as they are.
const OTHER_VARIABLES: &[&str] = &["DASHCACHE_LOG_FORMAT", "RUST_LOG"];

/// Prints the effective configuration, each value with where it came from (environment, file,
/// flag, default), secrets masked; every bad variable is reported at once, by the same parsers
/// `serve` uses. With `ping`, whether the cache and the database answer (the configuration is
/// printed first either way). It writes nothing: the database is not migrated, seeded, or (a
/// SQLite file) created.
///
/// # Errors
/// The settings' problems, or (with `ping`) a cache or database that does not answer.
pub async fn check(database_url: Option<String>, ping: bool) -> Result<String, CliError> {
    let cache = CacheSettings::from_env();
    let service = ServiceConfig::read(&Flags {
        database_url,
        ..Flags::default()
    });
    let (settings, service) = match (cache, service) {
        (Ok(settings), Ok(service)) => (settings, service),
        (cache, service) => {
            let problems: Vec<String> = [
                cache.err().map(|e| e.to_string()),
                service.err().map(|e| e.to_string()),
            ]
            .into_iter()
            .flatten()
            .collect();
            return Err(problems.join("\n").into());
        }
    };
    let mut out = String::from("configuration OK\n");
    out.push_str(&with_sources(&settings.to_string()));
    out.push('\n');
    out.push_str(&service.lines().join("\n"));
    for var in OTHER_VARIABLES {
        let value = std::env::var(var).unwrap_or_else(|_| "(unset)".to_owned());
        out.push_str(&format!("\n{var}={value}"));
    }
    if ping {
        let shown = dashcache::url::mask_url(&service.database_url.value);
        let cache: std::sync::Arc<dyn Cache> = match settings.redis_cache_builder() {
            Some(builder) => std::sync::Arc::new(builder.build()?),
            None => std::sync::Arc::new(settings.memory_cache_builder().build()),
        };
        let report = probe(cache.as_ref(), Duration::from_millis(50)).await;
        out.push_str(&format!("\ncache: {}", serde_json::to_string(&report)?));
        let answered = match crate::db::Db::inspect(&service.database_url.value).await {
            Ok(db) => db.ping().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answered {
            Ok(rtt) => out.push_str(&format!(
                "\ndatabase: up at {shown} ({:.2} ms)",
                rtt.as_secs_f64() * 1e3
            )),
            Err(e) => {
                return Err(format!("{out}\nthe database at {shown} does not answer: {e}").into());
            }
        }
        if !report.is_available() {
            return Err(format!("{out}\nthe cache does not answer").into());
        }
    }
    Ok(out)
}

/// `VARIABLE=value` lines of the cache settings, each with where its value came from: the
/// environment, the settings file (`CACHE_CONFIG_FILE`), or the default.
fn with_sources(lines: &str) -> String {
    let file = std::env::var(dashcache::settings::CONFIG_FILE_VAR)
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.parse::<toml::Table>().ok());
    lines
        .lines()
        .map(|line| {
            let var = line.split('=').next().unwrap_or_default();
            let source = if std::env::var_os(var).is_some() {
                "environment"
            } else if file
                .as_ref()
                .is_some_and(|t| t.keys().any(|k| k.eq_ignore_ascii_case(var)))
            {
                "file"
            } else {
                "default"
            };
            format!("{line} ({source})")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
