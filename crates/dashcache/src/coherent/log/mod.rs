//! The invalidation log in the database (PostgreSQL or SQLite, through `sqlx`), its DDL and
//! triggers, and the [`Consumer`] that applies it.
//!
//! ## The log
//!
//! One table (`dashcache_invalidations` by default) holds, in order, what each committed change
//! invalidates. Triggers on the cached tables append one entry per changed row — the table,
//! the operation, and the columns the [`Mapping`] asked for (old and new values of an update)
//! — in the transaction of the change. The mapping from a row to cache keys lives in Rust,
//! declared once ([`Mapping::table`]), so no key encoding is written in SQL.
//! [`InvalidationLog::append`] adds an entry of explicit [`Target`]s inside a caller's
//! transaction, for invalidations no row change expresses.
//!
//! ## Order
//!
//! SQLite runs one write transaction at a time, so an entry's sequence number is its commit
//! order and a consumer remembers the last one it read.
//!
//! PostgreSQL assigns the sequence number when the row is inserted, not when its transaction
//! commits: a reader that remembered "everything up to 41" would skip a 40 committed later.
//! Each entry records its transaction id (`xid8`), and a consumer remembers the *snapshot* it
//! read under: its `xmax` and the transactions in progress. The next read asks for entries of
//! those transactions and of later ones, and of nothing else; everything below was visible,
//! or aborted. Nothing is serialised, so writers pay one insert and no lock; a long
//! transaction delays nothing but its own entries.
//!
//! We chose triggers and a table over logical replication (`pgoutput`): they work the same on
//! both databases with the driver already in the tree, need no replication slot (which, left
//! behind by a dead consumer, retains WAL without bound) and no superuser setup, and an entry
//! is an ordinary row that an application can also append in its own transaction.
//!
//! ## Wake-ups, retention
//!
//! On PostgreSQL every entry also `NOTIFY`s; consumers `LISTEN` and read at once. Polling
//! (every Δ_db / 4) is the safety net, keeps the proof fresh, and is SQLite's only way.
//! Every consumer registers in `dashcache_consumers` with the horizon below which it has
//! applied everything to the shared cache; entries below every live consumer's horizon are
//! deleted. A consumer not seen for the liveness window is removed; if it comes back, it
//! drops what it cannot prove before it serves again.

mod consumer;
mod ddl;
mod read;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use sqlx::Row as _;

pub use consumer::{Consumer, ConsumerBuilder, ConsumerStatus};

use super::Target;
use crate::cache::Ttl;
use crate::error::{Error, ErrorKind, Result};

/// The database the log lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL 13 or newer (`xid8`, `pg_current_snapshot`).
    Postgres,
    /// SQLite 3.38 or newer (JSON functions built in).
    Sqlite,
}

impl Dialect {
    /// The dialect of a database URL (`postgres://`, `postgresql://`, `sqlite:`).
    ///
    /// # Errors
    /// `InvalidArgument` for any other scheme.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(Error::invalid_argument(
                "the invalidation log needs a postgres:// or sqlite: database URL",
            ))
        }
    }
}

/// What a change did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
    /// An entry appended by [`InvalidationLog::append`].
    Explicit,
    /// The whole table was emptied (`TRUNCATE`, PostgreSQL): no row is recorded, so what it
    /// invalidates is unknown, and everything coherent is dropped.
    Truncate,
}

impl Op {
    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "I" => Self::Insert,
            "U" => Self::Update,
            "D" => Self::Delete,
            "X" => Self::Explicit,
            "T" => Self::Truncate,
            _ => return None,
        })
    }
}

/// The recorded columns of one version of a changed row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(serde_json::Map<String, Value>);

impl Row {
    /// The column as text (numbers are given in decimal); `None` when absent or NULL.
    pub fn text(&self, column: &str) -> Option<String> {
        match self.0.get(column)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The column as an integer; `None` when absent, NULL or not an integer.
    pub fn int(&self, column: &str) -> Option<i64> {
        match self.0.get(column)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Whether the column is NULL or absent.
    pub fn is_null(&self, column: &str) -> bool {
        self.0.get(column).is_none_or(Value::is_null)
    }
}

/// One change as the log recorded it: the old and the new version of an updated row (one of
/// them for an insert or a delete, one when an update changed no recorded column).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The table.
    pub table: String,
    /// What happened.
    pub op: Op,
    /// The versions of the row.
    pub rows: Vec<Row>,
}

type MapFn = dyn Fn(&Change, &mut Vec<Target>) -> Result<()> + Send + Sync;

/// The tables whose changes invalidate the cache, the columns their triggers record, and what
/// a change of each invalidates. Declared once, in Rust.
#[derive(Clone, Default)]
pub struct Mapping {
    tables: Vec<(String, Vec<String>, Arc<MapFn>)>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.tables.iter().map(|(t, c, _)| (t, c)))
            .finish()
    }
}

