//! `dashcache users create`: a user (an admin, say) for a database that starts empty, the
//! password from the environment or standard input — never the command line.

use std::io::BufRead;

use super::CliError;
use crate::auth::password;
use crate::db::{Db, User};

/// The environment variable the new user's password may come from.
pub const PASSWORD_VAR: &str = "DASHCACHE_PASSWORD";

/// Who to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The id (1–64 letters, digits, `_`, `-`, `.`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// With the `admin` role too.
    pub admin: bool,
}

/// Creates `user` in the database at `database_url` (migrated first), with the password from
/// [`PASSWORD_VAR`] or the first line of standard input.
///
/// # Errors
/// A malformed id, a password shorter than 12 characters, a taken id, or database errors.
pub async fn create(database_url: &str, user: NewUser) -> Result<String, CliError> {
    crate::ids::check_id(&user.id).map_err(|e| e.to_string())?;
    crate::text::free_text("name", &user.name, 100).map_err(|e| e.to_string())?;
    crate::text::email("email", &user.email).map_err(|e| e.to_string())?;
    let secret = match std::env::var(PASSWORD_VAR) {
        Ok(secret) => secret,
        Err(_) => {
            eprintln!("password for {} (one line on standard input):", user.id);
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if secret.chars().count() < 12 || secret.len() > 1024 {
        return Err("a password has 12 to 1024 characters".into());
    }
    let db = Db::connect(database_url).await?;
    let mut roles = vec!["user".to_owned()];
    if user.admin {
        roles.insert(0, "admin".to_owned());
    }
    let record = User {
        id: user.id,
        name: user.name,
        email: user.email,
        roles,
        updated_at: 0,
    };
    let hash = tokio::task::spawn_blocking(move || password::hash(&secret)).await?;
    let created = db
        .create_user(&record, &hash)
        .await
        .map_err(|e| -> CliError {
            if e.is_unique_violation() {
                format!(
                    "the e-mail address {} belongs to another user",
                    record.email
                )
                .into()
            } else {
                e.into()
            }
        })?;
    // Which database: a DATABASE_URL not exported sends the user into the default SQLite file.
    let shown = dashcache::url::mask_url(database_url);
    if !created {
        return Err(format!("a user {} already exists in {shown}", record.id).into());
    }
    Ok(format!(
        "created {} ({}) in {shown}",
        record.id,
        record.roles.join(", ")
    ))
}
