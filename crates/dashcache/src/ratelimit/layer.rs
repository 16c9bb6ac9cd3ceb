//! [`RateLimitLayer`]: rules per route pattern and method, a default, a skip list, trusted
//! proxies.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use tower::{Layer, Service, ServiceExt};

use super::client_ip::{TrustedProxies, client_ip};
use super::response::{set_headers, too_many_requests, unavailable};
use super::rule::{OnError, Rule, Scope};
use super::service::RateLimit;
use super::{AuthenticatedUser, RateLimiter, RequestInfo};
use crate::fallback::BurstLog;

/// Rate limits an axum router: put it on with `Router::layer`, so it runs after routing and
/// sees the matched route pattern.
///
/// Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset` (seconds until the bucket is full again); a refused request gets 429 with
/// `Retry-After` and an `application/problem+json` body. When the buckets cannot be reached, a
/// rule with [`OnError::Allow`] lets the request through (counted as a fail-open), one with
/// [`OnError::Deny`] answers 503, one with [`OnError::Local`] is decided on this instance's own
/// memory buckets (counted).
///
/// Clients are bucketed by address; an IPv6 client by its /64 (configurable with
/// [`ipv6_prefix`](Self::ipv6_prefix)), since one host usually holds a whole /64 and could
/// otherwise take a fresh bucket per request.
///
/// The client address is the socket's peer: serve the router with
/// `into_make_service_with_connect_info::<SocketAddr>()`. Forwarded headers count only from
/// [`trusted_proxies`](Self::trusted_proxies).
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, http::Method, routing::{get, post}};
/// use dashcache::{Keys, ratelimit::{RateLimitLayer, RateLimiter, Rule, Scope}};
///
/// let limiter = RateLimiter::memory(Keys::new("app", ["ratelimit"])?);
/// let layer = RateLimitLayer::new(limiter)
///     .route(Method::POST, "/api/v1/sessions", Rule::per_minute("login", 5)?)
///     .any_method("/api/v1/accounts/{id}", Rule::per_minute("accounts", 100)?.with_scope(Scope::User))
///     .default_rule(Rule::per_minute("default", 300)?)
///     .skip("/health");
/// let app: Router = Router::new()
///     .route("/api/v1/sessions", post(|| async { "session" }))
///     .route("/api/v1/accounts/{id}", get(|| async { "account" }))
///     .route("/health", get(|| async { "ok" }))
///     .layer(layer);
/// # Ok::<(), dashcache::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    limiter: RateLimiter,
    /// By route pattern, so a request finds its rule without building a key.
    routes: HashMap<String, RouteRules>,
    default: Option<Rule>,
    skip: HashSet<String>,
    trusted: TrustedProxies,
    ipv6_prefix: u8,
    counters: Arc<Counters>,
    warnings: Arc<BurstLog>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitConfig")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("default", &self.default.as_ref().map(Rule::name))
            .field("skip", &self.skip)
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// The rules of one route pattern.
#[derive(Clone, Default)]
struct RouteRules {
    by_method: Vec<(Method, Rule)>,
    any: Option<Rule>,
}

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    limited: AtomicU64,
    fail_open: AtomicU64,
    fail_closed: AtomicU64,
    fail_local: AtomicU64,
}

/// How the middleware has decided so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Requests let through by their bucket.
    pub allowed: u64,
    /// Requests refused with 429.
    pub limited: u64,
    /// Requests let through because the buckets could not be reached (`OnError::Allow`).
    pub fail_open: u64,
    /// Requests refused with 503 because the buckets could not be reached (`OnError::Deny`).
    pub fail_closed: u64,
    /// Requests decided on this instance's memory buckets because the store could not be
    /// reached (`OnError::Local`).
    pub fail_local: u64,
}

impl RateLimitLayer {
    /// A layer deciding with `limiter`; no rule yet (requests pass untouched until one
    /// applies).
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            config: Arc::new(Config {
                limiter,
                routes: HashMap::new(),
                default: None,
                skip: HashSet::new(),
                trusted: TrustedProxies::none(),
                ipv6_prefix: 64,
                counters: Arc::default(),
                warnings: Arc::new(BurstLog::new()),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Applies `rule` to `method` requests of the route `pattern` (as written in the router,
    /// `/api/v1/accounts/{id}`).
    #[must_use]
    pub fn route(mut self, method: Method, pattern: impl Into<String>, rule: Rule) -> Self {
        let rules = self.config().routes.entry(pattern.into()).or_default();
        rules.by_method.retain(|(m, _)| *m != method);
        rules.by_method.push((method, rule));
        self
    }

    /// Applies `rule` to every method of the route `pattern` (a method-specific rule wins).
    #[must_use]
    pub fn any_method(mut self, pattern: impl Into<String>, rule: Rule) -> Self {
        self.config().routes.entry(pattern.into()).or_default().any = Some(rule);
        self
    }

    /// Applies `rule` to every request no route rule covers (and to requests routing did not
    /// match).
    #[must_use]
    pub fn default_rule(mut self, rule: Rule) -> Self {
        self.config().default = Some(rule);
        self
    }

    /// Never limits the route pattern or path `path` (health checks, metrics scrapes).
    #[must_use]
    pub fn skip(mut self, path: impl Into<String>) -> Self {
        self.config().skip.insert(path.into());
        self
    }

    /// Believes `Forwarded` / `X-Forwarded-For` from these proxies (default: none).
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.config().trusted = proxies;
        self
    }

    /// The prefix length an IPv6 client is bucketed by (default 64; 128: each address alone).
    #[must_use]
    pub fn ipv6_prefix(mut self, len: u8) -> Self {
        self.config().ipv6_prefix = len.clamp(1, 128);
        self
    }

    /// The decisions so far.
    pub fn stats(&self) -> RateLimitStats {
        let c = &self.config.counters;
        RateLimitStats {
            allowed: c.allowed.load(Ordering::Relaxed),
            limited: c.limited.load(Ordering::Relaxed),
            fail_open: c.fail_open.load(Ordering::Relaxed),
            fail_closed: c.fail_closed.load(Ordering::Relaxed),
            fail_local: c.fail_local.load(Ordering::Relaxed),
        }
    }

    /// Writes the decisions so far to the installed `metrics` recorder as
    /// `dashcache_ratelimit_decisions_total{outcome}`.
    pub fn publish(&self) {
        let s = self.stats();
        metrics::describe_counter!(
            "dashcache_ratelimit_decisions_total",
            "Rate-limit decisions, by outcome (allowed, limited, and how a failing store was handled)."
        );
        for (outcome, n) in [
            ("allowed", s.allowed),
            ("limited", s.limited),
            ("fail_open", s.fail_open),
            ("fail_closed", s.fail_closed),
            ("fail_local", s.fail_local),
        ] {
            metrics::counter!("dashcache_ratelimit_decisions_total", "outcome" => outcome)
                .absolute(n);
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.config))
    }
}

impl Config {
    fn rule_for(&self, method: &Method, route: Option<&str>) -> Option<&Rule> {
        route
            .and_then(|r| self.routes.get(r))
            .and_then(|rules| {
                rules
                    .by_method
                    .iter()
                    .find(|(m, _)| m == method)
                    .map(|(_, rule)| rule)
                    .or(rules.any.as_ref())
            })
            .or(self.default.as_ref())
    }

