//! Tags: values written with tags, invalidated by tag in one write, whatever the number of
//! values under the tag.
//!
//! Each tag has a *version*, a random integer in its own key (`<tag prefix>:_tag:{<tag>}`, so
//! on a Cluster each tag lives on the slot of its name). A tagged value stores the versions
//! its tags had before its load began; a lookup reads the value and the current versions in
//! one `get_many`, and serves the value only when every version still matches. Invalidating a
//! tag replaces its version: O(1), and every value under it (and every fill that began before)
//! stops being served at once. So tagged fills are fenced by construction: a fill that read
//! the old version may still be written, but is never served.
//!
//! A tag's version lives for the tag TTL (1 day by default) from its last change; when it
//! expires, the values under it are reloaded once (a missing version never matches, so an
//! expired tag cannot bring an invalidated value back).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::envelope::MAX_TAGS;
use super::fence::new_generation;
use super::{CacheAside, Inner};
use crate::cache::{Condition, Ttl, Write};
use crate::error::Error;

/// The default life of a tag's version after its last change.
pub(super) const DEFAULT_TAG_TTL: Duration = Duration::from_secs(24 * 3600);

/// The key of `tag`'s version under `prefix`. The tag is the whole hash tag, with `{`, `}`
/// and `%` percent-encoded so it cannot end the hash tag early.
///
/// # Errors
/// `InvalidArgument` for an empty tag.
pub(super) fn tag_key(prefix: &str, tag: &str) -> crate::Result<String> {
    if tag.is_empty() {
        return Err(Error::invalid_argument("a tag must not be empty"));
    }
    let mut out = String::with_capacity(prefix.len() + tag.len() + 8);
    out.push_str(prefix);
    out.push_str(":_tag:{");
    for c in tag.chars() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out.push('}');
    Ok(out)
}

impl CacheAside {
    /// The version keys of `tags`, in order.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty tag or more than 32 tags.
    pub(super) fn tag_keys(&self, tags: &[&str]) -> crate::Result<Arc<[String]>> {
        if tags.len() > MAX_TAGS {
            return Err(Error::invalid_argument("a value carries at most 32 tags"));
        }
        tags.iter()
            .map(|tag| tag_key(&self.inner.tag_prefix, tag))
            .collect()
    }

    /// Invalidates every value written with `tag`, on every instance, in one write whatever
    /// their number; fills whose load began before are never served either.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty tag; the cache's error otherwise (the values stay
    /// served until their TTL, which the caller may want to log or retry).
    pub async fn invalidate_tag(&self, tag: &str) -> crate::Result<()> {
        let key = tag_key(&self.inner.tag_prefix, tag)?;
        // Lookups from now on must not join a load that began before.
        self.inner
            .flights()
            .retain(|_, flight| !flight.tags.contains(&key));
        let result = self
            .inner
            .cache
            .write_if(
                &[],
                &[Write::SetInt(
                    &key,
                    new_generation(),
                    Ttl::from(self.inner.tag_ttl),
                )],
            )
            .await
            .map(|_| ());
        if let Err(e) = &result {
            self.inner.cache_failed(&key, e, false);
        }
        result
    }
}

impl Inner {
    /// The versions of `tag_keys` as read (`found`, in the same order), creating those that do
    /// not exist yet. `None` when one cannot be read or created: the value is then not
    /// written (it could not be checked).
    pub(super) async fn tag_versions(
        &self,
        tag_keys: &[String],
        found: &[Option<Bytes>],
    ) -> Option<Vec<i64>> {
        let mut versions = Vec::with_capacity(tag_keys.len());
        for (key, stored) in tag_keys.iter().zip(found) {
            let version = match stored.as_ref().map(|b| parse_version(b)) {
                Some(parsed) => parsed?,
                None => {
                    let fresh = new_generation();
                    let created = Write::SetInt(key, fresh, Ttl::from(self.tag_ttl));
                    match self
                        .cache
                        .write_if(&[Condition::Absent(key)], &[created])
                        .await
                    {
                        Ok(true) => fresh,
                        // Another process created it first: read its version.
                        Ok(false) => parse_version(&self.cache.get(key).await.ok()??)?,
                        Err(e) => {
                            self.cache_failed(key, &e, false);
                            return None;
                        }
                    }
                }
            };
            versions.push(version);
        }
        Some(versions)
    }
}

/// The current versions as read, `None` for any missing or unreadable one (which matches no
/// stored value).
pub(super) fn current_versions(found: &[Option<Bytes>]) -> Option<Vec<i64>> {
    found
        .iter()
        .map(|stored| stored.as_ref().and_then(|b| parse_version(b)))
        .collect()
}

fn parse_version(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_keep_the_tag_inside_one_hash_tag() {
        assert_eq!(
            tag_key("app", "user:42").ok(),
            Some("app:_tag:{user:42}".to_owned())
        );
        assert_eq!(
            tag_key("app", "a}b{c%").ok(),
            Some("app:_tag:{a%7Db%7Bc%25}".to_owned())
        );
        assert!(tag_key("app", "").is_err());
    }

    #[test]
    fn a_missing_version_matches_nothing() {
        let found = [Some(Bytes::from_static(b"5")), None];
        assert_eq!(current_versions(&found), None);
        assert_eq!(current_versions(&found[..1]), Some(vec![5]));
        assert_eq!(current_versions(&[Some(Bytes::from_static(b"x"))]), None);
    }
}
