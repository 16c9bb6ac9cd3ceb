//! The handlers, one module per resource.

pub(crate) mod access;
pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod ledger;
pub(crate) mod ops;
pub(crate) mod providers;
pub(crate) mod sessions;
pub(crate) mod users;

pub(crate) use crate::ids::{check_id, new_id};

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post};

use crate::state::AppState;

/// Whether `headers` declare a JSON body (`application/json`, parameters allowed).
pub(crate) fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// How a route is rate limited (the rules themselves are in [`crate::rate_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Login attempts: few, per address, kept on local buckets when the shared ones fail.
    Login,
    /// OAuth callbacks: per address, local buckets when the shared ones fail.
    Callback,
    /// Reads of a user's data, per user (per address when anonymous).
    Reads,
    /// Writes, per user (per address when anonymous).
    Writes,
    /// Operations endpoints that are not scraped: the generous per-address rule.
    Ops,
    /// Never limited: health checks and metrics scrapes.
    Never,
}

/// One route: its method, its path pattern, how it is limited and its handler, declared
/// together so a route cannot exist without a rate-limit decision.
pub(crate) struct Endpoint {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) limit: Limit,
    pub(crate) handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, limit: Limit, handler: H) -> Endpoint
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let handler = match method {
        Method::POST => post(handler),
        Method::PATCH => patch(handler),
        Method::DELETE => delete(handler),
        _ => get(handler),
    };
    Endpoint {
        method,
        path,
        limit,
        handler,
    }
}

/// Every route of the service, each once.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Limit::{Callback, Login, Never, Ops, Reads, Writes};
    use Method as M;
    vec![
        route(M::GET, "/health", Never, ops::health),
        route(M::GET, "/metrics", Never, ops::metrics),
        route(M::GET, "/api/v1/cache/stats", Ops, ops::stats),
        route(M::POST, "/api/v1/sessions", Login, sessions::login),
        route(M::GET, "/api/v1/sessions/current", Reads, sessions::current),
        route(
            M::DELETE,
            "/api/v1/sessions/current",
            Writes,
            sessions::logout,
        ),
        route(M::GET, "/api/v1/users/{id}", Reads, users::get),
        route(M::PATCH, "/api/v1/users/{id}", Writes, users::patch),
        route(M::GET, "/api/v1/users/{id}/sessions", Reads, sessions::list),
        route(
            M::DELETE,
            "/api/v1/users/{id}/sessions",
            Writes,
            sessions::revoke_all,
        ),
        route(
            M::DELETE,
            "/api/v1/users/{id}/sessions/{handle}",
            Writes,
            sessions::revoke_one,
        ),
        route(M::POST, "/api/v1/users/{id}/roles", Writes, admin::add_role),
        route(
            M::DELETE,
            "/api/v1/users/{id}/roles/{role}",
            Writes,
            admin::remove_role,
        ),
        route(
            M::POST,
            "/api/v1/users/{id}/security/rotate",
            Writes,
            admin::rotate_user,
        ),
        route(
            M::POST,
            "/api/v1/security/rotate",
            Writes,
            admin::rotate_global,
        ),
        route(
            M::GET,
            "/api/v1/providers/callback",
            Callback,
            providers::callback,
        ),
        route(
            M::GET,
            "/api/v1/providers/{connection_id}",
            Reads,
            providers::get,
        ),
        route(
            M::POST,
            "/api/v1/providers/{slug}/connect",
            Writes,
            providers::connect,
        ),
        route(
            M::POST,
            "/api/v1/providers/{connection_id}/refresh",
            Writes,
            providers::refresh,
        ),
        route(M::GET, "/api/v1/accounts", Reads, accounts::list),
        route(M::POST, "/api/v1/accounts", Writes, accounts::create),
        route(
            M::GET,
            "/api/v1/accounts/{id}/balance",
            Reads,
            ledger::balance,
        ),
        route(
            M::GET,
            "/api/v1/accounts/{id}/holdings",
            Reads,
            ledger::holdings,
        ),
        route(
            M::GET,
            "/api/v1/accounts/{id}/transactions",
            Reads,
            ledger::transactions,
        ),
        route(
            M::POST,
            "/api/v1/accounts/{id}/transactions",
            Writes,
            ledger::add_transaction,
        ),
    ]
}
