//! `write_if` in memory: conditions, then a dry run of the writes' types, then the writes —
//! all under one [`Exclusive`](super::stripes::Exclusive), as Redis runs its script.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::MemoryCache;
use super::entry::{Entry, Value, deadline, parse_integer};
use crate::cache::{Condition, Write};
use crate::error::{Error, ErrorKind, Result};

/// What a key holds, as far as a dry run can tell.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    String,
    Set,
    /// A set that removals may have emptied (and so removed).
    MaybeSet,
}

impl MemoryCache {
    pub(super) fn write_if_exclusive(
        &self,
        conditions: &[Condition<'_>],
        writes: &[Write<'_>],
    ) -> Result<bool> {
        let keys = conditions
            .iter()
            .map(Condition::key)
            .chain(writes.iter().map(Write::key));
        let _exclusive = self.inner.stripes.exclusive(keys);
        for condition in conditions {
            if !self.holds(condition)? {
                return Ok(false);
            }
        }
        self.check_types(writes)?;
        let now = self.inner.clock.now();
        for write in writes {
            self.apply(write, now)?;
        }
        Ok(true)
    }

    /// Evaluates one condition (its key's stripe is held).
    fn holds(&self, condition: &Condition<'_>) -> Result<bool> {
        Ok(match *condition {
            Condition::Absent(key) => self.live(key).is_none(),
            Condition::Exists(key) => self.live(key).is_some(),
            Condition::MissingOrBelow(key, bound) => match self.live(key) {
                None => true,
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => match parse_integer(&b) {
                    Some(n) => n < bound,
                    None => return Err(not_an_integer(key)),
                },
                Some(_) => return Err(Error::wrong_type(key)),
            },
            Condition::Differs(key, marker) => match self.live(key) {
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => *b != *marker.to_string().as_bytes(),
                _ => true,
            },
            Condition::IntEquals(key, expected) => match self.live(key) {
                None => false,
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => match parse_integer(&b) {
                    Some(n) => n == expected,
                    None => return Err(not_an_integer(key)),
                },
                Some(_) => return Err(Error::wrong_type(key)),
            },
        })
    }

    /// Raises the `WrongType` a write would meet before anything is written: nothing is rolled
    /// back half-way, as in the Redis script.
    fn check_types(&self, writes: &[Write<'_>]) -> Result<()> {
        let mut kinds: HashMap<&str, Kind> = HashMap::new();
        for write in writes {
            let key = write.key();
            let kind = match kinds.get(key) {
                Some(kind) => *kind,
                None => match self.live(key).map(|e| e.value) {
                    None => Kind::None,
                    Some(Value::Bytes(_)) => Kind::String,
                    Some(Value::Set(_)) => Kind::Set,
                },
            };
            let settable = matches!(kind, Kind::None | Kind::Set | Kind::MaybeSet);
            let next = match write {
                Write::Set(..) | Write::SetInt(..) => Kind::String,
                Write::Replace(..) if kind == Kind::None => Kind::None,
                Write::Replace(..) => Kind::String,
                Write::Delete(_) => Kind::None,
                Write::SetAdd(_, [], _) | Write::SetRemove(_, []) => kind,
                Write::SetAdd(..) if settable => Kind::Set,
                Write::SetRemove(..) if settable && kind == Kind::None => Kind::None,
                Write::SetRemove(..) if settable => Kind::MaybeSet,
                Write::SetAdd(..) | Write::SetRemove(..) => return Err(Error::wrong_type(key)),
            };
            kinds.insert(key, next);
        }
        Ok(())
    }

    /// Applies one write whose type the dry run has checked.
    fn apply(&self, write: &Write<'_>, now: Instant) -> Result<()> {
        match write {
            Write::Set(key, value, ttl) => {
                let entry = Entry::new(Value::Bytes(value.clone()), ttl.to_millis()?, now);
                self.put(key, entry);
            }
            Write::SetInt(key, n, ttl) => {
                let value = Value::Bytes(Bytes::from(n.to_string()));
                self.put(key, Entry::new(value, ttl.to_millis()?, now));
            }
            Write::Replace(key, value) => {
                if let Some(current) = self.live(key) {
                    let value = Value::Bytes(value.clone());
                    let expires_at = current.expires_at;
                    self.put(key, Entry { value, expires_at });
                }
            }
            Write::Delete(key) => self.inner.store.invalidate(*key),
            Write::SetAdd(_, [], _) | Write::SetRemove(_, []) => {}
            Write::SetAdd(key, members, ttl) => {
                let wanted = deadline(ttl.to_millis()?, now);
                self.update_set(key, |set, expires_at| {
                    // Sets are never stored empty: a non-empty one existed before this write.
                    let existed = !set.is_empty();
                    set.extend(members.iter().cloned());
                    // At least `ttl`: a longer deadline (or none at all) on an existing set
                    // stands.
                    *expires_at = match (existed, *expires_at, wanted) {
                        (false, _, wanted) => wanted,
                        (true, None, _) | (true, _, None) => None,
                        (true, Some(old), Some(new)) => Some(old.max(new)),
                    };
                })?;
            }
            Write::SetRemove(key, members) => {
                self.update_set(key, |set, _| {
                    for m in members.iter() {
                        set.remove(m);
                    }
                })?;
            }
        }
        Ok(())
    }
}

fn not_an_integer(key: &str) -> Error {
    Error::new(ErrorKind::WrongType, "the value is not an integer").with_key(key)
}
