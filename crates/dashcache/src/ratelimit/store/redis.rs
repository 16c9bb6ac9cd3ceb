//! [`RedisBuckets`]: token buckets on Redis, one Lua script per decision, on the server's clock.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::BucketStore;
use crate::error::Result;
use crate::ratelimit::bucket::{Decision, IDLE_MARGIN};
use crate::ratelimit::rule::Spec;
use crate::redis::RedisCache;

/// KEYS[1] bucket (a hash of `u`, units, and `t`, when they were counted);
/// ARGV capacity, refill, per_ms, cost, consume (1/0), now_ms ('' for the server's TIME),
/// idle margin ms.
///
/// The arithmetic follows `bucket::decide` operation for operation, in the same double
/// precision. The server's clock, not each app server's, drives the bucket, so every instance
/// of a service agrees. The hash expires once the bucket would be full again (plus a margin):
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
local allowed = units >= need
if allowed and ARGV[5] == '1' then
  units = units - need
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
return {allowed and 1 or 0, math.floor(units / per), retry, reset}
";
}

/// Token buckets on a [`RedisCache`]: its deadline and circuit breaker apply, and the script is
/// reloaded after `NOSCRIPT` (a flushed script cache or a restarted server never switches
/// limiting off).
#[derive(Debug, Clone)]
pub struct RedisBuckets {
    cache: RedisCache,
    script: std::sync::Arc<Script>,
}

impl RedisBuckets {
    /// Buckets on `cache`'s server.
    pub fn new(cache: RedisCache) -> Self {
        Self {
            cache,
            script: std::sync::Arc::new(Script::new(TAKE)),
        }
    }

    async fn run(
        &self,
        key: &str,
        spec: Spec,
        now_ms: Option<u64>,
        consume: bool,
    ) -> Result<Decision> {
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
        invocation.arg(IDLE_MARGIN.as_millis() as u64);
        let (allowed, remaining, retry, reset): (u8, u64, u64, u64) =
            self.cache.invoke(key, &invocation).await?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: spec.capacity,
            remaining,
            retry_after: Duration::from_millis(retry),
            reset_after: Duration::from_millis(reset),
        })
    }
}

#[async_trait]
impl BucketStore for RedisBuckets {
    async fn take(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        self.run(key, spec, now_ms, true).await
    }

    async fn peek(&self, key: &str, spec: Spec, now_ms: Option<u64>) -> Result<Decision> {
        self.run(key, spec, now_ms, false).await
    }

    async fn reset(&self, key: &str) -> Result<()> {
        crate::Cache::delete(&self.cache, key).await.map(|_| ())
    }
}
