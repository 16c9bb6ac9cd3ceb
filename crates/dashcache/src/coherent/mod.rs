//! The cache follows the database: an invalidation log in the database, a consumer in every
//! instance, and a staleness bound Δ_db from a commit to every instance's answers.
//!
//! The database is the source of truth. Every committed change that invalidates cached values
//! appends an entry to a log table **in the same transaction** (by triggers on the cached
//! tables, so writes from `psql`, a migration or another service count; or by
//! [`InvalidationLog::append`] for what no row change expresses). A [`Consumer`] in every
//! instance reads the log in commit order and applies each entry: at once to this process's
//! memory (an L1, or the embedded cache), then to the shared cache (Redis), retried until it
//! is applied, never skipped.
//!
//! What makes the bound hold is the **proof** kept in a [`Follower`]: "every entry committed
//! before T has been applied here". A key of a *coherent* namespace is answered from the cache
//! only while the proof is younger than Δ_db; otherwise the cache answers "nothing", and the
//! caller reads the database (never a possibly stale Redis). An entry applied to this
//! process's memory but not yet to Redis leaves its keys *pending*: they are not read from
//! Redis until it is. So a value served at time `t` misses no commit made before `t − Δ_db`,
//! under partitions, a frozen or paused Redis, an instance crashing between its commit and
//! its own invalidation, and writes made outside the service.
//!
//! The proof is measured on this process's monotonic clock: T is taken before the query that
//! reads the log is sent, and a commit that completed before T is in that query's snapshot.
//! No clock is compared across machines.
//!
//! [`Target`]s are what an entry invalidates: a key (deleted, with its cache-aside fence
//! changed so a fill that began loading before cannot land) or a version key (replaced with a
//! fresh value: a permission generation, a tag, a tombstone). Applying a target is one atomic
//! step guarded by a marker on the key's slot, so the second of N instances to apply an entry
//! finds the marker and writes nothing.
//!
//! [`InvalidationLog`]: log::InvalidationLog
//! [`InvalidationLog::append`]: log::InvalidationLog::append
//! [`Consumer`]: log::Consumer

mod apply;
mod follower;
mod gate;
#[cfg(feature = "database")]
pub mod log;

pub use apply::{Applier, Target};
pub use follower::{Follower, FollowerStatus};
pub use gate::Gated;
