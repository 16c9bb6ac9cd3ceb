//! [`ProviderClient`]: the service's side of the upstream — HTTP with deadlines, one circuit
//! breaker per provider (separate from the cache's), and calls counted by route and outcome.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::breaker::Breaker;

/// Why an upstream call failed. Cheap to clone: one failure answers every caller of a
/// single-flight load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No answer within the deadline.
    #[error("the {0} API did not answer in time")]
    Timeout(String),
    /// The connection failed.
    #[error("the {0} API cannot be reached")]
    Unreachable(String),
    /// It answered an error status.
    #[error("the {provider} API answered {status}")]
    Status {
        /// Which provider.
        provider: String,
        /// What it answered.
        status: u16,
    },
    /// Its breaker is open after repeated failures: not called.
    #[error("the {0} API is failing; calls are paused")]
    CircuitOpen(String),
    /// It answered something that is not what it promised.
    #[error("the {0} API answered an unreadable body")]
    Malformed(String),
}

impl From<dashcache::aside::LoaderTimeout> for UpstreamError {
    fn from(_: dashcache::aside::LoaderTimeout) -> Self {
        Self::Timeout("provider".into())
    }
}

/// How the client calls.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The upstream's base URL (`http://host:port`).
    pub base_url: String,
    /// The deadline of one call, connection included (default 1 s: below the cache-aside
    /// loader timeout, so a slow call is recorded as a timeout by the breaker before the
    /// loader gives up on it).
    pub timeout: Duration,
    /// Consecutive failures that open a provider's breaker (default 5).
    pub breaker_failures: u32,
    /// How long it stays open before one probe (default 5 s).
    pub breaker_open_for: Duration,
}

impl ClientOptions {
    /// The defaults, for the upstream at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
        }
    }
}

/// The upstream API's client. Cheap to clone.
#[derive(Clone)]
pub struct ProviderClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client<HttpConnector, Full<Bytes>>,
    options: ClientOptions,
    breakers: HashMap<&'static str, Breaker>,
    calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderClient")
            .field("base_url", &self.inner.options.base_url)
            .finish_non_exhaustive()
    }
}

/// The largest body the client reads: anything larger is malformed.
const MAX_BODY: usize = 1 << 20;

impl ProviderClient {
    /// A client of the upstream for `providers`, as `options` say.
    pub fn new(options: ClientOptions, providers: &[&'static str]) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let breakers = providers
            .iter()
            .map(|p| {
                (
                    *p,
                    Breaker::new(options.breaker_failures, options.breaker_open_for),
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                http,
                options,
                breakers,
                calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The upstream's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.options.base_url
    }

    /// `GET path` with `token`, for `route` (a metrics label), as `T`.
    ///
    /// # Errors
    /// As [`UpstreamError`].
    pub async fn get<T: DeserializeOwned>(
        &self,
        provider: &str,
        route: &'static str,
        path: &str,
        token: &SecretString,
    ) -> Result<T, UpstreamError> {
        let request = axum::http::Request::get(format!("{}{path}", self.inner.options.base_url))
            .header(
                axum::http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose_secret()),
            )
            .body(Full::new(Bytes::new()));
        self.call(provider, route, request).await
    }

    /// Exchanges an authorization `code` for an access token.
    ///
    /// # Errors
    /// As [`UpstreamError`].
    pub async fn exchange_code(
        &self,
        provider: &str,
        code: &str,
    ) -> Result<SecretString, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: SecretString,
        }
        let body = serde_json::to_vec(&serde_json::json!({ "code": code }))
            .map_err(|_| UpstreamError::Malformed(provider.to_owned()))?;
        let request =
            axum::http::Request::post(format!("{}/oauth/token", self.inner.options.base_url))
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)));
        let token: Token = self.call(provider, "token", request).await?;
        Ok(token.access_token)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        provider: &str,
        route: &'static str,
        request: Result<axum::http::Request<Full<Bytes>>, axum::http::Error>,
    ) -> Result<T, UpstreamError> {
        let name = || provider.to_owned();
        let request = request.map_err(|_| UpstreamError::Malformed(name()))?;
        let breaker = self.inner.breakers.get(provider);
        if let Some(b) = breaker
            && !b.allow(Instant::now())
        {
            self.count(route, "shed");
            return Err(UpstreamError::CircuitOpen(name()));
        }
        let outcome = tokio::time::timeout(self.inner.options.timeout, async {
            let response = self
                .inner
                .http
                .request(request)
                .await
                .map_err(|_| UpstreamError::Unreachable(name()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| UpstreamError::Malformed(name()))?
                .to_bytes();
            if !status.is_success() {
                return Err(UpstreamError::Status {
                    provider: name(),
                    status: status.as_u16(),
                });
            }
            serde_json::from_slice::<T>(&body).map_err(|_| UpstreamError::Malformed(name()))
        })
        .await
        .unwrap_or_else(|_| Err(UpstreamError::Timeout(name())));
        // A 4xx is the request's fault, not the provider's health.
        let healthy = match &outcome {
            Ok(_) => true,
            Err(UpstreamError::Status { status, .. }) => *status < 500,
            Err(_) => false,
        };
        if let Some(b) = breaker {
            b.record(healthy, Instant::now());
        }
        self.count(
            route,
            match &outcome {
                Ok(_) => "ok",
                Err(UpstreamError::Timeout(_)) => "timeout",
                Err(_) => "error",
            },
        );
        outcome
    }

    fn count(&self, route: &'static str, outcome: &'static str) {
        if let Ok(mut calls) = self.inner.calls.lock() {
            *calls.entry((route, outcome)).or_default() += 1;
        }
    }

    /// Calls made (or shed) so far, by (route, outcome).
    pub fn calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.inner
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Whether `provider`'s breaker is open now.
    pub fn breaker_open(&self, provider: &str) -> bool {
        self.inner
            .breakers
            .get(provider)
            .is_some_and(|b| b.is_open(Instant::now()))
    }

    /// Publishes the counts and breaker states to the current metrics recorder.
    pub fn publish(&self) {
        metrics::describe_counter!(
            "dashcache_upstream_calls_total",
            "Calls to the provider API, by route and outcome."
        );
        metrics::describe_gauge!(
            "dashcache_upstream_breaker_open",
            "1 while a provider's circuit breaker is open."
        );
        for ((route, outcome), n) in self.calls() {
            metrics::counter!("dashcache_upstream_calls_total", "route" => route, "outcome" => outcome)
                .absolute(n);
        }
        for provider in self.inner.breakers.keys() {
            metrics::gauge!("dashcache_upstream_breaker_open", "provider" => *provider).set(
                if self.breaker_open(provider) {
                    1.0
                } else {
                    0.0
                },
            );
        }
    }
}
