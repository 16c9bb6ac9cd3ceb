//! The records the database hands out.

use serde::{Deserialize, Serialize};

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

/// A transaction of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The id: `t`, the posting time (13 digits of Unix ms), then random characters, so ids
    /// sort by time.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// Signed amount.
    pub amount_cents: i64,
    /// What it was.
    pub description: String,
    /// Unix ms.
    pub posted_at: i64,
}
