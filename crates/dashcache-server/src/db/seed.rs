//! Demo data: three users with known passwords, their connections and accounts.

use std::sync::OnceLock;

use super::{Db, DbResult, now_ms};

/// The demo users: (id, name, e-mail, password, roles).
pub const DEMO_USERS: [(&str, &str, &str, &str, &[&str]); 3] = [
    (
        "u1",
        "Alice Admin",
        "alice@example.com",
        "alice-password",
        &["admin", "user"],
    ),
    ("u2", "Bob", "bob@example.com", "bob-password", &["user"]),
    (
        "u3",
        "Carol",
        "carol@example.com",
        "carol-password",
        &["user"],
    ),
];

/// The demo users' provider connections: (id, user, provider, alias).
pub const DEMO_CONNECTIONS: [(&str, &str, &str, &str); 2] = [
    ("c1", "u1", "schwab", "brokerage"),
    ("c2", "u2", "plaid", "checking"),
];

impl Db {
    /// Writes the demo data (users u1–u3, with [`DEMO_USERS`]' known passwords hashed by `hash`,
    /// their connections and accounts) into a database that has no user yet, and says whether
    /// it did.
    ///
    /// # Errors
    /// Database errors.
    pub async fn seed_demo_if_empty(&self, hash: fn(&str) -> String) -> DbResult<bool> {
        if self.user_count().await? > 0 {
            return Ok(false);
        }
        match self.seed_demo(hash).await {
            // Another instance starting at the same moment seeded it first.
            Err(e) if e.is_unique_violation() => Ok(false),
            done => done,
        }
    }

    async fn seed_demo(&self, hash: fn(&str) -> String) -> DbResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for ((id, name, email, _, roles), hash) in DEMO_USERS.iter().zip(demo_hashes(hash)) {
            sqlx::query("INSERT INTO users (id, name, email, password_hash, updated_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(*id)
                .bind(*name)
                .bind(*email)
                .bind(hash.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for role in *roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                    .bind(*id)
                    .bind(*role)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for (id, user, provider, alias) in DEMO_CONNECTIONS {
            sqlx::query("INSERT INTO provider_connections (id, user_id, provider, alias, status, updated_at) VALUES ($1, $2, $3, $4, 'active', $5)")
                .bind(id)
                .bind(user)
                .bind(provider)
                .bind(alias)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        for (id, user, conn, name, cents) in [
            ("a1", "u1", "c1", "Brokerage", 1_250_000i64),
            ("a2", "u1", "c1", "IRA", 530_000),
            ("a3", "u2", "c2", "Checking", 42_000),
        ] {
            sqlx::query("INSERT INTO accounts (id, user_id, connection_id, name, balance_cents, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id)
                .bind(user)
                .bind(conn)
                .bind(name)
                .bind(cents)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO security_versions (scope, version) VALUES ('global', 0)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The demo users' password hashes, computed once per process (Argon2id with the library's
/// defaults): every fresh database of a test run reuses them.
fn demo_hashes(hash: fn(&str) -> String) -> &'static [String] {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        DEMO_USERS
            .iter()
            .map(|(_, _, _, password, _)| hash(password))
            .collect()
    })
}
