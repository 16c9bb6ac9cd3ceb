//! Validation of `REDIS_URL` (the URL helpers themselves are in the leaf `crate::url`).

use crate::url::{cluster_seeds, is_sentinel};

pub(crate) fn check_url(url: &str) -> Result<(), String> {
    const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
    let allowed = "a URL such as redis://[user:password@]host:port[/db] (rediss:// for TLS), a \
                   cluster's: redis+cluster://host:port or comma-separated seed URLs, or a \
                   Sentinel set's: redis+sentinel://host:port[,host:port…]/<master-name>[/db]"
        .to_owned();
    if is_sentinel(url) {
        #[cfg(feature = "redis")]
        if let Some(Err(e)) = crate::redis::parse_sentinel_url(url) {
            return Err(format!("{allowed} ({e})"));
        }
        return Ok(());
    }
    let (seeds, cluster) = cluster_seeds(url);
    if seeds.is_empty() {
        return Err(allowed);
    }
    for seed in &seeds {
        if !SCHEMES.iter().any(|s| seed.starts_with(s)) {
            return Err(allowed);
        }
        if cluster && !(seed.starts_with("redis://") || seed.starts_with("rediss://")) {
            return Err(format!("{allowed} (a cluster is reached over TCP)"));
        }
        #[cfg(feature = "redis")]
        {
            use redis::IntoConnectionInfo;
            seed.as_str()
                .into_connection_info()
                .map_err(|e| format!("{allowed} ({e})"))?;
        }
    }
    Ok(())
}
