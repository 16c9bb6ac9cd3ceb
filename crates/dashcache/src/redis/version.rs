//! The server version check: what dashcache sends needs Redis 7.0 or later, so an older server
//! is refused when the cache first reaches it, with the reason, rather than failing commands
//! one by one at run time.

use std::sync::atomic::Ordering;

use redis::Value;

use super::RedisCache;
use crate::error::{Error, ErrorKind, Result};

/// The oldest Redis (major, minor) dashcache runs on. Valkey 7.2 and 8 report a Redis version
/// of 7.2.4 and pass.
pub const MIN_REDIS_VERSION: (u32, u32) = (7, 0);

/// What needs [`MIN_REDIS_VERSION`], for the error.
const NEEDED_BY: &str = "PEXPIRE … NX (counters get their TTL once), GETDEL (take, since 6.2) \
                         and CLUSTER SHARDS (cluster routing)";

/// The `redis_version` of an `INFO server` reply, as (major, minor, patch), and its text.
fn version_of(info: &str) -> Option<((u32, u32, u32), String)> {
    let text = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))?
        .trim();
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(((major, minor, patch), text.to_owned()))
}

/// Refuses a server older than [`MIN_REDIS_VERSION`]; `server` names it in the error.
fn check(info: &str, server: &str) -> Result<((u32, u32, u32), String)> {
    let Some((version, text)) = version_of(info) else {
        return Err(Error::new(
            ErrorKind::Misconfigured,
            format!("{server} did not report its version (INFO server has no redis_version)"),
        ));
    };
    let (major, minor) = MIN_REDIS_VERSION;
    if (version.0, version.1) < (major, minor) {
        return Err(Error::new(
            ErrorKind::Misconfigured,
            format!(
                "{server} runs Redis {text}; dashcache needs Redis {major}.{minor} or later for \
                 {NEEDED_BY}. Upgrade the server (or use Valkey 7.2+)."
            ),
        ));
    }
    Ok((version, text))
}

impl RedisCache {
    /// Reads the version of every server this cache talks to (each master of a cluster) and
    /// refuses one older than [`MIN_REDIS_VERSION`]; returns the lowest version. The first
    /// successful [`ping`](crate::Cache::ping) runs it, so
    /// [`connect`](crate::RedisCacheBuilder::connect) refuses an old server at start.
    ///
    /// # Errors
    /// `Misconfigured` naming the server and its version, or the error of reaching it.
    pub async fn check_version(&self) -> Result<String> {
        let nodes = self.nodes().await?;
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let mut lowest: Option<((u32, u32, u32), String)> = None;
        for node in &nodes {
            let reply = self.on_node(node.as_ref(), &info).await?;
            let text = match reply {
                Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Value::VerbatimString { text, .. } => text,
                other => format!("{other:?}"),
            };
            let server = match node {
                Some(node) => format!("{}:{}", node.0, node.1),
                None => self.inner.display_url.clone(),
            };
            let found = check(&text, &server)?;
            if lowest.as_ref().is_none_or(|(v, _)| found.0 < *v) {
                lowest = Some(found);
            }
        }
        self.inner.version_checked.store(true, Ordering::Release);
        Ok(lowest.map(|(_, text)| text).unwrap_or_default())
    }

    /// Whether [`check_version`](Self::check_version) passed once.
    pub(crate) fn version_checked(&self) -> bool {
        self.inner.version_checked.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_old_ones_refused_by_name() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(
            check(info, "s").map(|v| v.1).ok().as_deref(),
            Some("7.0.15")
        );
        let valkey = "redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n";
        assert!(check(valkey, "s").is_ok());
        for old in ["redis_version:6.2.14", "redis_version:5.0.7"] {
            let e = check(old, "cache.internal:6379")
                .err()
                .map(|e| (e.kind(), e.to_string()));
            let (kind, message) = e.unwrap_or_else(|| panic!("{old} passed"));
            assert_eq!(kind, ErrorKind::Misconfigured);
            assert!(message.contains("cache.internal:6379"), "{message}");
            assert!(
                message.contains(old.trim_start_matches("redis_version:")),
                "{message}"
            );
            assert!(message.contains("7.0"), "{message}");
        }
        assert!(check("# Server\r\n", "s").is_err());
        assert!(check("redis_version:garbage", "s").is_err());
    }
}
