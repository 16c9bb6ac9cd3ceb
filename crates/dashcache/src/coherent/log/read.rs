//! Reading the log in commit order, and the consumers' registrations.

use sqlx::{AnyConnection, Row as _};

use super::{Dialect, Entry, InvalidationLog, db_error};
use crate::error::Result;

/// Where a consumer stands in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// PostgreSQL: the snapshot last read under. Unread entries can only belong to
    /// transactions that were running then, or that began after `xmax`.
    Snapshot { xmax: u64, running: Vec<u64> },
    /// SQLite: the last sequence number read.
    Seq(i64),
}

impl Cursor {
    /// Everything below it has been read: the horizon a consumer registers (a transaction id
    /// on PostgreSQL, a sequence number on SQLite).
    pub(crate) fn horizon(&self) -> i64 {
        match self {
            Self::Snapshot { xmax, running } => {
                let low = running
                    .iter()
                    .copied()
                    .chain([*xmax])
                    .min()
                    .unwrap_or(*xmax);
                i64::try_from(low).unwrap_or(i64::MAX)
            }
            Self::Seq(seq) => *seq,
        }
    }

    /// A cursor that reads everything from `horizon` on.
    pub(crate) fn from_horizon(dialect: Dialect, horizon: i64) -> Self {
        match dialect {
            Dialect::Postgres => Self::Snapshot {
                xmax: u64::try_from(horizon).unwrap_or(0),
                running: Vec::new(),
            },
            Dialect::Sqlite => Self::Seq(horizon),
        }
    }
}

/// What one read of the log found.
pub(crate) struct Read {
    /// Where to read from next.
    pub(crate) next: Cursor,
    /// The database is behind the cursor (a restore, or a failover to a replica that lagged):
    /// what was applied before cannot be trusted to match it.
    pub(crate) went_back: bool,
}

impl InvalidationLog {
    /// Hands every entry `cursor` has not read to `on_page`, a page of at most `page` at a
    /// time and in sequence order (so memory holds one page, whatever the backlog); where to
    /// read from next.
    pub(crate) async fn read(
        &self,
        conn: &mut AnyConnection,
        cursor: &Cursor,
        page: i64,
        on_page: &mut (dyn FnMut(Vec<Entry>) + Send),
    ) -> Result<Read> {
        match cursor {
            Cursor::Snapshot { xmax, running } => {
                self.read_pg(conn, *xmax, running, page, on_page).await
            }
            Cursor::Seq(seq) => self.read_sqlite(conn, *seq, page, on_page).await,
        }
    }

