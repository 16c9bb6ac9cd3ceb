//! The DDL of the log: its table, the consumers' table, and a trigger per mapped table, for
//! PostgreSQL and for SQLite. Identifiers come from the mapping, which accepts plain ones only.

use super::{Dialect, InvalidationLog};

pub(super) fn statements(log: &InvalidationLog) -> Vec<String> {
    match log.dialect {
        Dialect::Postgres => postgres(log),
        Dialect::Sqlite => sqlite(log),
    }
}

fn postgres(log: &InvalidationLog) -> Vec<String> {
    let (table, consumers, channel) = (&log.table, &log.consumers, &log.channel);
    let function = format!("{table}_row");
    let mut out = vec![
        // `xid` orders entries by transaction for the snapshot-based cursor; `created_at` is
        // the database's clock when the change was made.
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
               seq BIGSERIAL PRIMARY KEY, \
               xid xid8 NOT NULL DEFAULT pg_current_xact_id(), \
               source TEXT NOT NULL, \
               op TEXT NOT NULL, \
               data TEXT NOT NULL, \
               created_at BIGINT NOT NULL)"
        ),
        format!("CREATE INDEX IF NOT EXISTS {table}_by_xid ON {table} (xid)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {consumers} (\
               id TEXT PRIMARY KEY, horizon BIGINT NOT NULL, seen_at BIGINT NOT NULL)"
        ),
        // One function for every table: the trigger passes the columns to record.
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$
DECLARE
  old_cols jsonb;
  new_cols jsonb;
  rows_json jsonb;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO {table} (source, op, data, created_at)
      VALUES (TG_TABLE_NAME, 'T', '[]', (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    SELECT jsonb_object_agg(c, to_jsonb(OLD) -> c) INTO old_cols FROM unnest(TG_ARGV) AS c;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    SELECT jsonb_object_agg(c, to_jsonb(NEW) -> c) INTO new_cols FROM unnest(TG_ARGV) AS c;
  END IF;
  rows_json := CASE
    WHEN old_cols IS NULL THEN jsonb_build_array(new_cols)
    WHEN new_cols IS NULL OR old_cols = new_cols THEN jsonb_build_array(old_cols)
    ELSE jsonb_build_array(old_cols, new_cols)
  END;
  INSERT INTO {table} (source, op, data, created_at)
    VALUES (TG_TABLE_NAME, left(TG_OP, 1), rows_json::text,
            (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
  PERFORM pg_notify('{channel}', '');
  RETURN NULL;
END
$body$"
        ),
    ];
    for (name, columns) in log.mapping.tables() {
        let args = columns
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!("DROP TRIGGER IF EXISTS {table} ON {name}"));
        out.push(format!(
            "CREATE TRIGGER {table} AFTER INSERT OR UPDATE OR DELETE ON {name} \
             FOR EACH ROW EXECUTE FUNCTION {function}({args})"
        ));
        // TRUNCATE fires no row trigger: one entry for the statement.
        out.push(format!("DROP TRIGGER IF EXISTS {table}_truncate ON {name}"));
        out.push(format!(
            "CREATE TRIGGER {table}_truncate AFTER TRUNCATE ON {name} \
             FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        ));
    }
    out
}

fn sqlite(log: &InvalidationLog) -> Vec<String> {
    let (table, consumers) = (&log.table, &log.consumers);
    // Unix milliseconds by SQLite's clock.
    let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    let mut out = vec![
        // AUTOINCREMENT: a sequence number is never reused, even after the newest entries
        // were deleted, so a consumer's cursor never meets a number twice.
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
               seq INTEGER PRIMARY KEY AUTOINCREMENT, \
               source TEXT NOT NULL, \
               op TEXT NOT NULL, \
               data TEXT NOT NULL, \
               created_at INTEGER NOT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {consumers} (\
               id TEXT PRIMARY KEY, horizon INTEGER NOT NULL, seen_at INTEGER NOT NULL)"
        ),
    ];
    for (name, columns) in log.mapping.tables() {
        let object = |row: &str| {
            let pairs = columns
                .iter()
                .map(|c| format!("'{c}', {row}.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("json_object({pairs})")
        };
        let (old, new) = (object("OLD"), object("NEW"));
        let insert = |op: &str, rows: &str| {
            format!(
                "INSERT INTO {table} (source, op, data, created_at) \
                 VALUES ('{name}', '{op}', {rows}, {now});"
            )
        };
        for (event, op, rows) in [
            ("INSERT", "I", format!("json_array({new})")),
            (
                "UPDATE",
                "U",
                format!(
                    "CASE WHEN {old} = {new} THEN json_array({new}) \
                     ELSE json_array({old}, {new}) END"
                ),
            ),
            ("DELETE", "D", format!("json_array({old})")),
        ] {
            let trigger = format!("{table}_{name}_{}", event.to_ascii_lowercase());
            out.push(format!("DROP TRIGGER IF EXISTS {trigger}"));
            out.push(format!(
                "CREATE TRIGGER {trigger} AFTER {event} ON {name} BEGIN {} END",
                insert(op, &rows)
            ));
        }
    }
    out
}
