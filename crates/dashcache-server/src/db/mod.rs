//! The source of truth: SQLite (a file, by default) or PostgreSQL, through `sqlx`'s `Any`
//! driver, with the schema migrated on start. Queries by subject: `users`, `sessions`,
//! `security`, `providers`; the records they return in `model`; demo data in `seed`.
//!
//! Every query goes through [`Db`], which counts them: the tests prove a cached read does not
//! touch the database by watching that count.

mod ledger;
mod model;
mod providers;
mod security;
mod seed;
mod sessions;
mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use model::{Account, Connection, SecurityVersions, SessionRow, Transaction, User};
pub use seed::{DEMO_CONNECTIONS, DEMO_USERS};

/// A database failure (the service answers 500, or `unhealthy` on `/health`).
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct DbError(#[from] sqlx::Error);

impl DbError {
    /// Whether a unique constraint refused the write (an e-mail address already in use).
    pub fn is_unique_violation(&self) -> bool {
        matches!(&self.0, sqlx::Error::Database(e) if e.is_unique_violation())
    }
}

/// Migration failures at start.
#[derive(Debug, thiserror::Error)]
#[error("database migration: {0}")]
pub struct MigrateError(#[from] sqlx::migrate::MigrateError);

/// The database could not be reached at start: where, and why.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the database at {url} (DATABASE_URL or --database-url): {cause}. Is the \
     server running, and the URL right?"
)]
pub struct ConnectError {
    /// The URL, masked.
    url: String,
    /// What the driver said.
    cause: String,
}

pub(crate) type DbResult<T> = Result<T, DbError>;

/// The database handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    queries: Arc<AtomicU64>,
    postgres: bool,
    url: DbUrl,
}

/// The URL the database was opened with: it may carry a password, so it shows masked.
#[derive(Clone)]
struct DbUrl(Arc<str>);

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&dashcache::url::mask_url(&self.0))
    }
}

/// Why a pool could not open: a pool that timed out says only that, so one connection is tried
/// for the driver's own reason (a refused connection, a wrong password, no such database).
async fn connect_cause(url: &str, e: sqlx::Error) -> String {
    use sqlx::Connection as _;
    if !matches!(e, sqlx::Error::PoolTimedOut) {
        return e.to_string();
    }
    match tokio::time::timeout(Duration::from_secs(5), sqlx::AnyConnection::connect(url)).await {
        Ok(Err(cause)) => cause.to_string(),
        Ok(Ok(_)) => "it accepts connections only now (it was starting?)".to_owned(),
        Err(_) => "no answer within 10 s".to_owned(),
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Db {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `postgres://…`) and applies the
    /// migrations. Seeding demo data is a separate step
    /// ([`seed_demo_if_empty`](Self::seed_demo_if_empty)).
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn connect(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let db = Self::open(url).await?;
        sqlx::migrate!("./migrations")
            .run(&db.pool)
            .await
            .map_err(MigrateError)?;
        Ok(db)
    }

    /// Connects to `url` and changes nothing: no migration, and a SQLite file is opened
    /// read-only (never created). For checks.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn inspect(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let read_only = url.replace("mode=rwc", "mode=ro");
        Self::open(&read_only).await
    }

    async fn open(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        // Each connection to an in-memory SQLite database is a database of its own: one
        // connection, or the schema would be on one and the queries on another.
        let connections = match (postgres, url.contains(":memory:")) {
            (true, _) => 16,
            (false, true) => 1,
            (false, false) => 8,
        };
        let pool = match AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                return Err(ConnectError {
                    url: dashcache::url::mask_url(url),
                    cause: connect_cause(url, e).await,
                }
                .into());
            }
        };
        if !postgres && !url.contains("mode=ro") {
            // Readers do not wait for the writer, and a busy database waits instead of failing.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(DbError)?;
        }
        Ok(Self {
            pool,
            queries: Arc::new(AtomicU64::new(0)),
            postgres,
            url: DbUrl(Arc::from(url)),
        })
    }

    /// The URL another connection (the invalidation log's consumer) opens the same database
    /// with; `None` for an in-memory SQLite database, which no other connection can see.
    pub fn shared_url(&self) -> Option<&str> {
        (!self.url.0.contains(":memory:") && !self.url.0.contains("mode=memory"))
            .then_some(&*self.url.0)
    }

    /// Queries run so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether this is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    pub(crate) fn count(&self) {
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
}
