//! The Lua scripts behind the operations that must be one atomic step on the server.
//!
//! They are invoked by SHA (`EVALSHA`); `redis::Script` loads them again after `NOSCRIPT`, so a
//! flushed script cache or a restarted server costs one extra round trip, never a failure.

use redis::Script;

/// The scripts of one `RedisCache`, hashed once at construction.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) increment: Script,
    pub(crate) set_add: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            increment: Script::new(INCREMENT),
            set_add: Script::new(SET_ADD),
        }
    }
}

/// KEYS[1] counter; ARGV[1] delta; ARGV[2] TTL in ms for a key without one.
///
/// INCRBY raises on a non-integer or overflow before anything is written, so a failed call
/// changes nothing (a MULTI would still run the PEXPIRE). The value is returned with GET, as
/// the exact decimal text: returning the INCRBY result would pass it through a Lua double and
/// lose precision above 2^53.
const INCREMENT: &str = r"
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX')
return redis.call('GET', KEYS[1])
";

/// KEYS[1] set; ARGV[1] TTL in ms or '' to persist; ARGV[2..] members.
///
/// A loop of single-member SADDs rather than one SADD with `unpack`, which fails past Lua's
/// stack limit (~8000 members). A wrong-typed key raises at the first SADD, before any change.
const SET_ADD: &str = r"
local added = 0
for i = 2, #ARGV do
  added = added + redis.call('SADD', KEYS[1], ARGV[i])
end
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return added
";