impl Mapping {
    /// No table yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes of `table` record `columns` (every version of the row), and invalidate what
    /// `map` pushes for them. `map` is called once per change, by every consumer: it must
    /// depend on the change alone.
    ///
    /// # Errors
    /// `InvalidArgument` for a name that is not a plain SQL identifier (letters, digits and
    /// `_`, not starting with a digit), no columns, or a table declared twice.
    pub fn table<F>(mut self, table: &str, columns: &[&str], map: F) -> Result<Self>
    where
        F: Fn(&Change, &mut Vec<Target>) -> Result<()> + Send + Sync + 'static,
    {
        for name in std::iter::once(&table).chain(columns) {
            if !is_identifier(name) {
                return Err(Error::invalid_argument(format!(
                    "{name:?} is not a plain SQL identifier"
                )));
            }
        }
        if columns.is_empty() || self.tables.iter().any(|(t, ..)| t == table) {
            return Err(Error::invalid_argument(format!(
                "table {table:?}: declare it once, with at least one column"
            )));
        }
        let columns = columns.iter().map(|c| (*c).to_owned()).collect();
        self.tables.push((table.to_owned(), columns, Arc::new(map)));
        Ok(self)
    }

    /// The tables, with their recorded columns.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.tables
            .iter()
            .map(|(t, c, _)| (t.as_str(), c.as_slice()))
    }

    fn map(&self, change: &Change, out: &mut Vec<Target>) -> Result<()> {
        match self.tables.iter().find(|(t, ..)| *t == change.table) {
            Some((_, _, map)) => map(change, out),
            // A table the mapping no longer declares (its trigger outlived a deploy): it
            // invalidates nothing the mapping knows of.
            None => Ok(()),
        }
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// The log: its tables' names, the mapping, and the dialect. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InvalidationLog {
    dialect: Dialect,
    table: String,
    consumers: String,
    channel: String,
    mapping: Arc<Mapping>,
}

/// One entry as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) seq: i64,
    pub(crate) source: String,
    pub(crate) op: String,
    pub(crate) data: String,
}

