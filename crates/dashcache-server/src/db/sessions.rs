//! Session rows: the write-through copy of every session.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, DbResult, SessionRow, now_ms};

impl Db {
    /// Records a new session.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_session(&self, s: &SessionRow) -> DbResult<()> {
        self.count();
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at, last_activity, ip, user_agent, global_version, user_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.created_at)
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .bind(s.global_version)
        .bind(s.user_version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session by id (revoked or not).
    ///
    /// # Errors
    /// Database errors.
    pub async fn session(&self, id: &str) -> DbResult<Option<SessionRow>> {
        self.count();
        let row = sqlx::query(
            "SELECT id, user_id, created_at, expires_at, ip, user_agent, global_version, user_version, revoked_at \
             FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| session_row(&r)).transpose()
    }

    /// The live sessions of a user, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sessions_of(&self, user: &str) -> DbResult<Vec<SessionRow>> {
        self.count();
        let rows = sqlx::query(
            "SELECT id, user_id, created_at, expires_at, ip, user_agent, global_version, user_version, revoked_at \
             FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at, id",
        )
        .bind(user)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_row).collect()
    }

    /// Revokes one session; false when it was not live.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_session(&self, id: &str) -> DbResult<bool> {
        self.count();
        let done =
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every live session of a user; how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_sessions_of(&self, user: &str) -> DbResult<u64> {
        self.count();
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn session_row(r: &AnyRow) -> DbResult<SessionRow> {
    Ok(SessionRow {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        global_version: r.try_get("global_version")?,
        user_version: r.try_get("user_version")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}