    /// The bucket id of this request under `rule`'s scope.
    fn bucket_id(&self, rule: &Rule, info: &RequestInfo<'_>) -> String {
        let by_ip = || match info.client_ip {
            Some(ip) => format!("ip:{}", network_of(ip, self.ipv6_prefix)),
            None => "ip:unknown".to_owned(),
        };
        match rule.scope() {
            Scope::Ip => by_ip(),
            Scope::Global => "global".to_owned(),
            Scope::User => info.user.map_or_else(by_ip, |u| format!("u:{u}")),
            // Length-prefixed, so no user id can make two (user, route) pairs collide.
            Scope::UserAndRoute => info.user.map_or_else(by_ip, |u| {
                format!("ur:{}:{u}{}", u.len(), info.route.unwrap_or(info.path))
            }),
            Scope::Custom(key) => key(info).map_or_else(by_ip, |k| format!("c:{k}")),
        }
    }

    pub(crate) async fn handle<S>(&self, request: Request, inner: S) -> Result<Response, S::Error>
    where
        S: Service<Request, Response = Response>,
    {
        // A cheap clone (shared string): the request is moved on below.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let route = matched.as_ref().map(MatchedPath::as_str);
        let path = request.uri().path();
        if self.skip.contains(route.unwrap_or(path)) || self.skip.contains(path) {
            return inner.oneshot(request).await;
        }
        let Some(rule) = self.rule_for(request.method(), route) else {
            return inner.oneshot(request).await;
        };
        let peer: Option<IpAddr> = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let info = RequestInfo {
            method: request.method().as_str(),
            path,
            route,
            client_ip: client_ip(peer, request.headers(), &self.trusted),
            user: request
                .extensions()
                .get::<AuthenticatedUser>()
                .map(|u| u.0.as_str()),
            headers: request.headers(),
        };
        let id = self.bucket_id(rule, &info);
        match self.limiter.check(rule, &id).await {
            Ok(decision) if decision.allowed => {
                self.counters.allowed.fetch_add(1, Ordering::Relaxed);
                let mut response = inner.oneshot(request).await?;
                set_headers(response.headers_mut(), &decision);
                Ok(response)
            }
            Ok(decision) => {
                self.counters.limited.fetch_add(1, Ordering::Relaxed);
                Ok(too_many_requests(&decision))
            }
            Err(e) => {
                let (counter, outcome) = match rule.on_error() {
                    OnError::Allow => (&self.counters.fail_open, "allowing requests (fail-open)"),
                    OnError::Deny => (
                        &self.counters.fail_closed,
                        "refusing requests (fail-closed)",
                    ),
                    _ => (
                        &self.counters.fail_local,
                        "deciding on this instance's own buckets",
                    ),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.warnings.should_log() {
                    tracing::warn!(
                        rule = rule.name(),
                        code = e.code(),
                        error = e.message(),
                        suppressed,
                        "rate limiting unavailable: {outcome}"
                    );
                }
                match rule.on_error() {
                    OnError::Allow => inner.oneshot(request).await,
                    OnError::Deny => Ok(unavailable()),
                    _ => {
                        let decision = self.limiter.check_locally(rule, &id);
                        if decision.allowed {
                            let mut response = inner.oneshot(request).await?;
                            set_headers(response.headers_mut(), &decision);
                            Ok(response)
                        } else {
                            Ok(too_many_requests(&decision))
                        }
                    }
                }
            }
        }
    }
}

/// The network an address is bucketed by: an IPv4 address itself, an IPv6 address's first
/// `prefix` bits (one host usually holds a whole /64).
///
/// ```
/// use std::net::IpAddr;
/// use dashcache::ratelimit::network_of;
///
/// let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
/// assert_eq!(network_of(a, 64), network_of(b, 64));
/// ```
pub fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.clamp(1, 128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_network_s_bucket() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(network_of(a, 64), network_of(b, 64));
        assert_ne!(network_of(a, 64), network_of(c, 64));
        assert_ne!(network_of(a, 128), network_of(b, 128));
        let v4: IpAddr = "203.0.113.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(network_of(v4, 64), v4);
    }
}
