//! [`CacheSettings`]: the cache configuration from the environment and an optional TOML file.
//!
//! Every variable has a default and bounds. A bad configuration is refused at start with one
//! message that lists every bad variable, its value and the allowed range — not the first one,
//! and never silently clamped. The environment wins over the file; the file (named by
//! `CACHE_CONFIG_FILE`, or passed explicitly) is a flat TOML table whose keys are the variable
//! names, and an unknown key in it is an error (a typo must not pass for a default).
//!
//! Every variable is documented in the repository's `.env.example`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod build;
mod read;
mod url;

use crate::vars;
use read::{Raw, Reader, is_known, parse_file};

/// Kept here too, where it was first published.
pub use crate::url::cluster_seeds;
use crate::url::mask_url;

/// The variable naming the TOML file (read by [`CacheSettings::from_env`]).
pub const CONFIG_FILE_VAR: &str = vars::CACHE_CONFIG_FILE;

/// The TTL of each cached pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TtlSettings {
    /// Sessions (`CACHE_TTL_SESSION`, default 30 days).
    pub session: Duration,
    /// Permission checks (`CACHE_TTL_PERMISSIONS`, default 5 minutes).
    pub permissions: Duration,
    /// OAuth state tokens (`CACHE_TTL_OAUTH_STATE`, default 10 minutes).
    pub oauth_state: Duration,
    /// Provider connections (`CACHE_TTL_PROVIDER_CONNECTION`, default 5 minutes).
    pub provider_connection: Duration,
    /// Account lists (`CACHE_TTL_ACCOUNTS_LIST`, default 5 minutes).
    pub accounts_list: Duration,
    /// Security configuration versions (`CACHE_TTL_SECURITY_CONFIG`, default 1 minute).
    pub security_config: Duration,
    /// Rarely changing reference data (`CACHE_TTL_STATIC_DATA`, default 24 hours).
    pub static_data: Duration,
    /// User records (`CACHE_TTL_USER`, default 1 hour).
    pub user: Duration,
    /// Fixed-window rate-limit counters (`CACHE_TTL_RATE_LIMIT`, default 1 minute).
    pub rate_limit: Duration,
    /// Upstream provider API responses: balances, holdings (`CACHE_TTL_PROVIDER_API`,
    /// default 5 minutes, the guide's).
    pub provider_api: Duration,
    /// Pages of transaction lists (`CACHE_TTL_TRANSACTIONS`, default 1 minute: a short
    /// freshness window).
    pub transactions: Duration,
    /// Decrypted provider credentials, held in process memory only
    /// (`CACHE_TTL_CREDENTIALS`, default 1 minute).
    pub credentials: Duration,
}