    async fn read_pg(
        &self,
        conn: &mut AnyConnection,
        xmax: u64,
        running: &[u64],
        page: i64,
        on_page: &mut (dyn FnMut(Vec<Entry>) + Send),
    ) -> Result<Read> {
        // One statement, one snapshot: the entries and the snapshot they were read under.
        let sql = format!(
            "WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS snap) \
             SELECT pg_snapshot_xmax(s.snap)::text AS xmax, \
                    COALESCE((SELECT string_agg(x::text, ',') FROM pg_snapshot_xip(s.snap) AS x), '') AS xip, \
                    l.seq, l.source, l.op, l.data \
             FROM s LEFT JOIN LATERAL ( \
                 SELECT seq, source, op, data FROM {} \
                 WHERE (xid >= $1::xid8 OR xid = ANY (string_to_array($2, ',')::xid8[])) AND seq > $3 \
                 ORDER BY seq LIMIT $4) AS l ON true \
             ORDER BY l.seq",
            self.table
        );
        let running_text = running
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut next = None;
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(&sql)
                .bind(xmax.to_string())
                .bind(running_text.clone())
                .bind(after)
                .bind(page)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
            if next.is_none()
                && let Some(first) = rows.first()
            {
                let now: String = first.try_get("xmax").map_err(db_error)?;
                let xip: String = first.try_get("xip").map_err(db_error)?;
                let now: u64 = now.parse().unwrap_or(0);
                if now < xmax {
                    // Transaction ids never go back in one database's life.
                    return Ok(Read {
                        next: Cursor::Snapshot {
                            xmax: now,
                            running: xip.split(',').filter_map(|x| x.parse().ok()).collect(),
                        },
                        went_back: true,
                    });
                }
                next = Some(Cursor::Snapshot {
                    xmax: now,
                    running: xip.split(',').filter_map(|x| x.parse().ok()).collect(),
                });
            }
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                let Some(seq) = row.try_get::<Option<i64>, _>("seq").map_err(db_error)? else {
                    continue;
                };
                after = after.max(seq);
                entries.push(Entry {
                    seq,
                    source: row.try_get("source").map_err(db_error)?,
                    op: row.try_get("op").map_err(db_error)?,
                    data: row.try_get("data").map_err(db_error)?,
                });
            }
            let full = entries.len() as i64 >= page;
            on_page(entries);
            if !full {
                break;
            }
        }
        // The first page's snapshot: everything visible in it was read (later pages only
        // add entries committed since, which the next read may meet again: applying is
        // idempotent).
        let next = next.unwrap_or(Cursor::Snapshot {
            xmax,
            running: running.to_vec(),
        });
        Ok(Read {
            next,
            went_back: false,
        })
    }

    async fn read_sqlite(
        &self,
        conn: &mut AnyConnection,
        seq: i64,
        page: i64,
        on_page: &mut (dyn FnMut(Vec<Entry>) + Send),
    ) -> Result<Read> {
        let sql = format!(
            "SELECT seq, source, op, data FROM {} WHERE seq > $1 ORDER BY seq LIMIT $2",
            self.table
        );
        // A log whose newest entry is below the cursor was replaced by an older copy.
        let newest: Option<i64> =
            sqlx::query(&format!("SELECT MAX(seq) AS seq FROM {}", self.table))
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?
                .try_get("seq")
                .map_err(db_error)?;
        if newest.is_some_and(|n| n < seq) {
            return Ok(Read {
                next: Cursor::Seq(newest.unwrap_or(0)),
                went_back: true,
            });
        }
        let mut last = seq;
        loop {
            let rows = sqlx::query(&sql)
                .bind(last)
                .bind(page)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.try_get("seq").map_err(db_error)?;
                last = last.max(seq);
                entries.push(Entry {
                    seq,
                    source: row.try_get("source").map_err(db_error)?,
                    op: row.try_get("op").map_err(db_error)?,
                    data: row.try_get("data").map_err(db_error)?,
                });
            }
            let full = entries.len() as i64 >= page;
            on_page(entries);
            if !full {
                break;
            }
        }
        Ok(Read {
            next: Cursor::Seq(last),
            went_back: false,
        })
    }

    /// Where a new consumer starts: the lowest horizon of the registered consumers (below it
    /// every entry has reached the shared cache), or — when none is registered — the end of
    /// the log, with `true`: nothing proves what the shared cache holds.
    pub(crate) async fn start(&self, conn: &mut AnyConnection) -> Result<(Cursor, bool)> {
        let lowest: Option<i64> = sqlx::query(&format!(
            "SELECT MIN(horizon) AS low FROM {}",
            self.consumers
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?
        .try_get("low")
        .map_err(db_error)?;
        if let Some(low) = lowest {
            return Ok((Cursor::from_horizon(self.dialect, low), false));
        }
        let end = match self.dialect {
            Dialect::Postgres => {
                let row = sqlx::query(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax, \
                     COALESCE((SELECT string_agg(x::text, ',') FROM pg_snapshot_xip(pg_current_snapshot()) AS x), '') AS xip",
                )
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
                let xmax: String = row.try_get("xmax").map_err(db_error)?;
                let xip: String = row.try_get("xip").map_err(db_error)?;
                Cursor::Snapshot {
                    xmax: xmax.parse().unwrap_or(0),
                    running: xip.split(',').filter_map(|x| x.parse().ok()).collect(),
                }
            }
            Dialect::Sqlite => {
                let seq: Option<i64> =
                    sqlx::query(&format!("SELECT MAX(seq) AS seq FROM {}", self.table))
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_error)?
                        .try_get("seq")
                        .map_err(db_error)?;
                Cursor::Seq(seq.unwrap_or(0))
            }
        };
        Ok((end, true))
    }

    /// Registers consumer `id` at `horizon`.
    pub(crate) async fn register(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        horizon: i64,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {} (id, horizon, seen_at) VALUES ($1, $2, {})",
            self.consumers,
            self.now_sql()
        ))
        .bind(id.to_owned())
        .bind(horizon)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Records that consumer `id` is alive at `horizon`; false when it is no longer
    /// registered (it was away past the liveness window: entries it needed may be gone).
    pub(crate) async fn heartbeat(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        horizon: i64,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET horizon = $1, seen_at = {} WHERE id = $2",
            self.consumers,
            self.now_sql()
        ))
        .bind(horizon)
        .bind(id.to_owned())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes consumers not seen for `liveness_ms`, then every entry below the lowest
    /// horizon of those left; how many entries went.
    pub(crate) async fn retain(&self, conn: &mut AnyConnection, liveness_ms: i64) -> Result<u64> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE seen_at < {} - $1",
            self.consumers,
            self.now_sql()
        ))
        .bind(liveness_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        let sql = match self.dialect {
            Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE xid < (SELECT MIN(horizon) FROM {c})::text::xid8",
                t = self.table,
                c = self.consumers
            ),
            Dialect::Sqlite => format!(
                "DELETE FROM {t} WHERE seq <= (SELECT MIN(horizon) FROM {c})",
                t = self.table,
                c = self.consumers
            ),
        };
        let done = sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}
