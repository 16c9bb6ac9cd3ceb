//! The source of truth: SQLite (a file, by default) or PostgreSQL, through `sqlx`'s `Any`
//! driver, with the schema migrated and demo data seeded on first start.
//!
//! Every query goes through [`Db`], which counts them: the tests prove a cached read does not
//! touch the database by watching that count.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// A database failure (the service answers 500, or `unhealthy` on `/health`).
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct DbError(#[from] sqlx::Error);

/// Migration failures at start.
#[derive(Debug, thiserror::Error)]
#[error("database migration: {0}")]
pub struct MigrateError(#[from] sqlx::migrate::MigrateError);

type DbResult<T> = Result<T, DbError>;

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Roles (`admin`, `user`).
    pub roles: Vec<String>,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

/// A session row: the database copy of a session (write-through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// Client address at login.
    pub ip: Option<String>,
    /// Client user agent at login.
    pub user_agent: Option<String>,
    /// The global security version it was issued under.
    pub global_version: i64,
    /// The user's security version it was issued under.
    pub user_version: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A provider connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The id.
    pub id: String,
    /// Its owner.
    pub user_id: String,
    /// Provider slug (`schwab`, `plaid`).
    pub provider: String,
    /// The user's name for it.
    pub alias: String,
    /// `active` or `revoked`.
    pub status: String,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The id.
    pub id: String,
    /// Its owner.
    pub user_id: String,
    /// The connection it comes from.
    pub connection_id: String,
    /// Display name.
    pub name: String,
    /// Balance in cents.
    pub balance_cents: i64,
}

/// Security versions of one user: sessions issued under older ones are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityVersions {
    /// The global version.
    pub global: i64,
    /// The user's version.
    pub user: i64,
}

/// The database handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    queries: Arc<AtomicU64>,
    postgres: bool,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

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

impl Db {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `postgres://…`), applies the migrations,
    /// and seeds the demo data into an empty database.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn connect(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        // Each connection to an in-memory SQLite database is a database of its own: one
        // connection, or the schema would be on one and the queries on another.
        let connections = match (postgres, url.contains(":memory:")) {
            (true, _) => 16,
            (false, true) => 1,
            (false, false) => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(DbError)?;
        if !postgres {
            // Readers do not wait for the writer, and a busy database waits instead of failing.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(DbError)?;
        }
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(MigrateError)?;
        let db = Self {
            pool,
            queries: Arc::new(AtomicU64::new(0)),
            postgres,
        };
        db.seed_if_empty().await?;
        Ok(db)
    }

    /// Queries run so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether this is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// A round trip; how long it took.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> DbResult<Duration> {
        let start = Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(start.elapsed())
    }

    async fn seed_if_empty(&self) -> DbResult<()> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        if row.try_get::<i64, _>("n")? > 0 {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for ((id, name, email, _, roles), hash) in DEMO_USERS.iter().zip(demo_hashes()) {
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
        for (id, user, provider, alias) in [
            ("c1", "u1", "schwab", "brokerage"),
            ("c2", "u2", "plaid", "checking"),
        ] {
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
        tracing::info!("seeded the demo data (users u1, u2, u3)");
        Ok(())
    }

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

    /// The current security versions for a user.
    ///
    /// # Errors
    /// Database errors.
    pub async fn security_versions(&self, user: &str) -> DbResult<SecurityVersions> {
        self.count();
        let rows = sqlx::query(
            "SELECT scope, version FROM security_versions WHERE scope = 'global' OR scope = $1",
        )
        .bind(format!("user:{user}"))
        .fetch_all(&self.pool)
        .await?;
        let mut versions = SecurityVersions { global: 0, user: 0 };
        for row in rows {
            let scope: String = row.try_get("scope")?;
            let version: i64 = row.try_get("version")?;
            if scope == "global" {
                versions.global = version;
            } else {
                versions.user = version;
            }
        }
        Ok(versions)
    }

    /// Bumps the global version (`None`) or a user's; the new version.
    ///
    /// # Errors
    /// Database errors.
    pub async fn bump_security_version(&self, user: Option<&str>) -> DbResult<i64> {
        self.count();
        let scope = user.map_or_else(|| "global".to_owned(), |u| format!("user:{u}"));
        let row = sqlx::query(
            "INSERT INTO security_versions (scope, version) VALUES ($1, 1) \
             ON CONFLICT (scope) DO UPDATE SET version = security_versions.version + 1 RETURNING version",
        )
        .bind(scope)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("version")?)
    }

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

/// The demo users' password hashes, computed once per process (Argon2id with the library's
/// defaults): every fresh database of a test run reuses them.
fn demo_hashes() -> &'static [String] {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        DEMO_USERS
            .iter()
            .map(|(_, _, _, password, _)| crate::auth::hash_password(password))
            .collect()
    })
}
