//! The Lua scripts behind the operations that must be one atomic step on the server.
//!
//! They are invoked by SHA (`EVALSHA`); `redis::Script` loads them again after `NOSCRIPT`, so a
//! flushed script cache or a restarted server costs one extra round trip, never a failure.

use redis::{Script, ScriptInvocation};

use crate::cache::{Condition, Ttl, Write};
use crate::error::Result;

/// The scripts of one `RedisCache`, hashed once at construction.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) increment: Script,
    pub(crate) set_add: Script,
    pub(crate) write_if: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            increment: Script::new(INCREMENT),
            set_add: Script::new(SET_ADD),
            write_if: Script::new(WRITE_IF),
        }
    }
}

/// The invocation of [`WRITE_IF`] for `conditions` and `writes`.
///
/// # Errors
/// `InvalidArgument` for a zero TTL.
pub(crate) fn write_if<'s>(
    script: &'s Script,
    conditions: &[Condition<'_>],
    writes: &[Write<'_>],
) -> Result<ScriptInvocation<'s>> {
    let mut invocation = script.prepare_invoke();
    let mut slot = 0usize;
    let mut key = |k: &str, inv: &mut ScriptInvocation<'_>| {
        inv.key(k);
        slot += 1;
        slot
    };
    invocation.arg(conditions.len());
    for c in conditions {
        let n = key(c.key(), &mut invocation);
        match c {
            Condition::Absent(_) => invocation.arg("absent").arg(n).arg(""),
            Condition::Exists(_) => invocation.arg("exists").arg(n).arg(""),
            Condition::MissingOrBelow(_, bound) => invocation.arg("below").arg(n).arg(*bound),
            Condition::IntEquals(_, value) => invocation.arg("equals").arg(n).arg(*value),
            Condition::Differs(_, value) => invocation.arg("differs").arg(n).arg(*value),
        };
    }
    invocation.arg(writes.len());
    for w in writes {
        let n = key(w.key(), &mut invocation);
        match w {
            Write::Set(_, value, ttl) => {
                invocation.arg("S").arg(n).arg(value.as_ref());
                ttl_arg(&mut invocation, *ttl)?;
            }
            Write::SetInt(_, value, ttl) => {
                invocation.arg("S").arg(n).arg(*value);
                ttl_arg(&mut invocation, *ttl)?;
            }
            Write::Replace(_, value) => {
                invocation.arg("R").arg(n).arg(value.as_ref());
            }
            Write::Delete(_) => {
                invocation.arg("D").arg(n);
            }
            Write::SetAdd(_, members, ttl) => {
                invocation.arg("A").arg(n);
                ttl_arg(&mut invocation, *ttl)?;
                invocation.arg(members.len());
                for m in members.iter() {
                    invocation.arg(m.as_ref());
                }
            }
            Write::SetRemove(_, members) => {
                invocation.arg("X").arg(n).arg(members.len());
                for m in members.iter() {
                    invocation.arg(m.as_ref());
                }
            }
        }
    }
    Ok(invocation)
}

