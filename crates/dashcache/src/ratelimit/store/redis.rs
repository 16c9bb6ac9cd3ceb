//! [`RedisBuckets`]: token buckets on Redis, one Lua script per decision, on the server's clock;
//! optionally with [`Reservations`] for hot buckets.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::BucketStore;
use super::reserve::{ReservationStats, Reservations, Step, Table};
use crate::error::Result;
use crate::ratelimit::bucket::{Decision, IDLE_MARGIN};
use crate::ratelimit::rule::Spec;
use crate::redis::RedisCache;

/// KEYS[1] bucket (a hash of `u`, units, and `t`, when they were counted);
/// ARGV capacity, refill, per_ms, cost, consume (1/0), now_ms ('' for the server's TIME),
/// idle margin ms, and optionally the most checks to take (default 1) and checks' worth of
/// unused reserved tokens to give back first (default 0). Returns allowed (1/0), whole
/// tokens remaining, retry ms, reset ms, and the checks taken.
///
/// The arithmetic follows `bucket::decide` operation for operation, in the same double
/// precision (all of them integers below 2⁵³, so exact); taking several checks takes as many
/// whole `need`s as fit, up to the count, and giving tokens back (after the refill, capped at
/// full) leaves the bucket as if they had never been taken. The server's clock, not each app
/// server's, drives the bucket, so every instance of a service agrees. The hash expires once the bucket would be full again (plus a margin):
/// a missing bucket is a full one.
const TAKE: &str = RedisBuckets::SCRIPT;

impl RedisBuckets {
    /// The Lua source of the bucket script, for review (and for benchmarks that run it raw).
    pub const SCRIPT: &'static str = r"
local now
if ARGV[6] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[6])
end
local capacity, refill, per, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local full = capacity * per
local units, at = full, now
local state = redis.call('HMGET', KEYS[1], 'u', 't')
if state[1] and state[2] then
  units = tonumber(state[1])
  at = tonumber(state[2])
end
if now > at then
  units = math.min(full, units + (now - at) * refill)
  at = now
end
local need = cost * per
local give_back = tonumber(ARGV[9] or '0')
if give_back > 0 then
  units = math.min(full, units + give_back * need)
end
local allowed = units >= need
local taken = 0
if allowed and ARGV[5] == '1' then
  local count = tonumber(ARGV[8] or '1')
  taken = 1
  if count > 1 then
    local fit = math.floor(units / need)
    if fit * need > units then
      fit = fit - 1
    end
    taken = math.max(1, math.min(count, fit))
  end
  units = units - taken * need
end
local retry = 0
if not allowed then
  retry = math.ceil((need - units) / refill)
end
local reset = math.ceil((full - units) / refill)
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'u', string.format('%.17g', units), 't', string.format('%.17g', at))
  redis.call('PEXPIRE', KEYS[1], reset + tonumber(ARGV[7]))
end
return {allowed and 1 or 0, math.floor(units / per), retry, reset, taken}
";
}

/// Token buckets on a [`RedisCache`]: its deadline and circuit breaker apply, and the script is
/// reloaded after `NOSCRIPT` (a flushed script cache or a restarted server never switches
/// limiting off).
///
/// Each check is one round trip, unless [reservations](Self::with_reservations) are on: then
/// a hot bucket's checks take tokens ahead in batches and most are answered in process, still
/// as one limit across every instance.
#[derive(Debug, Clone)]
pub struct RedisBuckets {
    cache: RedisCache,
    script: std::sync::Arc<Script>,
    reserved: Option<std::sync::Arc<Table>>,
}

impl RedisBuckets {
    /// Buckets on `cache`'s server, one round trip per check.
    pub fn new(cache: RedisCache) -> Self {
        Self {
            cache,
            script: std::sync::Arc::new(Script::new(TAKE)),
            reserved: None,
        }
    }

    /// Answers most checks of hot buckets in process: a check that finds this instance's
    /// reservation for its bucket used up within its hold takes a batch of tokens (doubling,
    /// up to `reservations`' limit and 1/16 of the bucket) in its one round trip, and the
    /// next checks use them. Tokens are always taken from the shared bucket before they
    /// admit anything, so the instances together admit no more than the bucket gives out;
    /// unused ones are given back. A bucket checked less often than once per hold, or smaller
    /// than 32 checks, is checked on Redis every time, exactly as without reservations. Within
    /// a reservation `RateLimit-Remaining` counts what this instance holds as remaining.
    ///
    /// A refusal is repeated in process for the rest of the hold (or until its
    /// `retry_after`, if sooner), for buckets of every size: a flood against an empty bucket
    /// costs one round trip per hold per instance.
    ///
    /// The cost: a reservation's tokens cannot admit checks on other instances until they are
    /// used or given back, so under a spread load a client may be refused while a few of its
    /// tokens sit on another instance (at most a 16th of its bucket per instance); and a
    /// bucket may admit up to `refill × hold` more over a window than token-by-token checks
    /// would (see the `reserve` module).
    #[must_use]
    pub fn with_reservations(mut self, reservations: Reservations) -> Self {
        self.reserved = Some(std::sync::Arc::new(Table::new(reservations)));
        self
    }

    /// What this instance's reservations did so far; `None` when they are off.
    pub fn reservation_stats(&self) -> Option<ReservationStats> {
        self.reserved.as_ref().map(|table| table.stats())
    }

    async fn run(
        &self,
        key: &str,
        spec: Spec,
        now_ms: Option<u64>,
        consume: bool,
        count: u64,
        give_back: u64,
    ) -> Result<(Decision, u64)> {
        let mut invocation = self.script.key(key);
        invocation
            .arg(spec.capacity)
            .arg(spec.refill)
            .arg(spec.per_ms)
            .arg(spec.cost)
            .arg(u8::from(consume));
        match now_ms {
            Some(now) => invocation.arg(now),
            None => invocation.arg(""),
        };
        invocation
            .arg(IDLE_MARGIN.as_millis() as u64)
            .arg(count)
            .arg(give_back);
        let (allowed, remaining, retry, reset, taken): (u8, u64, u64, u64, u64) =
            self.cache.invoke(key, &invocation).await?;
        let decision = Decision {
            allowed: allowed == 1,
            limit: spec.capacity,
            remaining,
            retry_after: Duration::from_millis(retry),
            reset_after: Duration::from_millis(reset),
        };
        Ok((decision, taken))
    }
}

#[async_trait]
impl BucketStore for RedisBuckets {
    async fn take(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        let Some(table) = &self.reserved else {
            return Ok(self.run(key, spec, now_ms, true, 1, 0).await?.0);
        };
        match table.step(key, spec) {
            Step::Local(decision) => Ok(decision),
            Step::Store { count, give_back } => {
                let (decision, taken) = self.run(key, spec, now_ms, true, count, give_back).await?;
                Ok(table.record(key, spec, taken, decision))
            }
        }
    }

    async fn peek(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        let (mut decision, _) = self.run(key, spec, now_ms, false, 1, 0).await?;
        if let Some(table) = &self.reserved {
            let held = table.held_tokens(key);
            decision.remaining = decision.remaining.saturating_add(held);
            decision.allowed |= held >= spec.cost;
        }
        Ok(decision)
    }

    async fn reset(&self, key: &str) -> Result<()> {
        if let Some(table) = &self.reserved {
            table.forget(key);
        }
        crate::Cache::delete(&self.cache, key).await.map(|_| ())
    }
}
