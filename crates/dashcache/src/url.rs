//! Redis URLs: the seeds a `REDIS_URL` names, and masking for display.
//!
//! A leaf: both `redis` (which connects to these URLs and names them in errors) and `settings`
//! (which validates and shows them) use it, and it uses neither.

/// The seed URLs of a `REDIS_URL`, and whether it names a cluster: several comma-separated
/// URLs, or a `redis+cluster://` / `rediss+cluster://` one (returned as `redis://` /
/// `rediss://`). What [`RedisCache::builder`](crate::RedisCache::builder) does with a URL, for
/// tools that open their own connections next to a cache.
///
/// ```
/// use dashcache::url::cluster_seeds;
/// assert_eq!(cluster_seeds("redis://a:1"), (vec!["redis://a:1".to_owned()], false));
/// assert_eq!(
///     cluster_seeds("redis://a:1, redis://b:2"),
///     (vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()], true)
/// );
/// assert_eq!(cluster_seeds("redis+cluster://a:1"), (vec!["redis://a:1".to_owned()], true));
/// // A Sentinel URL is one URL, whatever its commas.
/// assert_eq!(cluster_seeds("redis+sentinel://a:1,b:2/m").1, false);
/// ```
pub fn cluster_seeds(url: &str) -> (Vec<String>, bool) {
    if is_sentinel(url) {
        // Its commas separate sentinels, not cluster nodes.
        return (vec![url.trim().to_owned()], false);
    }
    let seeds: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replacen("redis+cluster://", "redis://", 1).replacen(
                "rediss+cluster://",
                "rediss://",
                1,
            )
        })
        .collect();
    let cluster = seeds.len() > 1 || url.contains("+cluster://");
    (seeds, cluster)
}

/// Whether `url` names a Sentinel set (`redis+sentinel://`, `rediss+sentinel://`).
pub(crate) fn is_sentinel(url: &str) -> bool {
    let url = url.trim_start();
    url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
}

/// `redis://user:secret@host` → `redis://user:***@host`; each URL of a comma-separated list.
///
/// Everything up to the last `@` is the user information, so a password holding `@`, `/`, `?`
/// or `#` (which a URL should percent-encode, but people type) is masked whole; a query
/// holding an `@` gets masked too, which errs on the safe side.
pub fn mask_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(mask_url).collect::<Vec<_>>().join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return mask_query(url);
    };
    let masked = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    };
    mask_query(&masked)
}

/// The query's secrets masked: `?password=…` (PostgreSQL and Redis URLs take one there),
/// `pass`, `pwd`, `sslpassword`, `secret`, `token`.
fn mask_query(url: &str) -> String {
    const SECRET: [&str; 6] = ["password", "pass", "pwd", "sslpassword", "secret", "token"];
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET.iter().any(|s| name.eq_ignore_ascii_case(s)) => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(f) => format!("{head}?{query}#{f}"),
        None => format!("{head}?{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_url("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask_url("redis://pw@h"), "redis://***@h");
        assert_eq!(mask_url("redis://h:1"), "redis://h:1");
        assert_eq!(
            mask_url("redis://:pw@a:1,redis://u:pw2@b:2"),
            "redis://:***@a:1,redis://u:***@b:2"
        );
        assert_eq!(mask_url("rediss://:p@ss@host/1"), "rediss://:***@host/1");
        assert_eq!(
            mask_url("postgres://db/x?user=app&password=s3cret&sslmode=require"),
            "postgres://db/x?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            mask_url("redis://h:1?Password=pw"),
            "redis://h:1?Password=***"
        );
    }

    /// Regression: the authority ended at the first `/`, so a password holding `/`, `?`, `#`
    /// or `@` was shown in part.
    #[test]
    fn passwords_with_url_delimiters_are_masked_whole() {
        for (url, shown) in [
            ("redis://u:se/cret@h:1/0", "redis://u:***@h:1/0"),
            ("redis://:a?b#c@d@h:1", "redis://:***@h:1"),
            (
                "rediss://u:p/w@h:1,redis://:x#y@g:2",
                "rediss://u:***@h:1,redis://:***@g:2",
            ),
        ] {
            let masked = mask_url(url);
            assert_eq!(masked, shown);
            for secret in ["se/cret", "cret", "a?b", "b#c", "p/w", "x#y"] {
                assert!(!masked.contains(secret), "{masked} shows {secret}");
            }
        }
    }
}
