//! Security versions: bumping one revokes every session issued under the old one.

use sqlx::Row;

use super::{Db, DbResult, SecurityVersions};

impl Db {
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
}