/// The validated cache configuration.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheSettings {
    /// `REDIS_URL`: Redis when set, the embedded cache when not.
    pub redis_url: Option<String>,
    /// `CACHE_KEY_PREFIX` (default `dashcache`).
    pub key_prefix: String,
    /// `CACHE_KEY_SECRET`: the secret of opaque (hashed) key segments; at least 16 bytes.
    pub key_secret: Option<String>,
    /// `CACHE_SEAL_KEYS`: the AES-256-GCM keys of sealed values, `id:base64[,id:base64…]`,
    /// the current key first (validated; see [`CacheSettings::keyring`]).
    pub seal_keys: Option<String>,
    /// The TTL of each pattern.
    pub ttl: TtlSettings,
    /// `CACHE_STALE_SECS`: how long cache-aside keeps values past their TTL (0: off).
    pub stale_for: Duration,
    /// `CACHE_TTL_JITTER_PERCENT`: TTL jitter each way (default 10).
    pub ttl_jitter_percent: u32,
    /// `CACHE_TIMEOUT_MS`: the deadline of each Redis operation (default 250 ms).
    pub timeout: Duration,
    /// `CACHE_CONNECT_TIMEOUT_MS`: the deadline of a connection attempt (default 250 ms).
    pub connect_timeout: Duration,
    /// `CACHE_SWEEP_TIMEOUT_MS`: the deadline of a whole `delete_pattern` on Redis (default
    /// 30 s).
    pub sweep_timeout: Duration,
    /// `CACHE_BREAKER_FAILURES`: consecutive failures that open the breaker (default 5).
    pub breaker_failures: u32,
    /// `CACHE_BREAKER_OPEN_MS`: how long it stays open (default 500 ms).
    pub breaker_open_for: Duration,
    /// `CACHE_MEMORY_MAX_ENTRIES`: the embedded cache's entry bound (default 1 000 000).
    pub memory_max_entries: u64,
    /// `CACHE_MEMORY_MAX_BYTES`: the embedded cache's byte bound (default 128 MiB).
    pub memory_max_bytes: u64,
    /// `CACHE_L1_MAX_ENTRIES`: the entry bound of the in-process L1 in front of Redis
    /// (default 100 000); 0 turns L1 off.
    pub l1_max_entries: u64,
    /// `CACHE_L1_MAX_BYTES`: L1's byte bound (default 64 MiB).
    pub l1_max_bytes: u64,
    /// `CACHE_L1_STALENESS_MS`: the staleness bound Δ of L1 (default 1 s).
    pub l1_staleness: Duration,
    /// `CACHE_L1_MAX_TTL_SECS`: the longest an entry stays in L1 (default 5 minutes).
    pub l1_max_ttl: Duration,
    /// `CACHE_DB_STALENESS_MS`: the staleness bound Δ_db of the namespaces that follow the
    /// database's invalidation log (default 1 s; see [`crate::coherent`]).
    pub db_staleness: Duration,
    /// `CACHE_DB_COHERENT`: which namespaces follow the log. `None` (unset): the
    /// application's default; an empty list (`off`): none.
    pub db_coherent: Option<Vec<String>>,
    /// `CACHE_RATE_LIMIT_BATCH`: the most checks of one hot rate-limit bucket a round trip to
    /// Redis reserves for this instance (default 64; 1 turns reservations off). See
    /// [`RedisBuckets::with_reservations`](crate::ratelimit::RedisBuckets::with_reservations).
    pub rate_limit_batch: u64,
    /// `CACHE_COMPRESSION`: `zstd` compresses large values (see [`crate::compress`]); `off`
    /// (the default) stores them plain but still reads compressed ones, so a rolling upgrade
    /// can turn it on once every instance reads the format.
    pub compression: bool,
    /// `CACHE_COMPRESS_MIN_BYTES`: values shorter than this stay plain (default 1 KiB).
    pub compress_min_bytes: usize,
    /// `CACHE_COMPRESS_LEVEL`: the zstd level, 1–19 (default 3).
    pub compress_level: i32,
    /// `CACHE_TLS_CA_FILE`: a PEM bundle of the CAs to trust for `rediss://` instead of the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `CACHE_TLS_CERT_FILE` and `CACHE_TLS_KEY_FILE`: the client certificate and key (PEM)
    /// for mutual TLS; both or neither.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// `CACHE_TLS_INSECURE`: `true` turns certificate checks off (default `false`); a test
    /// bench's setting, warned about at every start.
    pub tls_insecure: bool,
    /// `CACHE_SENTINEL_USERNAME` and `CACHE_SENTINEL_PASSWORD`: what the sentinels of a
    /// `redis+sentinel://` URL ask for (their `requirepass` or ACL user); the URL's
    /// credentials are the master's. A username needs a password.
    pub sentinel_credentials: Option<(Option<String>, String)>,
}

/// One bad variable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The variable's name.
    pub variable: String,
    /// The value given (masked for secrets).
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

/// A configuration that cannot be used, with every problem found.
///
/// Its `Debug` form is its message, so `fn main() -> Result<…>` prints a readable list.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// Every bad variable, in a stable order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid cache configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}={:?}: {}", p.variable, p.value, p.allowed)?;
        }
        Ok(())
    }
}

impl fmt::Debug for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for SettingsError {}

