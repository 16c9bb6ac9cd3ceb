//! `dashcache config check`: validates the settings and prints the effective configuration,
//! secrets masked.

use std::time::Duration;

use dashcache::health::probe;
use dashcache::{Cache, CacheSettings};

use super::CliError;

/// The service's own variables (beyond the cache's and `DATABASE_URL`), and whether each is a
/// secret to mask.
pub const SERVICE_VARIABLES: &[(&str, bool)] = &[
    ("DASHCACHE_DEMO", false),
    ("DASHCACHE_SECURE_COOKIES", false),
    ("DASHCACHE_OPS_TOKEN", true),
    ("DASHCACHE_UPSTREAM_URL", false),
    ("DASHCACHE_ACCESS_LOG", false),
    ("DASHCACHE_LOG_FORMAT", false),
    ("RUST_LOG", false),
];

/// Prints the effective configuration (and, with `ping`, whether the cache and database
/// answer); every bad variable is reported at once. It writes nothing: the database is not
/// migrated, seeded, or (a SQLite file) created.
///
/// # Errors
/// The settings' problems, or (with `ping`) a cache or database that does not answer.
pub async fn check(database_url: &str, ping: bool) -> Result<String, CliError> {
    let settings = CacheSettings::from_env()?;
    let mut out = String::from("configuration OK\n");
    out.push_str(&settings.to_string());
    out.push_str(&format!("\nDATABASE_URL={}", mask(database_url)));
    for (var, secret) in SERVICE_VARIABLES {
        let value = match std::env::var(var) {
            Ok(_) if *secret => "***".to_owned(),
            Ok(value) => value,
            Err(_) => "(unset)".to_owned(),
        };
        out.push_str(&format!("\n{var}={value}"));
    }
    if ping {
        let cache: std::sync::Arc<dyn Cache> = match settings.redis_cache_builder() {
            Some(builder) => std::sync::Arc::new(builder.build()?),
            None => std::sync::Arc::new(settings.memory_cache_builder().build()),
        };
        let report = probe(cache.as_ref(), Duration::from_millis(50)).await;
        out.push_str(&format!("\ncache: {}", serde_json::to_string(&report)?));
        let db = crate::db::Db::inspect(database_url).await?;
        let rtt = db.ping().await?;
        out.push_str(&format!(
            "\ndatabase: up ({:.2} ms)",
            rtt.as_secs_f64() * 1e3
        ));
        if !report.is_available() {
            return Err(format!("{out}\nthe cache does not answer").into());
        }
    }
    Ok(out)
}

/// A database URL with its password masked.
fn mask(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        // The last `@`: a password may hold one.
        rest.rsplit_once('@')
            .map(|(auth, host)| (scheme, auth, host))
    }) {
        Some((scheme, auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(
            super::mask("postgres://app:s3cret@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            super::mask("postgres://app:p@ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            super::mask("sqlite://dashcache.db?mode=rwc"),
            "sqlite://dashcache.db?mode=rwc"
        );
    }
}
