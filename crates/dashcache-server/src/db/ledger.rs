//! Sealed provider credentials and transactions.

use sqlx::Row;

use super::{Db, DbError, DbResult, Transaction, now_ms};

impl Db {
    /// The sealed credential of a connection (base64 of what `Keyring::seal` made).
    ///
    /// # Errors
    /// Database errors.
    pub async fn sealed_credential(&self, connection: &str) -> DbResult<Option<String>> {
        self.count();
        let row = sqlx::query("SELECT sealed FROM provider_credentials WHERE connection_id = $1")
            .bind(connection)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("sealed"))
            .transpose()
            .map_err(DbError)
    }

    /// Stores (or replaces) the sealed credential of a connection.
    ///
    /// # Errors
    /// Database errors.
    pub async fn put_sealed_credential(&self, connection: &str, sealed: &str) -> DbResult<()> {
        self.count();
        sqlx::query(
            "INSERT INTO provider_credentials (connection_id, sealed, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (connection_id) DO UPDATE SET sealed = $2, updated_at = $3",
        )
        .bind(connection)
        .bind(sealed)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One page of an account's transactions, newest first: at most `limit` with ids below
    /// `before` (all when `None`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn transactions(
        &self,
        account: &str,
        before: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<Transaction>> {
        self.count();
        let rows = sqlx::query(
            "SELECT id, account_id, amount_cents, description, posted_at FROM transactions \
             WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(account)
        // Every id starts with `t`: `u` is above them all.
        .bind(before.unwrap_or("u"))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Transaction {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    amount_cents: r.try_get("amount_cents")?,
                    description: r.try_get("description")?,
                    posted_at: r.try_get("posted_at")?,
                })
            })
            .collect()
    }

    /// Adds a transaction.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_transaction(&self, t: &Transaction) -> DbResult<()> {
        self.count();
        sqlx::query(
            "INSERT INTO transactions (id, account_id, amount_cents, description, posted_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.id)
        .bind(&t.account_id)
        .bind(t.amount_cents)
        .bind(&t.description)
        .bind(t.posted_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The ids of a connection's accounts.
    ///
    /// # Errors
    /// Database errors.
    pub async fn account_ids_of_connection(&self, connection: &str) -> DbResult<Vec<String>> {
        self.count();
        let rows = sqlx::query("SELECT id FROM accounts WHERE connection_id = $1 ORDER BY id")
            .bind(connection)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(DbError))
            .collect()
    }
}
