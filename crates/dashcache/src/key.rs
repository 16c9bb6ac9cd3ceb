//! [`Keys`]: the one place every cache key is built.
//!
//! A key is `prefix:namespace:segment[:segment…]`. The prefix and namespaces are declared once
//! (so metrics labels are bounded); segments are data, usually ids from requests, and are
//! treated as hostile:
//!
//! - a segment must be non-empty, at most [`KeysBuilder::max_segment_bytes`] long, and free of
//!   control characters and whitespace — otherwise [`ErrorKind::InvalidKey`];
//! - the separator `:`, the glob metacharacters `* ? [ ] \`, the hash-tag braces `{ }` and the
//!   escape character `%` are percent-encoded (`:` → `%3A`).
//!
//! Percent-encoding rather than backslash-escaping is deliberate: an encoded segment contains no
//! glob metacharacter at all, so the same text is literal both in a key and in a pattern, and
//! the encoding is injective, so two different ids never produce the same key.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};

/// The separator between key parts.
pub const SEPARATOR: char = ':';

/// The namespace reported for keys outside every declared namespace.
pub const OTHER_NAMESPACE: &str = "other";

/// Builds every cache key of a service under one prefix and a declared set of namespaces.
///
/// Cheap to clone: clones share one set of declarations.
///
/// ```
/// use dashcache::Keys;
///
/// let keys = Keys::new("dashtam", ["user", "authz"])?;
/// assert_eq!(keys.key(["user", "42"])?, "dashtam:user:42");
///
/// // An id is data, never pattern syntax: this pattern can only match user "4*"'s keys.
/// let pattern = keys.pattern(["authz", "4*"])?;
/// assert_eq!(pattern, "dashtam:authz:4%2A:*");
/// assert!(dashcache::glob::matches(&pattern, &keys.key(["authz", "4*", "read"])?));
/// assert!(!dashcache::glob::matches(&pattern, &keys.key(["authz", "42", "read"])?));
/// # Ok::<(), dashcache::Error>(())
/// ```
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    namespaces: Vec<String>,
    max_segment_bytes: usize,
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The opaque-id secret stays out of logs.
        f.debug_struct("Keys")
            .field("prefix", &self.inner.prefix)
            .field("namespaces", &self.inner.namespaces)
            .field("max_segment_bytes", &self.inner.max_segment_bytes)
            .finish_non_exhaustive()
    }
}

/// Configures [`Keys`]; see [`Keys::builder`].
#[derive(Clone)]
#[must_use]
pub struct KeysBuilder {
    prefix: String,
    namespaces: Vec<String>,
    max_segment_bytes: usize,
    secret: Option<Vec<u8>>,
}

