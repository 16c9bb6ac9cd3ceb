//! A stand-in for a brokerage's API: real HTTP, with the faults of a real one on demand.
//!
//! - `POST /oauth/token` exchanges an authorization code for an access token (`pat_…`).
//! - `GET /v1/accounts/{id}/balance` and `GET /v1/accounts/{id}/holdings` need
//!   `Authorization: Bearer pat_…` and answer deterministic data with the time it was read.
//! - `GET /_admin/stats` counts the calls by route; `POST /_admin/knobs` sets the latency, the
//!   error rate and whether it is down (the same knobs as [`Knobs`]; any of the three, the
//!   others kept) and answers with all three.
//!
//! A real provider checks its tokens against what it issued; this one checks their form only,
//! so that it can restart without invalidating the service's stored credentials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The upstream's behaviour, changeable while it runs.
#[derive(Debug, Default)]
pub struct Knobs {
    latency_micros: AtomicU64,
    /// Parts per million of data calls answered 500.
    error_ppm: AtomicU64,
    down: AtomicBool,
    balance_calls: AtomicU64,
    holdings_calls: AtomicU64,
    token_calls: AtomicU64,
}

/// What [`Knobs`] are set to, and the calls counted so far (the `/_admin` endpoints' body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KnobSettings {
    /// Added to every data call.
    pub latency_ms: u64,
    /// The share of data calls answered 500, 0.0–1.0.
    pub error_rate: f64,
    /// Every call answers 503 at once.
    pub down: bool,
}

/// Calls counted by route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamCalls {
    /// `GET /v1/accounts/{id}/balance`.
    pub balance: u64,
    /// `GET /v1/accounts/{id}/holdings`.
    pub holdings: u64,
    /// `POST /oauth/token`.
    pub token: u64,
}

impl Knobs {
    /// Knobs set to `settings`.
    pub fn new(settings: KnobSettings) -> Arc<Self> {
        let knobs = Arc::new(Self::default());
        knobs.set(settings);
        knobs
    }

    /// Changes every knob at once.
    pub fn set(&self, settings: KnobSettings) {
        self.latency_micros
            .store(settings.latency_ms.saturating_mul(1000), Ordering::Relaxed);
        let ppm = (settings.error_rate.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.error_ppm.store(ppm, Ordering::Relaxed);
        self.down.store(settings.down, Ordering::Relaxed);
    }

    /// What the knobs are set to.
    pub fn settings(&self) -> KnobSettings {
        KnobSettings {
            latency_ms: self.latency_micros.load(Ordering::Relaxed) / 1000,
            error_rate: self.error_ppm.load(Ordering::Relaxed) as f64 / 1_000_000.0,
            down: self.down.load(Ordering::Relaxed),
        }
    }

    /// The calls counted so far.
    pub fn calls(&self) -> UpstreamCalls {
        UpstreamCalls {
            balance: self.balance_calls.load(Ordering::Relaxed),
            holdings: self.holdings_calls.load(Ordering::Relaxed),
            token: self.token_calls.load(Ordering::Relaxed),
        }
    }

    /// Waits the latency, then fails as the knobs say.
    async fn behave(&self) -> Result<(), Response> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StatusCode::SERVICE_UNAVAILABLE.into_response());
        }
        let latency = self.latency_micros.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        if ppm > 0 && rand::rng().random_range(0..1_000_000) < ppm {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response());
        }
        Ok(())
    }
}

/// The upstream's router over `knobs`.
pub fn router(knobs: Arc<Knobs>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/v1/accounts/{id}/balance", get(balance))
        .route("/v1/accounts/{id}/holdings", get(holdings))
        .route("/_admin/stats", get(stats))
        .route("/_admin/knobs", post(set_knobs))
        .with_state(knobs)
}

/// An upstream serving on its own task; stops when dropped.
#[derive(Debug)]
pub struct RunningUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its knobs.
    pub knobs: Arc<Knobs>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningUpstream {
    /// Serves the upstream on `addr` (port 0: any free port) with `settings`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start(addr: SocketAddr, settings: KnobSettings) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let knobs = Knobs::new(settings);
        let app = router(Arc::clone(&knobs));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the upstream stopped");
            }
        });
        Ok(Self { addr, knobs, task })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    code: String,
}