impl CacheSettings {
    /// Reads the process environment, and the TOML file named by `CACHE_CONFIG_FILE` if set.
    ///
    /// # Errors
    /// Every bad variable, or an unreadable or malformed file.
    pub fn from_env() -> Result<Self, SettingsError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = env
            .iter()
            .find(|(k, _)| k == CONFIG_FILE_VAR)
            .map(|(_, v)| v.clone());
        let contents = match file {
            Some(path) => Some(read_file(Path::new(&path))?),
            None => None,
        };
        Self::from_sources(env, contents.as_deref())
    }

    /// Reads the process environment over the TOML file at `path`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let contents = read_file(path)?;
        Self::from_sources(std::env::vars(), Some(&contents))
    }

    /// Builds the settings from `env` (name, value pairs) over the TOML text `file`. Pure: no
    /// process state is read, which is what tests want.
    ///
    /// # Errors
    /// Every bad variable in one [`SettingsError`].
    pub fn from_sources<I, K, V>(env: I, file: Option<&str>) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut problems = Vec::new();
        let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
        if let Some(text) = file {
            parse_file(text, &mut raw, &mut problems);
        }
        // The environment wins over the file.
        for (k, v) in env {
            let k = k.into();
            if is_known(&k) {
                raw.insert(k, Raw { value: v.into() });
            }
        }
        let mut r = Reader {
            raw: &raw,
            problems,
        };
        let redis_url = r.redis_url();
        let settings = Self {
            key_prefix: r.key_prefix(),
            key_secret: r.key_secret(),
            seal_keys: r.seal_keys(),
            ttl: TtlSettings {
                session: r.duration(&vars::CACHE_TTL_SESSION),
                permissions: r.duration(&vars::CACHE_TTL_PERMISSIONS),
                oauth_state: r.duration(&vars::CACHE_TTL_OAUTH_STATE),
                provider_connection: r.duration(&vars::CACHE_TTL_PROVIDER_CONNECTION),
                accounts_list: r.duration(&vars::CACHE_TTL_ACCOUNTS_LIST),
                security_config: r.duration(&vars::CACHE_TTL_SECURITY_CONFIG),
                static_data: r.duration(&vars::CACHE_TTL_STATIC_DATA),
                user: r.duration(&vars::CACHE_TTL_USER),
                rate_limit: r.duration(&vars::CACHE_TTL_RATE_LIMIT),
                provider_api: r.duration(&vars::CACHE_TTL_PROVIDER_API),
                transactions: r.duration(&vars::CACHE_TTL_TRANSACTIONS),
                credentials: r.duration(&vars::CACHE_TTL_CREDENTIALS),
            },
            stale_for: r.duration(&vars::CACHE_STALE_SECS),
            ttl_jitter_percent: r.number(&vars::CACHE_TTL_JITTER_PERCENT),
            timeout: r.duration(&vars::CACHE_TIMEOUT_MS),
            connect_timeout: r.duration(&vars::CACHE_CONNECT_TIMEOUT_MS),
            sweep_timeout: r.duration(&vars::CACHE_SWEEP_TIMEOUT_MS),
            breaker_failures: r.number(&vars::CACHE_BREAKER_FAILURES),
            breaker_open_for: r.duration(&vars::CACHE_BREAKER_OPEN_MS),
            memory_max_entries: r.number(&vars::CACHE_MEMORY_MAX_ENTRIES),
            memory_max_bytes: r.number(&vars::CACHE_MEMORY_MAX_BYTES),
            l1_max_entries: r.number(&vars::CACHE_L1_MAX_ENTRIES),
            l1_max_bytes: r.number(&vars::CACHE_L1_MAX_BYTES),
            l1_staleness: r.duration(&vars::CACHE_L1_STALENESS_MS),
            l1_max_ttl: r.duration(&vars::CACHE_L1_MAX_TTL_SECS),
            db_staleness: r.duration(&vars::CACHE_DB_STALENESS_MS),
            db_coherent: r.namespaces(&vars::CACHE_DB_COHERENT),
            rate_limit_batch: r.number(&vars::CACHE_RATE_LIMIT_BATCH),
            compression: r.switch(&vars::CACHE_COMPRESSION),
            compress_min_bytes: r.number(&vars::CACHE_COMPRESS_MIN_BYTES),
            compress_level: r.number(&vars::CACHE_COMPRESS_LEVEL),
            tls_ca_file: r.text(&vars::CACHE_TLS_CA_FILE).map(PathBuf::from),
            tls_client_cert: r.tls_client_cert(),
            tls_insecure: r.switch(&vars::CACHE_TLS_INSECURE),
            sentinel_credentials: r.sentinel_credentials(redis_url.as_deref()),
            redis_url,
        };
        if r.problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError {
                problems: r.problems,
            })
        }
    }

    /// The names of every variable these settings read.
    pub fn variables() -> impl Iterator<Item = &'static str> {
        vars::names()
    }
}