/// A TTL as a script argument: milliseconds, or `''` for no expiry.
fn ttl_arg(invocation: &mut ScriptInvocation<'_>, ttl: Ttl) -> Result<()> {
    match ttl.to_millis()? {
        Some(ms) => invocation.arg(ms),
        None => invocation.arg(""),
    };
    Ok(())
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

/// `write_if`: KEYS are every key in order of appearance; ARGV is a program:
/// `ncond, (kind, key#, arg)*, nwrites, write*` where a write is
/// `S key# value ttl|''` (set), `R key# value` (replace), `D key#` (delete),
/// `A key# ttl|'' n member*` (set add, at least ttl), `X key# n member*` (set remove).
///
/// Conditions run in order (the first that fails answers 0). Then a dry run of the writes
/// tracks each key's type, so a WRONGTYPE is raised before anything is written: a script is not
/// rolled back by an error half-way.
const WRITE_IF: &str = r"
local function is_int(s)
  if s == '0' then return true end
  local neg = string.sub(s, 1, 1) == '-'
  local d = neg and string.sub(s, 2) or s
  if not string.match(d, '^[1-9]%d*$') or #d > 19 then return false end
  if #d == 19 and d > (neg and '9223372036854775808' or '9223372036854775807') then return false end
  return true
end
local function less(a, b)
  local an, bn = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if an ~= bn then return an end
  local ad = an and string.sub(a, 2) or a
  local bd = bn and string.sub(b, 2) or b
  if ad == bd then return false end
  local lt
  if #ad ~= #bd then lt = #ad < #bd else lt = ad < bd end
  if an then return not lt end
  return lt
end
local wrongtype = 'WRONGTYPE Operation against a key holding the wrong kind of value'

local i = 1
local ncond = tonumber(ARGV[i]); i = i + 1
for _ = 1, ncond do
  local kind, key, arg = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  i = i + 3
  local t = redis.call('TYPE', key).ok
  if kind == 'absent' then
    if t ~= 'none' then return 0 end
  elseif kind == 'exists' then
    if t == 'none' then return 0 end
  elseif kind == 'differs' then
    if t == 'string' and redis.call('GET', key) == arg then return 0 end
  elseif kind == 'equals' then
    if t == 'none' then return 0 end
    if t ~= 'string' then return redis.error_reply(wrongtype) end
    local v = redis.call('GET', key)
    if not is_int(v) then return redis.error_reply('ERR value is not an integer or out of range') end
    if v ~= arg then return 0 end
  else
    if t ~= 'none' then
      if t ~= 'string' then return redis.error_reply(wrongtype) end
      local v = redis.call('GET', key)
      if not is_int(v) then return redis.error_reply('ERR value is not an integer or out of range') end
      if not less(v, arg) then return 0 end
    end
  end
end

local nwrites = tonumber(ARGV[i]); i = i + 1
local start = i
local types = {}
for _ = 1, nwrites do
  local kind, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  local t = types[key]
  if t == nil then t = redis.call('TYPE', key).ok end
  if kind == 'S' then
    types[key] = 'string'; i = i + 4
  elseif kind == 'R' then
    if t ~= 'none' then types[key] = 'string' end
    i = i + 3
  elseif kind == 'D' then
    types[key] = 'none'; i = i + 2
  else
    local n = tonumber(ARGV[i + (kind == 'A' and 3 or 2)])
    if n > 0 and t ~= 'none' and t ~= 'set' and t ~= 'set?' then return redis.error_reply(wrongtype) end
    if kind == 'A' then
      if n > 0 then types[key] = 'set' end
      i = i + 4 + n
    else
      if t ~= 'none' then types[key] = 'set?' end
      i = i + 3 + n
    end
  end
end

i = start
for _ = 1, nwrites do
  local kind, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if kind == 'S' then
    if ARGV[i + 3] == '' then
      redis.call('SET', key, ARGV[i + 2])
    else
      redis.call('SET', key, ARGV[i + 2], 'PX', ARGV[i + 3])
    end
    i = i + 4
  elseif kind == 'R' then
    redis.call('SET', key, ARGV[i + 2], 'XX', 'KEEPTTL')
    i = i + 3
  elseif kind == 'D' then
    redis.call('DEL', key)
    i = i + 2
  elseif kind == 'A' then
    local ttl, n = ARGV[i + 2], tonumber(ARGV[i + 3])
    if n > 0 then
      local existed = redis.call('EXISTS', key) == 1
      for m = 1, n do redis.call('SADD', key, ARGV[i + 3 + m]) end
      if ttl == '' then
        redis.call('PERSIST', key)
      elseif existed then
        redis.call('PEXPIRE', key, ttl, 'GT')
      else
        redis.call('PEXPIRE', key, ttl)
      end
    end
    i = i + 4 + n
  else
    local n = tonumber(ARGV[i + 2])
    for m = 1, n do redis.call('SREM', key, ARGV[i + 2 + m]) end
    i = i + 3 + n
  end
end
return 1
";
