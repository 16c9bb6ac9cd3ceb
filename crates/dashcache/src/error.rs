//! The one error type of every cache operation.
//!
//! [`Error`] is opaque: callers branch on [`Error::kind`] (or the stable [`Error::code`] string in
//! logs and metrics), never on the message. The backend's own error, when there is one, is kept
//! as [`std::error::Error::source`].

use std::borrow::Cow;
use std::fmt;

/// The result of every cache operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached: connection refused, dropped, or not yet established.
    Unavailable,
    /// The operation did not finish within its deadline. Its effect is unknown: a write may
    /// still be applied after the deadline passed.
    Timeout,
    /// The circuit breaker is open after repeated failures; the backend was not contacted.
    CircuitOpen,
    /// The key is empty, too long, or contains control characters.
    InvalidKey,
    /// An argument is out of range: a zero TTL, an empty pattern, an overflowing increment, a
    /// malformed URL or configuration.
    InvalidArgument,
    /// The key holds a value of another type (a set where a string is expected, a non-integer
    /// where a counter is expected).
    WrongType,
    /// The value is larger than the configured limit.
    TooLarge,
    /// A typed value could not be encoded.
    Serialize,
    /// A stored value could not be decoded into the requested type.
    Deserialize,
    /// The backend refuses this client for a reason only a configuration change fixes: wrong
    /// or missing credentials, a missing permission, a database that does not exist. Not
    /// transient, yet the circuit breaker counts it: retrying every request against it would
    /// only pay a reconnection each time.
    Misconfigured,
    /// Any other failure reported by the backend.
    Backend,
}

impl ErrorKind {
    /// A stable identifier, for logs, metrics labels and API error bodies.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Unavailable => "cache_unavailable",
            Self::Timeout => "cache_timeout",
            Self::CircuitOpen => "cache_circuit_open",
            Self::InvalidKey => "cache_invalid_key",
            Self::InvalidArgument => "cache_invalid_argument",
            Self::WrongType => "cache_wrong_type",
            Self::TooLarge => "cache_too_large",
            Self::Serialize => "cache_serialize",
            Self::Deserialize => "cache_deserialize",
            Self::Misconfigured => "cache_misconfigured",
            Self::Backend => "cache_backend",
        }
    }

    /// Whether retrying later may succeed: the backend was unreachable, slow, or shed by the
    /// breaker.
    pub const fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Timeout | Self::CircuitOpen)
    }

    /// Whether the backend is unusable right now — transient, or misconfigured: what the
    /// circuit breaker counts.
    pub const fn disables_backend(self) -> bool {
        self.is_transient() || matches!(self, Self::Misconfigured)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A failed cache operation.
///
/// Boxed inside so that `Result<T, Error>` stays one pointer wide on the happy path.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    key: Option<Box<str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            key: None,
            source: None,
        }))
    }

    /// Attaches the key the operation was about.
    #[must_use]
    pub fn with_key(mut self, key: &str) -> Self {
        self.0.key = Some(key.into());
        self
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The stable identifier of the kind, such as `cache_timeout`.
    pub fn code(&self) -> &'static str {
        self.0.kind.code()
    }

    /// The human-readable message alone: without the key (which may carry an id that must not
    /// be logged) or the source.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The key the failed operation was about, when there was exactly one.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// Whether a retry later may succeed (see [`ErrorKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.0.kind.is_transient()
    }

    pub(crate) fn invalid_key(key: &str, why: &'static str) -> Self {
        // The key itself may be huge or hold control characters: keep a bounded, escaped copy.
        let shown: String = key.chars().take(64).flat_map(char::escape_debug).collect();
        Self::new(ErrorKind::InvalidKey, why).with_key(&shown)
    }

    pub(crate) fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn wrong_type(key: &str) -> Self {
        Self::new(
            ErrorKind::WrongType,
            "the key holds a value of another type",
        )
        .with_key(key)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if let Some(key) = &self.0.key {
            d.field("key", &KeyShape(key));
        }
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.kind.code(), self.0.message)?;
        if let Some(key) = &self.0.key {
            write!(f, " (key {:?})", KeyShape(key))?;
        }
        if let Some(source) = &self.0.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

/// A key as errors print it: its namespace, its last segment elided. Keys hold ids, and an id
/// may be a secret (a token, a reset code); an error's text ends up in logs. The whole key stays
/// available to code through [`Error::key`].
pub(crate) struct KeyShape<'a>(pub(crate) &'a str);

impl fmt::Debug for KeyShape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.chars().count();
        match self.0.rfind(':') {
            Some(at) => write!(f, "\"{}:…\" ({len} chars)", self.0[..at].escape_debug()),
            None => write!(f, "\"…\" ({len} chars)"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_code_key_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(ErrorKind::Unavailable, "cannot reach redis")
            .with_key("user:1")
            .with_source(io);
        let text = err.to_string();
        assert!(
            text.starts_with("cache_unavailable: cannot reach redis"),
            "{text}"
        );
        assert!(text.contains("(key \"user:…\" (6 chars))"), "{text}");
        assert_eq!(err.key(), Some("user:1"));
        assert!(text.contains("refused"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
        assert!(err.is_transient());
    }

    #[test]
    fn invalid_key_shows_a_bounded_escaped_key() {
        let long = format!("a\n{}", "x".repeat(10_000));
        let err = Error::invalid_key(&long, "too long");
        let shown = err.key().unwrap_or_default();
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.starts_with("a\\n"), "{shown}");
        assert!(!err.is_transient());
    }

    #[test]
    fn printed_errors_never_show_a_keys_id() {
        let secret = "tok3n-that-authenticates";
        for key in [
            format!("app:session:{secret}"),
            secret.to_owned(),
            format!("a:b:c:{secret}"),
        ] {
            let err = Error::wrong_type(&key);
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        let err = Error::wrong_type("app:session:x");
        assert!(err.to_string().contains("app:session:…"), "{err}");
    }

    #[test]
    fn result_stays_small() {
        assert_eq!(
            std::mem::size_of::<Result<()>>(),
            std::mem::size_of::<usize>()
        );
    }
}