impl fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The effective configuration, one `VARIABLE=value` per line, secrets masked.
impl fmt::Display for CacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self
            .redis_url
            .as_deref()
            .map_or_else(|| "(unset: embedded cache)".to_owned(), mask_url);
        writeln!(f, "REDIS_URL={url}")?;
        writeln!(f, "CACHE_KEY_PREFIX={}", self.key_prefix)?;
        let secret = |set: bool| if set { "***" } else { "(unset)" };
        writeln!(f, "CACHE_KEY_SECRET={}", secret(self.key_secret.is_some()))?;
        writeln!(f, "CACHE_SEAL_KEYS={}", secret(self.seal_keys.is_some()))?;
        let t = &self.ttl;
        let secs = [
            ("CACHE_TTL_SESSION", t.session),
            ("CACHE_TTL_PERMISSIONS", t.permissions),
            ("CACHE_TTL_OAUTH_STATE", t.oauth_state),
            ("CACHE_TTL_PROVIDER_CONNECTION", t.provider_connection),
            ("CACHE_TTL_ACCOUNTS_LIST", t.accounts_list),
            ("CACHE_TTL_SECURITY_CONFIG", t.security_config),
            ("CACHE_TTL_STATIC_DATA", t.static_data),
            ("CACHE_TTL_USER", t.user),
            ("CACHE_TTL_RATE_LIMIT", t.rate_limit),
            ("CACHE_TTL_PROVIDER_API", t.provider_api),
            ("CACHE_TTL_TRANSACTIONS", t.transactions),
            ("CACHE_TTL_CREDENTIALS", t.credentials),
            ("CACHE_STALE_SECS", self.stale_for),
        ];
        for (var, d) in secs {
            writeln!(f, "{var}={}", d.as_secs())?;
        }
        writeln!(f, "CACHE_TTL_JITTER_PERCENT={}", self.ttl_jitter_percent)?;
        writeln!(f, "CACHE_TIMEOUT_MS={}", self.timeout.as_millis())?;
        writeln!(
            f,
            "CACHE_CONNECT_TIMEOUT_MS={}",
            self.connect_timeout.as_millis()
        )?;
        writeln!(
            f,
            "CACHE_SWEEP_TIMEOUT_MS={}",
            self.sweep_timeout.as_millis()
        )?;
        writeln!(f, "CACHE_BREAKER_FAILURES={}", self.breaker_failures)?;
        writeln!(
            f,
            "CACHE_BREAKER_OPEN_MS={}",
            self.breaker_open_for.as_millis()
        )?;
        writeln!(f, "CACHE_MEMORY_MAX_ENTRIES={}", self.memory_max_entries)?;
        writeln!(f, "CACHE_MEMORY_MAX_BYTES={}", self.memory_max_bytes)?;
        writeln!(f, "CACHE_L1_MAX_ENTRIES={}", self.l1_max_entries)?;
        writeln!(f, "CACHE_L1_MAX_BYTES={}", self.l1_max_bytes)?;
        writeln!(f, "CACHE_L1_STALENESS_MS={}", self.l1_staleness.as_millis())?;
        writeln!(f, "CACHE_L1_MAX_TTL_SECS={}", self.l1_max_ttl.as_secs())?;
        writeln!(f, "CACHE_DB_STALENESS_MS={}", self.db_staleness.as_millis())?;
        let coherent = match &self.db_coherent {
            None => "(unset: the application's default)".to_owned(),
            Some(list) if list.is_empty() => "off".to_owned(),
            Some(list) => list.join(","),
        };
        writeln!(f, "CACHE_DB_COHERENT={coherent}")?;
        writeln!(f, "CACHE_RATE_LIMIT_BATCH={}", self.rate_limit_batch)?;
        writeln!(
            f,
            "CACHE_COMPRESSION={}",
            if self.compression { "zstd" } else { "off" }
        )?;
        writeln!(f, "CACHE_COMPRESS_MIN_BYTES={}", self.compress_min_bytes)?;
        writeln!(f, "CACHE_COMPRESS_LEVEL={}", self.compress_level)?;
        let path = |p: Option<&PathBuf>| {
            p.map_or_else(|| "(unset)".to_owned(), |p| p.display().to_string())
        };
        writeln!(f, "CACHE_TLS_CA_FILE={}", path(self.tls_ca_file.as_ref()))?;
        let (cert, key) = match &self.tls_client_cert {
            Some((cert, key)) => (Some(cert), Some(key)),
            None => (None, None),
        };
        writeln!(f, "CACHE_TLS_CERT_FILE={}", path(cert))?;
        writeln!(f, "CACHE_TLS_KEY_FILE={}", path(key))?;
        writeln!(f, "CACHE_TLS_INSECURE={}", self.tls_insecure)?;
        let (username, password) = match &self.sentinel_credentials {
            Some((username, _)) => (username.as_deref().unwrap_or("(unset)"), "***"),
            None => ("(unset)", "(unset)"),
        };
        writeln!(f, "CACHE_SENTINEL_USERNAME={username}")?;
        write!(f, "CACHE_SENTINEL_PASSWORD={password}")
    }
}

