//! Ids of rows, in paths and bodies: the check every id passes before it reaches a key or a
//! query, and how new ones are made. A leaf: the routes and the state both use it.

use crate::error::AppError;

/// Ids in paths and bodies: 1–64 ASCII letters, digits, `_`, `-` or `.` (session handles carry
/// their user's hash tag after a dot). Anything else is refused before it reaches a key or a query.
pub(crate) fn check_id(id: &str) -> Result<&str, AppError> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        Ok(id)
    } else {
        Err(AppError::BadRequest(format!(
            "malformed id {:?}",
            id.chars().take(70).collect::<String>()
        )))
    }
}

/// A short random id for new rows (96 bits, URL-safe).
pub(crate) fn new_id(prefix: &str) -> Result<String, AppError> {
    let token =
        dashcache::session::new_session_id().map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(format!("{prefix}{}", &token[..16]))
}
