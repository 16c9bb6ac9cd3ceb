//! Warming the service's hot sets — users and account lists — through the same cache-aside
//! path, TTLs and fences as requests.

use std::collections::HashMap;

use dashcache::Ttl;
use dashcache::aside::WarmReport;

use super::{AppState, LoadFailure};
use crate::db::{Account, User};
use crate::error::AppError;

/// What `dashcache warm` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WarmSet {
    /// User records.
    Users,
    /// Each user's account list.
    Accounts,
}

impl AppState {
    /// Loads `set` for `users` into the cache in one batch (one round trip to read what is
    /// there, the database only for the rest).
    ///
    /// # Errors
    /// A malformed id.
    pub async fn warm(&self, set: WarmSet, users: &[String]) -> Result<WarmReport, AppError> {
        let mut by_key: HashMap<String, String> = HashMap::new();
        for id in users {
            let key = match set {
                WarmSet::Users => self.key(&["user", id])?,
                WarmSet::Accounts => self.key(&["accounts", "user", id])?,
            };
            by_key.insert(key, id.clone());
        }
        let keys: Vec<&str> = by_key.keys().map(String::as_str).collect();
        let db = self.inner.db.clone();
        let aside = &self.inner.aside;
        let report = match set {
            WarmSet::Users => {
                let ttl = Ttl::from(self.inner.settings.ttl.user);
                aside
                    .warm::<User, LoadFailure, _, _>(&keys, ttl, keys.len(), |missing| {
                        let (db, by_key) = (db.clone(), by_key.clone());
                        async move {
                            let mut found = HashMap::new();
                            for key in missing {
                                let Some(id) = by_key.get(&key) else { continue };
                                if let Some(user) = db.user(id).await? {
                                    found.insert(key, user);
                                }
                            }
                            Ok(found)
                        }
                    })
                    .await
            }
            WarmSet::Accounts => {
                let ttl = Ttl::from(self.inner.settings.ttl.accounts_list);
                aside
                    .warm::<Vec<Account>, LoadFailure, _, _>(&keys, ttl, keys.len(), |missing| {
                        let (db, by_key) = (db.clone(), by_key.clone());
                        async move {
                            let mut found = HashMap::new();
                            for key in missing {
                                let Some(id) = by_key.get(&key) else { continue };
                                found.insert(key, db.accounts_of(id).await?);
                            }
                            Ok(found)
                        }
                    })
                    .await
            }
        };
        Ok(report)
    }
}
