//! What the service keeps in the cache besides cache-aside copies of rows: sessions and OAuth
//! states; and the error a shared load hands to every caller.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashcache::aside::LoaderTimeout;
use dashcache::session::SessionRecord;
use serde::{Deserialize, Serialize};

use crate::db::{DbError, SessionRow};
use crate::error::AppError;

/// A session as the service keeps it: the database row's fields, cached write-through. Its id
/// is the session's handle (a keyed hash of its bearer token), never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSession {
    /// The session's handle.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// Unix ms.
    pub last_activity: i64,
    /// Client address.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Global security version at issue.
    pub global_version: i64,
    /// User security version at issue.
    pub user_version: i64,
}

fn to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl SessionRecord for ServiceSession {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn user_id(&self) -> &str {
        &self.user_id
    }
    fn created_at(&self) -> SystemTime {
        to_time(self.created_at)
    }
    fn expires_at(&self) -> SystemTime {
        to_time(self.expires_at)
    }
    fn record_activity(&mut self, at: SystemTime, ip: Option<std::net::IpAddr>) {
        self.last_activity = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if let Some(ip) = ip {
            self.ip = Some(ip.to_string());
        }
    }
}

impl From<SessionRow> for ServiceSession {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_activity: r.created_at,
            ip: r.ip,
            user_agent: r.user_agent,
            global_version: r.global_version,
            user_version: r.user_version,
        }
    }
}

/// What an OAuth state carries from `connect` to `callback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConnection {
    /// Who is connecting.
    pub user_id: String,
    /// To which provider.
    pub provider: String,
    /// Under which name.
    pub alias: String,
}

/// A loader failure, shared by every caller of one single-flight load.
#[derive(Debug, Clone)]
pub struct LoadFailure(Arc<str>);

impl From<DbError> for LoadFailure {
    fn from(e: DbError) -> Self {
        Self(e.to_string().into())
    }
}

impl From<LoaderTimeout> for LoadFailure {
    fn from(e: LoaderTimeout) -> Self {
        Self(e.to_string().into())
    }
}

impl From<LoadFailure> for AppError {
    fn from(e: LoadFailure) -> Self {
        AppError::Internal(e.0.to_string())
    }
}
