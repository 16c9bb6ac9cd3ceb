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
        let url = &service.database_url.value;
        match sqlite_file(url) {
            // Not an error: serve creates it (and this command writes nothing).
            Some(path) if !path.exists() => out.push_str(&format!(
                "\ndatabase: {shown} does not exist yet: `dashcache serve` creates it"
            )),
            _ => match crate::db::Db::inspect(url).await {
                Ok(db) => match db.ping().await {
                    Ok(rtt) => out.push_str(&format!(
                        "\ndatabase: up at {shown} ({:.2} ms)",
                        rtt.as_secs_f64() * 1e3
                    )),
                    Err(e) => {
                        return Err(
                            format!("{out}\nthe database at {shown} does not answer: {e}").into(),
                        );
                    }
                },
                // It names the database and the setting.
                Err(e) => return Err(format!("{out}\n{e}").into()),
            },
        }
        if !report.is_available() {
            let cache = settings
                .redis_url
                .as_deref()
                .map_or_else(|| "the embedded cache".to_owned(), dashcache::url::mask_url);
            return Err(format!(
                "{out}\nthe cache at {cache} (REDIS_URL) does not answer: {}",
                report.detail.as_deref().unwrap_or("no detail")
            )
            .into());
        }
    }
    Ok(out)
}

/// The file a `sqlite:` URL names (`None` for other databases and in-memory SQLite).
pub(crate) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
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
