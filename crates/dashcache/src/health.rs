//! A health probe of a [`Cache`]: up, slow, or down, with the round-trip time.
//!
//! It tells a dead cache (refused, unreachable, breaker open, no answer within the deadline)
//! from a slow one (answers, but above a threshold), so `/health` can report a degraded
//! service instead of hiding the cache behind fail-open.

use std::time::Duration;

use serde::Serialize;

use crate::cache::Cache;

/// The cache's state as a probe saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CacheStatus {
    /// It answered within the threshold.
    Up,
    /// It answered, slower than the threshold.
    Slow,
    /// It did not answer: see [`HealthReport::error`] for why.
    Down,
}

/// One probe's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Up, slow or down.
    pub status: CacheStatus,
    /// The round trip, when it answered.
    #[serde(rename = "latency_ms", serialize_with = "millis")]
    pub latency: Option<Duration>,
    /// The error code when down (`cache_unavailable`, `cache_timeout`, `cache_circuit_open`, …).
    pub error: Option<&'static str>,
    /// The error's message when down.
    pub detail: Option<String>,
}

impl HealthReport {
    /// Whether the cache answered (up or slow).
    pub fn is_available(&self) -> bool {
        self.status != CacheStatus::Down
    }
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3),
        None => s.serialize_none(),
    }
}

/// Pings `cache` once; `slow_above` is the round trip past which it counts as slow.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use dashcache::{MemoryCache, health::{probe, CacheStatus}};
///
/// let report = probe(&MemoryCache::new(), Duration::from_millis(50)).await;
/// assert_eq!(report.status, CacheStatus::Up);
/// # }
/// ```
pub async fn probe(cache: &dyn Cache, slow_above: Duration) -> HealthReport {
    match cache.ping().await {
        Ok(rtt) => HealthReport {
            status: if rtt > slow_above {
                CacheStatus::Slow
            } else {
                CacheStatus::Up
            },
            latency: Some(rtt),
            error: None,
            detail: None,
        },
        Err(e) => HealthReport {
            status: CacheStatus::Down,
            latency: None,
            error: Some(e.code()),
            detail: Some(e.to_string()),
        },
    }
}
