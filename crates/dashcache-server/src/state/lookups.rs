//! Session lookups that reach the database, and this instance's memory of sessions it
//! verified there.
//!
//! While the cache answers, a session is found in it. When it misses or fails, the lookup goes
//! to the database; forged tokens must not be able to hammer it, so each client network may
//! *fail* so many lookups a minute ([`crate::session_lookup_limit`]). Only failures are
//! charged (unknown, revoked, expired, outdated): a valid session never uses the allowance up,
//! so a Redis outage or a failover, which sends every request's lookup to the database, logs
//! nobody out, however many users share an address. A network that has used its allowance up
//! is refused before the database; its valid sessions still resolve through the cache, and,
//! while the cache cannot answer, through [`Verified`]: the sessions this instance verified
//! in the database in the last [`Verified::TTL`], dropped at once when they are revoked here
//! or the invalidation log says a session changed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashcache::fallback::BurstLog;
use dashcache::ratelimit::{Decision, RateLimiter, Rule, network_of};

use super::ServiceSession;
use crate::error::Unauthenticated;

/// Where a session lookup found its answer, counted for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The cache had it.
    Cache,
    /// The cache could not answer; this instance had verified it recently.
    Memory,
    /// The database had it, live.
    Database,
    /// Refused, and why (a refusal after a database lookup is charged to the network).
    Refused(Unauthenticated),
}

/// The sessions this instance verified in the database recently: what it trusts while the
/// cache cannot answer. Bounded ([`Verified::CAPACITY`] sessions) and short-lived
/// ([`Verified::TTL`]); keyed by the session's cache key, so the invalidation log's keys
/// drop entries directly.
#[derive(Clone)]
pub struct Verified {
    sessions: moka::sync::Cache<String, ServiceSession>,
}

impl Verified {
    /// How many sessions are remembered at most.
    pub const CAPACITY: u64 = 10_000;
    /// How long a verification is trusted without the cache: a revocation this instance does
    /// not hear of (no invalidation log, the cache down when it happened elsewhere and the
    /// user's security version not bumped) is honoured within this.
    pub const TTL: Duration = Duration::from_secs(60);

    /// A memory of at most `capacity` sessions, each for `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            sessions: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The session under cache key `key`, if verified recently.
    pub fn get(&self, key: &str) -> Option<ServiceSession> {
        self.sessions.get(key)
    }

    /// Remembers `session`, found live under cache key `key`.
    pub fn remember(&self, key: String, session: ServiceSession) {
        self.sessions.insert(key, session);
    }

    /// Forgets the sessions under `keys` (every session when `keys` is empty: what the
    /// invalidation log's hook says when it dropped everything).
    pub fn forget(&self, keys: &[&str]) {
        if keys.is_empty() {
            self.sessions.invalidate_all();
        } else {
            for key in keys {
                self.sessions.invalidate(*key);
            }
        }
    }

    /// Forgets every session of `user` (all of them revoked at once).
    pub fn forget_user(&self, user: &str) {
        let keys: Vec<std::sync::Arc<String>> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.user_id == user)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.sessions.invalidate(key.as_str());
        }
    }

    /// How many sessions are remembered (after pending evictions ran).
    pub fn len(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.entry_count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Verified {
    fn default() -> Self {
        Self::new(Self::CAPACITY, Self::TTL)
    }
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("sessions", &self.sessions.entry_count())
            .finish()
    }
}

/// The allowance of failed database lookups per client network, the lookups in flight, the
/// verified-session memory and the counters of every outcome.
#[derive(Debug)]
pub struct SessionLookups {
    limit: Option<(RateLimiter, Rule)>,
    /// Database lookups in flight per network: a network may start only as many as its
    /// allowance could still pay for, so a concurrent burst of forged tokens cannot slip
    /// past the allowance before the first of them is charged.
    in_flight: Mutex<HashMap<String, u64>>,
    verified: Verified,
    refusals: BurstLog,
    counts: [AtomicU64; 6],
}

/// A database lookup admitted for a network: released when dropped.
#[derive(Debug)]
pub(crate) struct Admitted<'a> {
    lookups: &'a SessionLookups,
    network: String,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.lookups.flights();
        if let Some(n) = in_flight.get_mut(&self.network) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&self.network);
            }
        }
    }
}

impl SessionLookups {
    /// Lookups limited by `limit` (none: unlimited), remembering verified sessions in
    /// `verified`.
    pub fn new(limit: Option<(RateLimiter, Rule)>, verified: Verified) -> Self {
        Self {
            limit,
            in_flight: Mutex::new(HashMap::new()),
            verified,
            refusals: BurstLog::new(),
            counts: Default::default(),
        }
    }

    /// The verified-session memory.
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding it leaves only counters behind: still usable.
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bucket id of `client`'s network (an IPv6 /64 is one network).
    pub(crate) fn network(client: Option<IpAddr>) -> String {
        client.map_or_else(
            || "ip:unknown".to_owned(),
            |ip| format!("ip:{}", network_of(ip, 64)),
        )
    }

    /// Admits a database lookup for `network` if its allowance of failures can still pay for
    /// it and every other lookup in flight; `None` refuses it (logged once per burst).
    pub(crate) async fn admit(&self, network: &str) -> Option<Admitted<'_>> {
        let admitted = Admitted {
            lookups: self,
            network: network.to_owned(),
        };
        let mine = {
            let mut in_flight = self.flights();
            let n = in_flight.entry(network.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let Some((limiter, rule)) = &self.limit else {
            return Some(admitted);
        };
        let left = match limiter.remaining(rule, network).await {
            Ok(decision) => decision,
            Err(_) => limiter.remaining_locally(rule, network),
        };
        if whole_tokens(&left, rule) >= mine {
            return Some(admitted);
        }
        if let Some(suppressed) = self.refusals.should_log() {
            tracing::warn!(
                client = network,
                suppressed,
                reason = Unauthenticated::Limited.label(),
                "session lookups from this network failed too often: sessions this instance \
                 cannot verify from the cache or its memory are refused without a query"
            );
        }
        None
    }

    /// Charges `network` one failed lookup.
    pub(crate) async fn charge(&self, network: &str) {
        if let Some((limiter, rule)) = &self.limit
            && limiter.check(rule, network).await.is_err()
        {
            limiter.check_locally(rule, network);
        }
    }

    /// Counts `outcome` (a missing or malformed token is no lookup, and is not counted).
    pub(crate) fn count(&self, outcome: Outcome) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every outcome's label and count, for `/metrics`.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        OUTCOMES
            .iter()
            .zip(&self.counts)
            .map(|(o, n)| (o.label(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The outcomes counted, in the order of `SessionLookups::counts`.
const OUTCOMES: [Outcome; 6] = [
    Outcome::Cache,
    Outcome::Memory,
    Outcome::Database,
    Outcome::Refused(Unauthenticated::Unknown),
    Outcome::Refused(Unauthenticated::Revoked),
    Outcome::Refused(Unauthenticated::Limited),
];

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Memory => "memory",
            Self::Database => "database",
            Self::Refused(why) => why.label(),
        }
    }
}

/// How many whole checks of `rule` the bucket `left` describes can still pay for.
fn whole_tokens(left: &Decision, rule: &Rule) -> u64 {
    left.remaining / rule.cost().max(1)
}
