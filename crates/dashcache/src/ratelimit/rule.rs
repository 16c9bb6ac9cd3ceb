//! [`Rule`]: one rate limit — a named token bucket, who shares it, and what a cache failure
//! means — checked when it is built, so a rule that could never work is never used.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The largest `capacity × per` (in ms) a rule may have: every quantity then stays an exact
/// integer in an `f64`, here and in the Redis script.
const MAX_UNITS: u64 = 1 << 53;

/// What to do when the bucket cannot be consulted (the cache is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnError {
    /// Let the request through, log and count it (fail open). The default.
    #[default]
    Allow,
    /// Refuse it with 503 (fail closed), for rules that protect something expensive.
    Deny,
    /// Decide on this instance's own memory buckets instead (counted): the limit then holds per
    /// instance rather than across them, but never switches off. For limits that protect
    /// against abuse — logins, credential checks.
    Local,
}

/// Whose requests share a bucket (used by the middleware).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Scope {
    /// The client's address (behind trusted proxies, the forwarded one). The default.
    #[default]
    Ip,
    /// The authenticated user (from the request's `AuthenticatedUser` extension); requests
    /// without one are counted by address.
    User,
    /// The authenticated user on this route pattern (by address when anonymous).
    UserAndRoute,
    /// Everyone together.
    Global,
    /// A key of your own from the request; `None` falls back to the address.
    Custom(KeyFn),
}

/// The key function of [`Scope::Custom`].
pub type KeyFn = Arc<dyn Fn(&super::RequestInfo<'_>) -> Option<String> + Send + Sync>;

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Ip => "Ip",
            Scope::User => "User",
            Scope::UserAndRoute => "UserAndRoute",
            Scope::Global => "Global",
            Scope::Custom(_) => "Custom",
        })
    }
}

/// One rate limit: a named token bucket and how it applies.
///
/// ```
/// use std::time::Duration;
/// use dashcache::ratelimit::{OnError, Rule, Scope};
///
/// // 5 logins a minute per address, refused outright if the cache is down.
/// let login = Rule::new("login", 5, 5, Duration::from_secs(60))?
///     .with_scope(Scope::Ip)
///     .with_on_error(OnError::Deny);
/// assert!(Rule::new("bad", 0, 1, Duration::from_secs(1)).is_err());
/// assert!(login.clone().with_cost(6).is_err(), "a cost above capacity could never pass");
/// # Ok::<(), dashcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    capacity: u64,
    refill: u64,
    per_ms: u64,
    cost: u64,
    scope: Scope,
    on_error: OnError,
}

impl Rule {
    /// A bucket of `capacity` tokens gaining `refill` tokens every `per`; each check costs 1.
    ///
    /// # Errors
    /// `InvalidArgument` for a zero capacity or refill, a `per` under 1 ms, or a bucket too
    /// large to count exactly (`capacity × per` over 2⁵³ ms).
    pub fn new(name: impl Into<String>, capacity: u64, refill: u64, per: Duration) -> Result<Self> {
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX);
        if capacity == 0 || refill == 0 {
            return Err(Error::invalid_argument(
                "a rule's capacity and refill must be at least 1",
            ));
        }
        if per_ms == 0 {
            return Err(Error::invalid_argument(
                "a rule's refill period must be at least 1 ms",
            ));
        }
        if capacity
            .checked_mul(per_ms)
            .is_none_or(|units| units > MAX_UNITS)
        {
            return Err(Error::invalid_argument(
                "capacity × period is too large to count exactly",
            ));
        }
        Ok(Self {
            name: name.into(),
            capacity,
            refill,
            per_ms,
            cost: 1,
            scope: Scope::Ip,
            on_error: OnError::Allow,
        })
    }

    /// `n` requests per minute, as a bucket of `n` refilled over the minute.
    ///
    /// # Errors
    /// As [`Rule::new`].
    pub fn per_minute(name: impl Into<String>, n: u64) -> Result<Self> {
        Self::new(name, n, n, Duration::from_secs(60))
    }

    /// Each check costs `cost` tokens.
    ///
    /// # Errors
    /// `InvalidArgument` for 0, or for more than the capacity (it could never be allowed).
    pub fn with_cost(mut self, cost: u64) -> Result<Self> {
        if cost == 0 || cost > self.capacity {
            return Err(Error::invalid_argument(format!(
                "a rule's cost must be between 1 and its capacity ({})",
                self.capacity
            )));
        }
        self.cost = cost;
        Ok(self)
    }

    /// Who shares the bucket (default: the client address).
    #[must_use]
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// What a cache failure means (default: allow).
    #[must_use]
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The rule's name (part of its buckets' keys).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket size.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Tokens per check.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Who shares the bucket.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// What a cache failure means.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    pub(crate) fn spec(&self) -> Spec {
        Spec {
            capacity: self.capacity,
            refill: self.refill,
            per_ms: self.per_ms,
            cost: self.cost,
        }
    }
}

/// The numbers of a rule that a bucket store needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Bucket size in tokens.
    pub capacity: u64,
    /// Tokens gained per period.
    pub refill: u64,
    /// The period, in ms.
    pub per_ms: u64,
    /// Tokens per check.
    pub cost: u64,
}

/// A spec from its numbers, for the algorithm's and the stores' tests.
#[cfg(test)]
pub(crate) fn spec(capacity: u64, refill: u64, per_ms: u64, cost: u64) -> Spec {
    Spec {
        capacity,
        refill,
        per_ms,
        cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_what_could_never_work() {
        let per = Duration::from_secs(1);
        assert!(Rule::new("r", 0, 1, per).is_err());
        assert!(Rule::new("r", 1, 0, per).is_err());
        assert!(Rule::new("r", 1, 1, Duration::from_micros(10)).is_err());
        assert!(Rule::new("r", u64::MAX, 1, per).is_err());
        let rule = Rule::new("r", 5, 1, per).unwrap_or_else(|e| panic!("{e}"));
        assert!(rule.clone().with_cost(0).is_err());
        assert!(rule.clone().with_cost(6).is_err());
        assert!(rule.with_cost(5).is_ok());
    }
}