fn read_file(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|e| SettingsError {
        problems: vec![Problem {
            variable: CONFIG_FILE_VAR.into(),
            value: path.display().to_string(),
            allowed: format!("a readable TOML file ({e})"),
        }],
    })
}

#[cfg(test)]
mod tests {
    const DAY: u64 = 24 * 3600;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_match_the_guide() {
        let s = CacheSettings::from_sources(env(&[]), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.ttl.session, Duration::from_secs(30 * DAY));
        assert_eq!(s.ttl.permissions, Duration::from_secs(300));
        assert_eq!(s.ttl.oauth_state, Duration::from_secs(600));
        assert_eq!(s.ttl.provider_connection, Duration::from_secs(300));
        assert_eq!(s.ttl.accounts_list, Duration::from_secs(300));
        assert_eq!(s.ttl.security_config, Duration::from_secs(60));
        assert_eq!(s.ttl.static_data, Duration::from_secs(DAY));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.breaker_failures, 5);
        assert_eq!(s.redis_url, None);
        assert_eq!(s.key_prefix, "dashcache");
    }

    #[test]
    fn the_display_names_every_variable_and_masks_secrets() {
        let s = CacheSettings::from_sources(
            env(&[
                ("REDIS_URL", "rediss://:hunter2hunter2@h:6380"),
                ("CACHE_KEY_SECRET", "0123456789abcdef-secret"),
                ("CACHE_TLS_CERT_FILE", "/c.pem"),
                ("CACHE_TLS_KEY_FILE", "/k.pem"),
            ]),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = s.to_string();
        for var in CacheSettings::variables().filter(|v| *v != CONFIG_FILE_VAR) {
            assert!(
                shown.contains(&format!("{var}=")),
                "{var} missing from:\n{shown}"
            );
        }
        assert!(
            !shown.contains("hunter2") && !shown.contains("-secret"),
            "{shown}"
        );
        assert!(shown.contains("CACHE_TLS_KEY_FILE=/k.pem"), "{shown}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let e = CacheSettings::from_sources(env(&[("CACHE_TLS_CERT_FILE", "/c.pem")]), None);
        let e = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("CACHE_TLS_KEY_FILE"), "{e}");
        let e = CacheSettings::from_sources(env(&[("CACHE_TLS_INSECURE", "yes")]), None);
        assert!(e.is_err());
    }

    /// Each builder's own default is the default of its variable: the settings built from an
    /// empty environment configure the same thing as the builders left alone.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn every_builder_default_is_its_variables_default() {
        let url = "redis://127.0.0.1:1";
        let s = CacheSettings::from_sources(env(&[("REDIS_URL", url)]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        // The builder's connection deadline defaults to the operation deadline.
        assert_eq!(
            vars::CACHE_CONNECT_TIMEOUT_MS.default,
            vars::CACHE_TIMEOUT_MS.default
        );
        let redis = crate::RedisCache::builder(url)
            .connect_timeout(vars::CACHE_TIMEOUT_MS.default_duration())
            .tls(s.tls_options());
        assert_eq!(
            format!("{:?}", s.redis_cache_builder()),
            format!("{:?}", Some(redis))
        );
        assert_eq!(
            format!("{:?}", s.memory_cache_builder().build()),
            format!("{:?}", crate::MemoryCache::new())
        );
        let l2 = crate::RedisCache::builder(url)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{:?}", s.hybrid_cache_builder(l2.clone())),
            format!("{:?}", Some(crate::HybridCache::builder(l2)))
        );
        assert_eq!(
            s.rate_limit_batch,
            crate::ratelimit::Reservations::default().batch_limit()
        );
        #[cfg(feature = "compression")]
        assert_eq!(
            s.compression_config(),
            crate::compress::Compression::default()
        );
        let cache: std::sync::Arc<dyn crate::Cache> =
            std::sync::Arc::new(crate::MemoryCache::new());
        assert_eq!(
            format!(
                "{:?}",
                crate::CacheAside::builder(std::sync::Arc::clone(&cache))
                    .jitter(s.jitter_fraction())
            ),
            format!("{:?}", crate::CacheAside::builder(cache))
        );
        assert!(s.stale_for.is_zero());
    }
}