impl fmt::Debug for KeysBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysBuilder")
            .field("prefix", &self.prefix)
            .field("namespaces", &self.namespaces)
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl KeysBuilder {
    /// Declares one namespace. Names are ASCII letters, digits, `_`, `-` and `.`.
    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.namespaces.push(name.into());
        self
    }

    /// Declares several namespaces.
    pub fn namespaces<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.namespaces.extend(names.into_iter().map(Into::into));
        self
    }

    /// The longest segment accepted, in bytes before escaping (default 256).
    ///
    /// ```
    /// let keys = dashcache::Keys::builder("app").namespace("n").max_segment_bytes(8).build()?;
    /// assert!(keys.key(["n", "12345678"]).is_ok());
    /// assert!(keys.key(["n", "123456789"]).is_err());
    /// # Ok::<(), dashcache::Error>(())
    /// ```
    pub fn max_segment_bytes(mut self, bytes: usize) -> Self {
        self.max_segment_bytes = bytes;
        self
    }

    /// The secret of [`Keys::opaque`]'s keyed hash. Without one, the hash is keyed by the prefix
    /// alone: stable, but anyone who knows the prefix can test guesses (a list of e-mail
    /// addresses, say) against cached keys. Set a secret in production.
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Validates the declarations.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a prefix or namespace with characters outside the
    /// allowed set, an empty or duplicate namespace, or a zero segment limit.
    pub fn build(self) -> Result<Keys> {
        if !self
            .prefix
            .chars()
            .all(|c| is_name_char(c) || c == SEPARATOR)
        {
            return Err(Error::invalid_argument(format!(
                "the key prefix {:?} may hold only ASCII letters, digits, `_`, `-`, `.` and `:`",
                self.prefix
            )));
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if ns.is_empty() || !ns.chars().all(is_name_char) {
                return Err(Error::invalid_argument(format!(
                    "the namespace {ns:?} must be non-empty ASCII letters, digits, `_`, `-` or `.`"
                )));
            }
            if ns == OTHER_NAMESPACE || self.namespaces[..i].contains(ns) {
                return Err(Error::invalid_argument(format!(
                    "the namespace {ns:?} is reserved or declared twice"
                )));
            }
        }
        if self.max_segment_bytes == 0 {
            return Err(Error::invalid_argument(
                "max_segment_bytes must be positive",
            ));
        }
        let secret = match self.secret {
            Some(secret) => secret,
            None => format!("dashcache-opaque:{}", self.prefix).into_bytes(),
        };
        // HMAC takes keys of any length; the error branch is unreachable but handled.
        let mac = Hmac::<Sha256>::new_from_slice(&secret)
            .map_err(|_| Error::invalid_argument("the opaque-id secret is not usable"))?;
        Ok(Keys {
            inner: Arc::new(Inner {
                prefix: self.prefix,
                namespaces: self.namespaces,
                max_segment_bytes: self.max_segment_bytes,
                mac,
            }),
        })
    }
}

impl Keys {
    /// Starts declaring the keys under `prefix` (may be empty: then keys start with the
    /// namespace).
    pub fn builder(prefix: impl Into<String>) -> KeysBuilder {
        KeysBuilder {
            prefix: prefix.into(),
            namespaces: Vec::new(),
            max_segment_bytes: 256,
            secret: None,
        }
    }

    /// Keys under `prefix` with the given namespaces and default settings.
    ///
    /// # Errors
    /// As [`KeysBuilder::build`].
    pub fn new<I>(prefix: impl Into<String>, namespaces: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::builder(prefix).namespaces(namespaces).build()
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The declared namespaces, in declaration order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.inner.namespaces.iter().map(String::as_str)
    }

