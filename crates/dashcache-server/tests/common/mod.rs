//! A test app: the real router over a fresh SQLite file (or a PostgreSQL schema) and a cache,
//! driven with `oneshot`.

#![allow(dead_code, clippy::unwrap_used, clippy::panic, unreachable_pub)]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use dashcache::CacheSettings;
use dashcache_server::AppState;
use dashcache_server::serve::{ServeOptions, build_state};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApp {
    pub app: Router,
    pub state: AppState,
    _dir: Option<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

/// An app over a fresh SQLite file and, with `redis_url`, that Redis.
pub async fn sqlite_app(redis_url: Option<String>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_on(&sqlite_url(&dir), redis_url).await;
    app._dir = Some(dir);
    app
}

/// An app over the database at `database_url`.
pub async fn app_on(database_url: &str, redis_url: Option<String>) -> TestApp {
    app_with_settings(database_url, settings(redis_url)).await
}

/// The test settings: with `redis_url`, that Redis.
pub fn settings(redis_url: Option<String>) -> CacheSettings {
    settings_with(redis_url, &[])
}

/// The test settings with `extra` variables on top.
pub fn settings_with(redis_url: Option<String>, extra: &[(&str, &str)]) -> CacheSettings {
    let mut env: Vec<(String, String)> = vec![
        // Generous deadlines: a loaded 2-core CI machine; only fault tests need the defaults.
        ("CACHE_TIMEOUT_MS".into(), "2000".into()),
        ("CACHE_CONNECT_TIMEOUT_MS".into(), "2000".into()),
        // A consumer starved past the bound (CPU hogs beside the tests) lapses its proof, and
        // every coherent read then goes to the database: right, but a test counting queries
        // would see them. The coherence tests set the bound they prove.
        ("CACHE_DB_STALENESS_MS".into(), "10000".into()),
    ];
    if let Some(url) = redis_url {
        env.push(("REDIS_URL".into(), url));
    }
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    CacheSettings::from_sources(env, None).unwrap()
}

/// The options of a test app over `database_url`: with the demo users, whom the tests log in
/// as.
pub fn options(database_url: &str) -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.to_owned(),
        rate_limit_scale: 1,
        cache: dashcache_server::serve::CacheChoice::Auto,
        demo: dashcache_server::serve::DemoData::Yes,
        web: dashcache_server::state::WebOptions::default(),
    }
}

pub async fn app_with_settings(database_url: &str, settings: CacheSettings) -> TestApp {
    app_with(&options(database_url), settings).await
}

pub async fn app_with(options: &ServeOptions, settings: CacheSettings) -> TestApp {
    let state = build_state(options, settings).await.unwrap();
    TestApp {
        app: dashcache_server::app(state.clone()),
        state,
        _dir: None,
    }
}

/// A fresh SQLite database URL in `dir`.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display())
}

impl TestApp {
    /// Keeps `dir` (its database) as long as the app.
    pub fn keeping(mut self, dir: tempfile::TempDir) -> Self {
        self._dir = Some(dir);
        self
    }

    /// An app over an already built state.
    pub fn from_state(state: AppState) -> Self {
        Self {
            app: dashcache_server::app(state.clone()),
            state,
            _dir: None,
        }
    }

    /// Sends a request with an optional session and JSON body (from the default peer).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.raw(request(method, path, token, body)).await
    }

    /// Sends a request from `peer` (`ip:port`) with an optional session and JSON body.
    pub async fn send_from(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = request(method, path, token, body);
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        self.raw(request).await
    }

    /// Sends a prepared request (a peer address is added when missing).
    pub async fn raw(&self, mut request: Request<Body>) -> Reply {
        if request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none()
        {
            let peer: SocketAddr = "203.0.113.10:40000".parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None).await
    }

    /// Logs `user` in with their demo password; the session token.
    pub async fn login(&self, user: &str) -> String {
        let password = format!(
            "{}-password",
            match user {
                "u1" => "alice",
                "u2" => "bob",
                "u3" => "carol",
                other => other,
            }
        );
        // Each login from an address of its own: the login limit (5 a minute per address) is
        // tested on purpose elsewhere.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let peer: SocketAddr = format!(
            "10.{}.{}.{}:40000",
            (n >> 16) & 255,
            (n >> 8) & 255,
            n & 255
        )
        .parse()
        .unwrap();
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/sessions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "user_id": user, "password": password }).to_string(),
            ))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let reply = self.raw(request).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    pub fn queries(&self) -> u64 {
        self.state.db().queries()
    }
}

/// A request with an optional session (as the bearer) and JSON body.
pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap()
}

/// Asserts a problem body with `status`.
pub fn assert_problem(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{}",
        reply.body
    );
    assert_eq!(reply.body["status"], status.as_u16(), "{}", reply.body);
}
