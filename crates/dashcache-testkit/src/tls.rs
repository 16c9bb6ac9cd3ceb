//! [`TlsRedis`]: a `redis-server` that speaks TLS, with certificates made for the test by
//! [`TestCerts`].

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::process::free_port;
use crate::server::RedisServer;

/// A test CA, a server certificate for `localhost` and `127.0.0.1` and a client certificate it
/// signed, and a second, unrelated CA: PEM files in a temporary directory.
#[derive(Debug)]
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// Generates the certificates (ECDSA P-256).
    ///
    /// # Panics
    /// When a certificate cannot be made or written.
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dashcache-tls-")
            .tempdir()
            .expect("a directory for the certificates");
        let write = |name: &str, pem: &str| {
            std::fs::write(dir.path().join(name), pem).expect("write a certificate file");
        };
        let (ca_pem, issuer) = ca("dashcache test CA");
        write("ca.pem", &ca_pem);
        let (other_pem, _) = ca("an unrelated CA");
        write("other-ca.pem", &other_pem);
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("client", vec!["dashcache-client".to_owned()]),
        ] {
            let key = KeyPair::generate().expect("a key pair");
            let mut params = CertificateParams::new(sans).expect("certificate parameters");
            params.distinguished_name.push(DnType::CommonName, name);
            // Both uses: cluster nodes present their server certificate as clients of the bus.
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let cert = params
                .signed_by(&key, &issuer)
                .expect("a signed certificate");
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}.key"), &key.serialize_pem());
        }
        Self { dir }
    }

    /// The test CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed nothing here: trusting it alone must fail the handshake.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The server's certificate and key.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        )
    }

    /// The client's certificate and key, signed by [`ca`](Self::ca).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client.key"),
        )
    }

    /// `redis-server` arguments serving TLS on `tls_port` with these certificates; `mutual`:
    /// clients must present a certificate the CA signed.
    pub fn server_args(&self, tls_port: u16, mutual: bool) -> Vec<String> {
        let (cert, key) = self.server();
        [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            self.ca().display().to_string(),
            "--tls-auth-clients".to_owned(),
            if mutual { "yes" } else { "no" }.to_owned(),
        ]
        .into()
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("a key pair");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("a self-signed CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A `redis-server` of the test's own serving TLS on one port (and plain TCP on another, which
/// the harness uses to see that it is up).
///
/// ```no_run
/// let server = dashcache_testkit::TlsRedis::start(false);
/// let url = server.url(); // rediss://localhost:<port>
/// let ca = server.certs().ca(); // trust this CA
/// # let _ = (url, ca);
/// ```
#[derive(Debug)]
pub struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    certs: TestCerts,
}

impl TlsRedis {
    /// Starts a TLS server with fresh certificates; `mutual`: it requires client
    /// certificates.
    ///
    /// # Panics
    /// When the server does not start (a `redis-server` built without TLS, for one).
    pub fn start(mutual: bool) -> Self {
        let certs = TestCerts::generate();
        let tls_port = free_port().unwrap_or_else(|e| panic!("{e}"));
        let args = certs.server_args(tls_port, mutual);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = RedisServer::start_with_args(&args);
        Self {
            server,
            tls_port,
            certs,
        }
    }

    /// `rediss://localhost:<tls port>`.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }

    /// The TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The certificates it serves with.
    pub fn certs(&self) -> &TestCerts {
        &self.certs
    }

    /// The server, for plain-TCP checks and faults (kill, freeze, restart).
    pub fn server(&mut self) -> &mut RedisServer {
        &mut self.server
    }
}
