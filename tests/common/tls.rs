//! wss:// for the tests: a certificate made at test time (rcgen), the server's [`Tls`] from it, and a tungstenite
//! client over a rustls client session that trusts that certificate and nothing else.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wsloop::rustls::pki_types::{CertificateDer, ServerName};
use wsloop::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use wsloop::Tls;

use super::connect_raw;

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key, in PEM; and the certificate as a client
/// trusts it.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("rcgen makes a certificate");
        TestCert {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }

    /// The server's side.
    pub fn tls(&self) -> Tls {
        Tls::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("the test certificate is usable")
    }

    /// The certificate and key written as `cert.pem` and `key.pem` into a new directory under the target dir.
    pub fn write_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = scratch_dir(name);
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }

    /// A client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_with(|_| {})
    }

    /// [`TestCert::client_config`], changed by `change` (ALPN, versions).
    pub fn client_config_with(&self, change: impl FnOnce(&mut ClientConfig)) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("a valid certificate");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        change(&mut config);
        Arc::new(config)
    }
}

/// A fresh directory for a test's files, under the target directory (so nothing lands in the source tree).
pub fn scratch_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A TLS client stream to `addr`, for `localhost`, over any transport.
pub type TlsStream<S = TcpStream> = StreamOwned<ClientConnection, S>;

/// A tungstenite client over wss://.
pub type TlsClient = tungstenite::WebSocket<TlsStream>;

/// A TLS session to `addr` (the handshake happens on the first read or write).
pub fn tls_stream(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream {
    tls_over(connect_raw(addr), config)
}

/// A TLS session over `transport`.
pub fn tls_over<S: io::Read + io::Write>(transport: S, config: &Arc<ClientConfig>) -> TlsStream<S> {
    let name = ServerName::try_from("localhost").expect("a valid name");
    let session = ClientConnection::new(config.clone(), name).expect("a client session");
    StreamOwned::new(session, transport)
}

/// A tungstenite client over wss://, handshaked.
pub fn wss_client(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsClient {
    let url = format!("wss://localhost:{}/", addr.port());
    let (ws, response) = tungstenite::client(url, tls_stream(addr, config)).expect("wss handshake");
    assert_eq!(response.status(), 101);
    ws
}