    /// The key for `parts`: a declared namespace, then zero or more segments.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for an undeclared namespace or a bad segment.
    pub fn key<I>(&self, parts: I) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.build_key(parts, false)
    }

    /// The glob matching every key under the literal `parts` (a declared namespace, then zero
    /// or more segments): `prefix:namespace:segment…:*`.
    ///
    /// Every part is literal, so the pattern can match only keys that begin with exactly these
    /// parts, whatever the segments contain.
    ///
    /// # Errors
    /// As [`Keys::key`].
    pub fn pattern<I>(&self, parts: I) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.build_key(parts, true)
    }

    /// What every key of the declared namespace `namespace` starts with (`prefix:namespace:`):
    /// what a [`HybridCache`](crate::hybrid::HybridCache) tracks.
    ///
    /// ```
    /// let keys = dashcache::Keys::new("app", ["user"])?;
    /// assert_eq!(keys.namespace_prefix("user")?, "app:user:");
    /// assert!(keys.namespace_prefix("nope").is_err());
    /// # Ok::<(), dashcache::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidKey` for a namespace that was not declared.
    pub fn namespace_prefix(&self, namespace: &str) -> Result<String> {
        let pattern = self.pattern([namespace])?;
        Ok(pattern.trim_end_matches('*').to_owned())
    }

    /// A stable keyed hash of `value` (HMAC-SHA-256, 128 bits, URL-safe base64), for values
    /// that must not appear in keys: e-mail addresses and other personal data.
    ///
    /// The result is a valid segment. Equal inputs give equal outputs for the same secret.
    pub fn opaque(&self, value: &str) -> String {
        let mut mac = self.inner.mac.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    /// The declared namespace `key` belongs to, or [`OTHER_NAMESPACE`]; for metrics labels,
    /// which must stay a bounded set whatever keys pass by.
    pub fn namespace_of<'a>(&'a self, key: &str) -> &'a str {
        self.namespace_index(key)
            .map_or(OTHER_NAMESPACE, |i| self.inner.namespaces[i].as_str())
    }

    /// The position, in declaration order, of the namespace `key` belongs to; `None` for keys
    /// outside every declared namespace.
    pub fn namespace_index(&self, key: &str) -> Option<usize> {
        let rest = if self.inner.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(self.inner.prefix.as_str())?
                .strip_prefix(SEPARATOR)?
        };
        let name = rest.find(SEPARATOR).map_or(rest, |end| &rest[..end]);
        self.inner.namespaces.iter().position(|ns| ns == name)
    }

    /// The key for `parts` (a declared namespace, then segments) with a Redis Cluster hash tag
    /// right after the namespace: `prefix:namespace:{tag}:segment…`. Keys with the same tag land
    /// in the same hash slot, so one atomic step (a script, a `MULTI`) can span them on a
    /// cluster. The tag is escaped like a segment, so it can never close early or open another
    /// tag; and since segments escape braces, it is the key's only tag.
    ///
    /// ```
    /// let keys = dashcache::Keys::new("app", ["session"])?;
    /// let index = keys.tagged_key("u1", ["session", "user", "u1"])?;
    /// assert_eq!(index, "app:session:{u1}:user:u1");
    /// # Ok::<(), dashcache::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Keys::key`], for the tag too.
    pub fn tagged_key<I>(&self, tag: &str, parts: I) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.build(parts, Some(tag), false)
    }

    fn build_key<I>(&self, parts: I, pattern: bool) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.build(parts, None, pattern)
    }

    fn build<I>(&self, parts: I, tag: Option<&str>, pattern: bool) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut parts = parts.into_iter();
        let Some(ns) = parts.next() else {
            return Err(Error::new(ErrorKind::InvalidKey, "a key needs a namespace"));
        };
        let ns = ns.as_ref();
        if !self.inner.namespaces.iter().any(|n| n == ns) {
            return Err(Error::invalid_key(ns, "the namespace is not declared"));
        }
        let mut key = String::with_capacity(self.inner.prefix.len() + ns.len() + 48);
        if !self.inner.prefix.is_empty() {
            key.push_str(&self.inner.prefix);
            key.push(SEPARATOR);
        }
        key.push_str(ns);
        if let Some(tag) = tag {
            key.push(SEPARATOR);
            key.push('{');
            self.push_segment(&mut key, tag)?;
            key.push('}');
        }
        for segment in parts {
            key.push(SEPARATOR);
            self.push_segment(&mut key, segment.as_ref())?;
        }
        if pattern {
            key.push(SEPARATOR);
            key.push('*');
        }
        Ok(key)
    }

    fn push_segment(&self, out: &mut String, segment: &str) -> Result<()> {
        if segment.is_empty() {
            return Err(Error::invalid_key(
                segment,
                "a key segment must not be empty",
            ));
        }
        if segment.len() > self.inner.max_segment_bytes {
            return Err(Error::invalid_key(
                segment,
                "the key segment is longer than the limit",
            ));
        }
        if segment.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::invalid_key(
                segment,
                "a key segment must not contain control characters or whitespace",
            ));
        }
        for c in segment.chars() {
            match c {
                ':' | '*' | '?' | '[' | ']' | '\\' | '{' | '}' | '%' => {
                    // All of these are ASCII: one byte, two hex digits. Writing to a String
                    // cannot fail.
                    let _ = write!(out, "%{:02X}", u32::from(c));
                }
                _ => out.push(c),
            }
        }
        Ok(())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        match Keys::new("app", ["user", "authz", "session"]) {
            Ok(keys) => keys,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn builds_prefixed_keys() {
        let k = keys();
        assert_eq!(k.key(["user", "42"]).ok().as_deref(), Some("app:user:42"));
        assert_eq!(k.key(["user"]).ok().as_deref(), Some("app:user"));
        assert_eq!(
            k.key(["authz", "7", "accounts", "read"]).ok().as_deref(),
            Some("app:authz:7:accounts:read")
        );
        let bare = Keys::new("", ["user"]).ok();
        assert_eq!(
            bare.and_then(|b| b.key(["user", "1"]).ok()).as_deref(),
            Some("user:1")
        );
    }

    #[test]
    fn escapes_separator_globs_braces_and_percent() {
        let k = keys();
        assert_eq!(
            k.key(["user", "a:b*c?[d]\\e{f}%g"]).ok().as_deref(),
            Some("app:user:a%3Ab%2Ac%3F%5Bd%5D%5Ce%7Bf%7D%25g")
        );
        assert_eq!(
            k.key(["user", "josé"]).ok().as_deref(),
            Some("app:user:josé")
        );
    }

    #[test]
    fn rejects_bad_segments_and_namespaces() {
        let k = keys();
        for bad in ["", "a b", "a\tb", "a\nb", "\u{3000}"] {
            let kind = k.key(["user", bad]).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::InvalidKey), "{bad:?}");
        }
        let long = "x".repeat(257);
        assert!(k.key(["user", long.as_str()]).is_err());
        assert!(k.key(["nope", "1"]).is_err());
        assert!(k.key(Vec::<String>::new()).is_err());
    }

    #[test]
    fn rejects_bad_declarations() {
        assert!(Keys::new("a*b", ["user"]).is_err());
        assert!(Keys::new("app", ["us er"]).is_err());
        assert!(Keys::new("app", ["user", "user"]).is_err());
        assert!(Keys::new("app", ["other"]).is_err());
        assert!(Keys::new("app", [""]).is_err());
        assert!(Keys::new("app:v2", ["user"]).is_ok());
    }

    #[test]
    fn patterns_end_in_the_builders_own_wildcard() {
        let k = keys();
        assert_eq!(
            k.pattern(["authz", "7"]).ok().as_deref(),
            Some("app:authz:7:*")
        );
        assert_eq!(k.pattern(["authz"]).ok().as_deref(), Some("app:authz:*"));
        assert_eq!(
            k.pattern(["authz", "*"]).ok().as_deref(),
            Some("app:authz:%2A:*")
        );
    }

    #[test]
    fn opaque_is_stable_keyed_and_a_valid_segment() {
        let a = Keys::builder("app")
            .namespace("user")
            .secret("s1")
            .build()
            .ok();
        let b = Keys::builder("app")
            .namespace("user")
            .secret("s2")
            .build()
            .ok();
        let (Some(a), Some(b)) = (a, b) else {
            unreachable!()
        };
        let x = a.opaque("john@example.com");
        assert_eq!(x, a.opaque("john@example.com"));
        assert_ne!(x, a.opaque("jane@example.com"));
        assert_ne!(x, b.opaque("john@example.com"));
        assert_eq!(x.len(), 22);
        assert!(!x.contains('@'));
        assert_eq!(
            a.key(["user", x.as_str()]).ok(),
            Some(format!("app:user:{x}"))
        );
    }

    #[test]
    fn namespace_of_is_bounded() {
        let k = keys();
        assert_eq!(k.namespace_of("app:user:1"), "user");
        assert_eq!(k.namespace_of("app:session"), "session");
        assert_eq!(k.namespace_of("app:unknown:1"), OTHER_NAMESPACE);
        assert_eq!(k.namespace_of("other:user:1"), OTHER_NAMESPACE);
        assert_eq!(k.namespace_of("appuser:1"), OTHER_NAMESPACE);
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = Keys::builder("app").secret("hunter2").build().ok();
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