impl InvalidationLog {
    /// The log in `dialect`, in the tables `dashcache_invalidations` and
    /// `dashcache_consumers`, for the changes `mapping` declares.
    pub fn new(dialect: Dialect, mapping: Mapping) -> Self {
        Self {
            dialect,
            table: "dashcache_invalidations".to_owned(),
            consumers: "dashcache_consumers".to_owned(),
            channel: "dashcache_invalidations".to_owned(),
            mapping: Arc::new(mapping),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The mapping.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The statements that create the log, the consumers' table and a trigger on every
    /// mapped table (idempotent: run them at every start, after the application's own
    /// migrations). Triggers are dropped and created again, so a changed mapping takes effect.
    pub fn ddl(&self) -> Vec<String> {
        ddl::statements(self)
    }

    /// Runs [`ddl`](Self::ddl) on `pool`, in one transaction, unless the database already has
    /// this very DDL (a version in `<log table>_schema`): a restart takes no lock on the
    /// mapped tables. Instances starting together are serialised (an advisory lock on
    /// PostgreSQL, `BEGIN IMMEDIATE` on SQLite); a table another transaction holds makes it
    /// wait at most 5 s, and try again twice, rather than block that table's readers behind
    /// it.
    ///
    /// # Errors
    /// `Backend` with the database's error; `Timeout` naming the lock it could not take.
    pub async fn install(&self, pool: &sqlx::AnyPool) -> Result<()> {
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            match self.install_once(pool).await {
                Ok(()) => return Ok(()),
                Err(e) if is_lock_timeout(&e) => last = Some(e),
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            "installing the invalidation log's triggers waited 5 s, three times, for a lock on a \
             mapped table that another transaction holds (a long report or a dump?)",
        )
        .with_source(last.unwrap_or(sqlx::Error::PoolTimedOut)))
    }

    async fn install_once(&self, pool: &sqlx::AnyPool) -> std::result::Result<(), sqlx::Error> {
        let statements = self.ddl();
        let version = format!(
            "{:016x}",
            statements
                .iter()
                .flat_map(|s| s.bytes())
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                })
        );
        let schema = format!("{}_schema", self.table);
        let mut conn = pool.acquire().await?;
        let begin = match self.dialect {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        };
        sqlx::query(begin).execute(&mut *conn).await?;
        let work = async {
            if self.dialect == Dialect::Postgres {
                // One installer at a time: concurrent CREATEs of one function or table fail.
                sqlx::query("SELECT pg_advisory_xact_lock(2026120601)")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("SET LOCAL lock_timeout = '5s'")
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {schema} (version TEXT NOT NULL)"
            ))
            .execute(&mut *conn)
            .await?;
            let installed: Option<String> =
                sqlx::query(&format!("SELECT MAX(version) AS version FROM {schema}"))
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get("version")?;
            if installed.as_deref() == Some(version.as_str()) {
                return Ok(());
            }
            for statement in &statements {
                sqlx::query(statement).execute(&mut *conn).await?;
            }
            sqlx::query(&format!("DELETE FROM {schema}"))
                .execute(&mut *conn)
                .await?;
            sqlx::query(&format!("INSERT INTO {schema} (version) VALUES ($1)"))
                .bind(version.clone())
                .execute(&mut *conn)
                .await?;
            Ok::<(), sqlx::Error>(())
        };
        match work.await {
            Ok(()) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(())
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e)
            }
        }
    }

    /// Appends an entry invalidating `targets`, on `conn` — inside the caller's transaction,
    /// so it commits with the change it describes (and never without it).
    ///
    /// # Errors
    /// `Backend` with the database's error; `Serialize` if the targets cannot be encoded.
    pub async fn append(&self, conn: &mut sqlx::AnyConnection, targets: &[Target]) -> Result<()> {
        let data = encode_targets(targets)?;
        let insert = format!(
            "INSERT INTO {} (source, op, data, created_at) VALUES ('', 'X', $1, {})",
            self.table,
            self.now_sql()
        );
        sqlx::query(&insert)
            .bind(data)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        if self.dialect == Dialect::Postgres {
            sqlx::query(&format!("SELECT pg_notify('{}', '')", self.channel))
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// What `entry` invalidates.
    pub(crate) fn targets(&self, entry: &Entry) -> Result<Vec<Target>> {
        let corrupt = |why: &str| {
            Error::new(
                ErrorKind::Deserialize,
                format!("invalidation log entry {} {why}", entry.seq),
            )
        };
        let op = Op::parse(&entry.op).ok_or_else(|| corrupt("has an unknown operation"))?;
        if op == Op::Explicit {
            let targets =
                decode_targets(&entry.data).ok_or_else(|| corrupt("has corrupt targets"))?;
            check_targets(&targets)?;
            return Ok(targets);
        }
        if op == Op::Truncate {
            // Every row went, and no row was recorded: the table's keys are unknown.
            return Err(corrupt(&format!("empties the table {:?}", entry.source)));
        }
        let rows: Vec<serde_json::Map<String, Value>> =
            serde_json::from_str(&entry.data).map_err(|_| corrupt("has corrupt rows"))?;
        let change = Change {
            table: entry.source.clone(),
            op,
            rows: rows.into_iter().map(Row).collect(),
        };
        let mut out = Vec::new();
        self.mapping.map(&change, &mut out)?;
        check_targets(&out)?;
        Ok(out)
    }

    /// The database's own clock in Unix milliseconds, as SQL: consumers' liveness is judged on
    /// one clock, never by comparing machines' clocks.
    pub(crate) fn now_sql(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// A stamp for `seq`, the same in every instance, and different across logs of other
    /// names (two databases that share a Redis).
    pub(crate) fn stamp(&self, seq: i64) -> i64 {
        // FNV-1a of the table name, folded into the sequence number.
        let salt = self.table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        seq ^ (salt as i64 & 0x7fff_ffff_0000_0000)
    }
}

/// Refuses targets no cache would take (an empty or over-long key): applying them would fail
/// for good, and hold up the entries after them.
fn check_targets(targets: &[Target]) -> Result<()> {
    let limits = crate::cache::Limits::default();
    for target in targets {
        limits.check_key(target.cache_key())?;
        // Its companion keys (fence, marker) are longer; they must fit too.
        limits.check_key(&crate::aside::fence::applied_key(target.cache_key()))?;
    }
    Ok(())
}

/// Explicit targets as stored: `{"k": [keys], "v": [[key, ttl ms]]}`.
fn encode_targets(targets: &[Target]) -> Result<String> {
    let mut keys = Vec::new();
    let mut versions = Vec::new();
    for target in targets {
        match target {
            Target::Key(key) => keys.push(Value::from(key.as_str())),
            Target::Version { key, ttl } => {
                let ms = ttl.to_millis()?.unwrap_or(0);
                versions.push(Value::from(vec![
                    Value::from(key.as_str()),
                    Value::from(ms),
                ]));
            }
        }
    }
    let mut map = HashMap::new();
    map.insert("k", Value::from(keys));
    map.insert("v", Value::from(versions));
    serde_json::to_string(&map).map_err(|e| {
        Error::new(ErrorKind::Serialize, "cannot encode invalidation targets").with_source(e)
    })
}

fn decode_targets(data: &str) -> Option<Vec<Target>> {
    let value: Value = serde_json::from_str(data).ok()?;
    let mut out = Vec::new();
    for key in value.get("k")?.as_array()? {
        out.push(Target::key(key.as_str()?));
    }
    for version in value.get("v")?.as_array()? {
        let key = version.get(0)?.as_str()?;
        let ttl = match version.get(1)?.as_u64()? {
            0 => Ttl::Persist,
            ms => Ttl::millis(ms),
        };
        out.push(Target::version(key, ttl));
    }
    Some(out)
}

/// Whether `e` is PostgreSQL's "canceling statement due to lock timeout" (55P03).
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

pub(crate) fn db_error(e: sqlx::Error) -> Error {
    Error::new(ErrorKind::Unavailable, format!("invalidation log: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_targets_round_trip() {
        let targets = vec![
            Target::key("app:user:1"),
            Target::version("app:authz:{1}:1:generation", Ttl::secs(60)),
        ];
        let data = encode_targets(&targets).unwrap_or_default();
        assert_eq!(decode_targets(&data), Some(targets));
        assert_eq!(decode_targets("{\"k\": [1]}"), None);
    }

    #[test]
    fn a_mapping_refuses_what_sql_could_not_name() {
        let ok = |_: &Change, _: &mut Vec<Target>| Ok(());
        assert!(Mapping::new().table("users", &["id"], ok).is_ok());
        for (table, columns) in [
            ("users; drop", &["id"][..]),
            ("1users", &["id"][..]),
            ("users", &["id\""][..]),
            ("users", &[][..]),
        ] {
            assert!(Mapping::new().table(table, columns, ok).is_err(), "{table}");
        }
        let twice = Mapping::new()
            .table("users", &["id"], ok)
            .and_then(|m| m.table("users", &["id"], ok));
        assert!(twice.is_err());
    }

    #[test]
    fn rows_map_to_targets_and_corrupt_entries_are_errors() {
        let mapping = Mapping::new()
            .table("users", &["id"], |change, out| {
                for row in &change.rows {
                    if let Some(id) = row.text("id") {
                        out.push(Target::key(format!("app:user:{id}")));
                    }
                }
                Ok(())
            })
            .unwrap_or_default();
        let log = InvalidationLog::new(Dialect::Sqlite, mapping);
        let entry = |op: &str, data: &str| Entry {
            seq: 7,
            source: "users".into(),
            op: op.into(),
            data: data.into(),
        };
        assert_eq!(
            log.targets(&entry("U", r#"[{"id":"u1"},{"id":2}]"#)).ok(),
            Some(vec![Target::key("app:user:u1"), Target::key("app:user:2")])
        );
        assert!(log.targets(&entry("Q", "[]")).is_err());
        assert!(log.targets(&entry("I", "not json")).is_err());
        assert_ne!(log.stamp(7), log.stamp(8));
    }
}
