//! Provider connections, accounts, and OAuth states kept while the cache is down.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Account, Connection, Db, DbError, DbResult, now_ms};

impl Db {
    /// A provider connection.
    ///
    /// # Errors
    /// Database errors.
    pub async fn connection(&self, id: &str) -> DbResult<Option<Connection>> {
        self.count();
        let row = sqlx::query(
            "SELECT id, user_id, provider, alias, status, updated_at FROM provider_connections WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| connection_row(&r)).transpose()
    }

    /// Creates or re-activates the connection of (user, provider, alias); it, as stored.
    ///
    /// # Errors
    /// Database errors.
    pub async fn upsert_connection(
        &self,
        user: &str,
        provider: &str,
        alias: &str,
        new_id: &str,
    ) -> DbResult<Connection> {
        self.count();
        let row = sqlx::query(
            "INSERT INTO provider_connections (id, user_id, provider, alias, status, updated_at) VALUES ($1, $2, $3, $4, 'active', $5) \
             ON CONFLICT (user_id, provider, alias) DO UPDATE SET status = 'active', updated_at = $5 \
             RETURNING id, user_id, provider, alias, status, updated_at",
        )
        .bind(new_id)
        .bind(user)
        .bind(provider)
        .bind(alias)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        connection_row(&row)
    }

    /// A user's accounts, by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn accounts_of(&self, user: &str) -> DbResult<Vec<Account>> {
        self.count();
        let rows = sqlx::query(
            "SELECT id, user_id, connection_id, name, balance_cents FROM accounts WHERE user_id = $1 ORDER BY id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Account {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    connection_id: r.try_get("connection_id")?,
                    name: r.try_get("name")?,
                    balance_cents: r.try_get("balance_cents")?,
                })
            })
            .collect()
    }

    /// Adds an account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_account(&self, account: &Account) -> DbResult<()> {
        self.count();
        sqlx::query(
            "INSERT INTO accounts (id, user_id, connection_id, name, balance_cents, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&account.id)
        .bind(&account.user_id)
        .bind(&account.connection_id)
        .bind(&account.name)
        .bind(account.balance_cents)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps an OAuth state one-time in the database (used while the cache is down).
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_oauth_state(
        &self,
        token_hash: &str,
        payload: &str,
        ttl: Duration,
    ) -> DbResult<()> {
        self.count();
        sqlx::query(
            "INSERT INTO oauth_states (token_hash, payload, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(payload)
        .bind(now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes an OAuth state kept in the database: one atomic `DELETE … RETURNING`, so of
    /// two concurrent callbacks only one gets it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn consume_oauth_state(&self, token_hash: &str) -> DbResult<Option<String>> {
        self.count();
        let row = sqlx::query(
            "DELETE FROM oauth_states WHERE token_hash = $1 AND expires_at > $2 RETURNING payload",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("payload"))
            .transpose()
            .map_err(DbError)
    }
}

fn connection_row(r: &AnyRow) -> DbResult<Connection> {
    Ok(Connection {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        provider: r.try_get("provider")?,
        alias: r.try_get("alias")?,
        status: r.try_get("status")?,
        updated_at: r.try_get("updated_at")?,
    })
}