async fn token(State(knobs): State<Arc<Knobs>>, body: Json<TokenRequest>) -> Response {
    knobs.token_calls.fetch_add(1, Ordering::Relaxed);
    if knobs.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if body.code.is_empty() || body.code.len() > 512 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    Json(json!({"access_token": access_token(), "token_type": "bearer"})).into_response()
}

/// A fresh access token of the form this provider accepts (`pat_` and 48 hex digits): what
/// it issues for a code, and what the demo's connections are given to stand in for one.
pub fn access_token() -> String {
    let mut raw = [0u8; 24];
    rand::rng().fill(&mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("pat_{hex}")
}

/// Whether the request carries a well-formed access token.
fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.len() == 52 && t.starts_with("pat_"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A number from `id` and `salt`, stable across runs.
fn seeded(id: &str, salt: u64) -> u64 {
    id.bytes().fold(salt ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn valid_account(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What every data call goes through: the token, the account id, then the knobs.
async fn admit(knobs: &Knobs, headers: &HeaderMap, id: &str) -> Result<(), Response> {
    if !authorized(headers) {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    }
    if !valid_account(id) {
        return Err(StatusCode::NOT_FOUND.into_response());
    }
    knobs.behave().await
}

async fn balance(
    State(knobs): State<Arc<Knobs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    knobs.balance_calls.fetch_add(1, Ordering::Relaxed);
    if let Err(r) = admit(&knobs, &headers, &id).await {
        return r;
    }
    let current = i64::try_from(seeded(&id, 1) % 10_000_000).unwrap_or(0);
    Json(json!({
        "account_id": id,
        "currency": "USD",
        "current_cents": current,
        "available_cents": current - i64::try_from(seeded(&id, 2) % 50_000).unwrap_or(0),
        "as_of": now_ms(),
    }))
    .into_response()
}

async fn holdings(
    State(knobs): State<Arc<Knobs>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    knobs.holdings_calls.fetch_add(1, Ordering::Relaxed);
    if let Err(r) = admit(&knobs, &headers, &id).await {
        return r;
    }
    const SYMBOLS: [&str; 8] = ["AAPL", "MSFT", "VTI", "BND", "GOOG", "AMZN", "VXUS", "NVDA"];
    let positions: Vec<serde_json::Value> = (0..(seeded(&id, 3) % 6 + 1))
        .map(|i| {
            let symbol = SYMBOLS[usize::try_from(seeded(&id, 10 + i) % 8).unwrap_or(0)];
            json!({
                "symbol": symbol,
                "quantity": seeded(&id, 20 + i) % 500 + 1,
                "price_cents": seeded(symbol, 30) % 80_000 + 1_000,
            })
        })
        .collect();
    Json(json!({ "account_id": id, "positions": positions, "as_of": now_ms() })).into_response()
}

async fn stats(State(knobs): State<Arc<Knobs>>) -> Json<serde_json::Value> {
    Json(json!({ "calls": knobs.calls(), "knobs": knobs.settings() }))
}

/// A change of some knobs: the ones left out keep their value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobChange {
    latency_ms: Option<u64>,
    error_rate: Option<f64>,
    down: Option<bool>,
}

async fn set_knobs(
    State(knobs): State<Arc<Knobs>>,
    body: Result<Json<KnobChange>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let change = match body {
        Ok(Json(change)) => change,
        Err(rejection) => return problem(rejection.status(), &rejection.body_text()),
    };
    if let Some(rate) = change.error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "error_rate is a share of calls, from 0.0 to 1.0",
        );
    }
    let current = knobs.settings();
    knobs.set(KnobSettings {
        latency_ms: change.latency_ms.unwrap_or(current.latency_ms),
        error_rate: change.error_rate.unwrap_or(current.error_rate),
        down: change.down.unwrap_or(current.down),
    });
    Json(knobs.settings()).into_response()
}

/// An `application/problem+json` answer (the service's own errors module is not for the
/// stand-in provider, which the service depends on).
fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
