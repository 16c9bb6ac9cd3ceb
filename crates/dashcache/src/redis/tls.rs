//! [`TlsOptions`]: what a `rediss://` connection needs beyond its URL — a CA bundle for a
//! private CA, a client certificate for mutual TLS — and the one explicit way to turn
//! certificate checks off.
//!
//! TLS goes through rustls (feature `tls`, on by default), with the `ring` provider: no OpenSSL
//! on the machine, nothing but a C compiler at build time. Without a CA bundle the system's
//! roots are used, which is what managed services (ElastiCache, Azure Cache, Upstash, Redis
//! Cloud) need.

use std::fmt;
use std::path::{Path, PathBuf};

#[cfg(feature = "tls")]
use redis::ConnectionAddr;
use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::error::{Error, Result};
use crate::url::mask_url;

/// TLS settings for `rediss://` URLs (one server, every node of a cluster, a Sentinel's
/// master). The default verifies the server against the system's roots.
///
/// ```
/// use dashcache::redis::TlsOptions;
/// let tls = TlsOptions::new()
///     .ca_file("/etc/redis/ca.pem")
///     .client_cert("/etc/redis/client.pem", "/etc/redis/client.key");
/// let builder = dashcache::RedisCache::builder("rediss://cache.internal:6380").tls(tls);
/// # let _ = builder;
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct TlsOptions {
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    insecure: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths only: the files' contents (a private key) are never read into a Debug.
        f.debug_struct("TlsOptions")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert.as_ref().map(|(c, _)| c))
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsOptions {
    /// Verification against the system's roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in this PEM file instead of the system's roots (a private
    /// CA, a self-managed cluster).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) to servers that ask for one
    /// (mutual TLS, `tls-auth-clients yes`).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// **Turns certificate verification off**: anyone on the network path can read and
    /// change the traffic. For a test bench only; every connection made with it is logged
    /// as a warning. A URL's `#insecure` fragment is refused unless this is set too, so a
    /// copied URL cannot switch checks off on its own.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Whether certificate checks are off.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Whether anything differs from the default.
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The connection settings of each URL in `urls`, with `tls` applied to the `rediss://` ones.
///
/// # Errors
/// `InvalidArgument`: a malformed URL, TLS settings for a plain `redis://` URL, `#insecure`
/// without [`TlsOptions::danger_accept_invalid_certs`], an unreadable or invalid PEM file, or
/// `rediss://` in a build without the `tls` feature.
pub(crate) fn connection_infos(urls: &[String], tls: &TlsOptions) -> Result<Vec<ConnectionInfo>> {
    urls.iter().map(|url| connection_info(url, tls)).collect()
}

fn connection_info(url: &str, tls: &TlsOptions) -> Result<ConnectionInfo> {
    let shown = mask_url(url);
    let secure = url.starts_with("rediss://") || url.starts_with("valkeys://");
    if !secure {
        if !tls.is_default() {
            return Err(Error::invalid_argument(format!(
                "TLS settings are given but {shown} is not a rediss:// URL"
            )));
        }
        return url.into_connection_info().map_err(|e| {
            Error::invalid_argument(format!("invalid Redis URL {shown}")).with_source(e)
        });
    }
    if url.ends_with("#insecure") && !tls.insecure {
        return Err(Error::invalid_argument(format!(
            "{shown} turns certificate checks off (#insecure); that needs an explicit opt-in \
             (TlsOptions::danger_accept_invalid_certs, CACHE_TLS_INSECURE=true)"
        )));
    }
    secure_info(url, &shown, tls)
}

#[cfg(feature = "tls")]
fn secure_info(url: &str, shown: &str, tls: &TlsOptions) -> Result<ConnectionInfo> {
    // rustls needs a process-wide crypto provider; installing ours fails harmlessly when the
    // application installed one already, which then is the one used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let invalid = |e: redis::RedisError| {
        Error::invalid_argument(format!("invalid TLS settings for {shown}")).with_source(e)
    };
    let info = if tls.ca_file.is_none() && tls.client_cert.is_none() {
        url.into_connection_info().map_err(invalid)?
    } else {
        let certificates = redis::TlsCertificates {
            client_tls: match &tls.client_cert {
                Some((cert, key)) => Some(redis::ClientTlsConfig {
                    client_cert: read_pem(cert, "client certificate")?,
                    client_key: read_pem(key, "client key")?,
                }),
                None => None,
            },
            root_cert: match &tls.ca_file {
                Some(ca) => Some(read_pem(ca, "CA bundle")?),
                None => None,
            },
        };
        redis::Client::build_with_tls(url, certificates)
            .map_err(invalid)?
            .get_connection_info()
            .clone()
    };
    Ok(match info.addr().clone() {
        ConnectionAddr::TcpTls {
            host,
            port,
            tls_params,
            ..
        } if tls.insecure => info.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure: true,
            tls_params,
        }),
        _ => info,
    })
}

#[cfg(not(feature = "tls"))]
fn secure_info(_url: &str, shown: &str, _tls: &TlsOptions) -> Result<ConnectionInfo> {
    Err(Error::invalid_argument(format!(
        "{shown} needs TLS, which this build leaves out (enable dashcache's `tls` feature)"
    )))
}

/// A PEM file's bytes; what it is, for the error.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::invalid_argument(format!("cannot read the TLS {what} {}", path.display()))
            .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str, tls: &TlsOptions) -> String {
        match connection_info(url, tls) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tls_settings_for_a_plain_url_are_refused() {
        let tls = TlsOptions::new().ca_file("/nonexistent/ca.pem");
        assert!(err("redis://127.0.0.1:6379", &tls).contains("not a rediss://"));
        assert!(connection_info("redis://127.0.0.1:6379", &TlsOptions::new()).is_ok());
    }

    #[test]
    fn insecure_needs_the_explicit_opt_in() {
        let e = err(
            "rediss://:secret@127.0.0.1:6380/#insecure",
            &TlsOptions::new(),
        );
        assert!(e.contains("explicit opt-in"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        #[cfg(feature = "tls")]
        {
            let tls = TlsOptions::new().danger_accept_invalid_certs();
            let info = connection_info("rediss://127.0.0.1:6380", &tls);
            assert!(matches!(
                info.map(|i| i.addr().clone()),
                Ok(ConnectionAddr::TcpTls { insecure: true, .. })
            ));
        }
    }

    #[test]
    fn unreadable_files_are_named() {
        let tls = TlsOptions::new().ca_file("/nonexistent/ca.pem");
        let e = err("rediss://127.0.0.1:6380", &tls);
        #[cfg(feature = "tls")]
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        #[cfg(not(feature = "tls"))]
        assert!(e.contains("`tls` feature"), "{e}");
    }
}
