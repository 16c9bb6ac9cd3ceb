//! Permission checks: the role model, evaluated from the database and cached per user.

use super::AppState;
use crate::db::DbError;
use crate::error::AppError;

/// The role model: admins may do anything; users may read and manage their own data (checked
/// by the handlers), nothing on others.
pub fn role_allows(roles: &[String], _resource: &str, _action: &str) -> bool {
    roles.iter().any(|r| r == "admin")
}

impl AppState {
    /// Whether `user` may `action` on `resource`: cached, invalidated on role changes; a failing
    /// cache falls through to the database.
    ///
    /// # Errors
    /// Database errors.
    pub async fn allowed(
        &self,
        user: &str,
        resource: &str,
        action: &str,
    ) -> Result<bool, AppError> {
        let db = self.inner.db.clone();
        let who = user.to_owned();
        let (resource_owned, action_owned) = (resource.to_owned(), action.to_owned());
        let allowed = self
            .inner
            .permissions
            .check(user, resource, action, || async move {
                let roles = db.roles(&who).await?;
                Ok::<_, DbError>(role_allows(&roles, &resource_owned, &action_owned))
            })
            .await?;
        Ok(allowed)
    }

    /// Makes `user`'s cached permission checks obsolete (after a role change).
    pub async fn invalidate_permissions(&self, user: &str) {
        if let Err(e) = self.inner.permissions.invalidate_user(user).await {
            // The answers expire within CACHE_TTL_PERMISSIONS; meanwhile the old grant stands,
            // so say so loudly.
            tracing::error!(
                user,
                code = e.code(),
                "could not invalidate cached permissions"
            );
        }
    }
}
