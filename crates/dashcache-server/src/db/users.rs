//! Users, their roles and password hashes.

use sqlx::Row;

use super::{Db, DbError, DbResult, User, now_ms};

impl Db {
    /// A user with their roles.
    ///
    /// # Errors
    /// Database errors.
    pub async fn user(&self, id: &str) -> DbResult<Option<User>> {
        self.count();
        let Some(row) = sqlx::query("SELECT id, name, email, updated_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let roles = self.roles(id).await?;
        Ok(Some(User {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            roles,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    /// A user's roles, sorted.
    ///
    /// # Errors
    /// Database errors.
    pub async fn roles(&self, user: &str) -> DbResult<Vec<String>> {
        self.count();
        let rows = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("role").map_err(DbError))
            .collect()
    }

    /// The password hash of a user.
    ///
    /// # Errors
    /// Database errors.
    pub async fn password_hash(&self, user: &str) -> DbResult<Option<String>> {
        self.count();
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("password_hash"))
            .transpose()
            .map_err(DbError)
    }

    /// Changes a user's name and e-mail; false when there is no such user.
    ///
    /// # Errors
    /// Database errors.
    pub async fn update_user(
        &self,
        id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> DbResult<bool> {
        self.count();
        let done = sqlx::query(
            "UPDATE users SET name = COALESCE($1, name), email = COALESCE($2, email), updated_at = $3 WHERE id = $4",
        )
        .bind(name)
        .bind(email)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Grants a role; false when the user already had it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_role(&self, user: &str, role: &str) -> DbResult<bool> {
        self.count();
        let done = sqlx::query(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT (user_id, role) DO NOTHING",
        )
        .bind(user)
        .bind(role)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes a role; false when the user did not have it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn remove_role(&self, user: &str, role: &str) -> DbResult<bool> {
        self.count();
        let done = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(user)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many users there are.
    ///
    /// # Errors
    /// Database errors.
    pub async fn user_count(&self) -> DbResult<i64> {
        self.count();
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user with a password hash and roles; false when the id is taken.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_user(&self, user: &User, password_hash: &str) -> DbResult<bool> {
        self.count();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO users (id, name, email, password_hash, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(&user.email)
        .bind(password_hash)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for role in &user.roles {
            sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                .bind(&user.id)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

impl Db {
    /// Every user id, sorted (for warming).
    ///
    /// # Errors
    /// Database errors.
    pub async fn user_ids(&self) -> DbResult<Vec<String>> {
        self.count();
        let rows = sqlx::query("SELECT id FROM users ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(super::DbError))
            .collect()
    }
}
