//! HTTPS for the federation fakes (Entra, STS, GitHub's OIDC endpoint), as the fake ARM does it:
//! a test CA generated in the process, a `localhost`/`127.0.0.1` leaf signed by it, the CA's
//! certificate written to `ca.pem` for the client's `SSL_CERT_FILE`. One [`TestCa`] can serve
//! several fakes, so a test needs one CA file for all of them (plus the fake ARM's own, which
//! [`TestCa::bundle`] appends).

use crate::http::{serve, Handler};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const FEDERATION_CA_NAME: &str = "arc-enroll fake federation test CA";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A CA whose certificate is in `dir/ca.pem`, and a server certificate it signed.
pub struct TestCa {
    dir: PathBuf,
    owned_dir: bool,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A new CA; `dir` None => a fresh temp dir removed on drop.
    pub fn new(dir: Option<&Path>) -> std::io::Result<Arc<TestCa>> {
        let (dir, owned_dir) = match dir {
            Some(d) => (d.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "fake-fed-ca-{}-{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(std::io::Error::other)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, FEDERATION_CA_NAME);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(std::io::Error::other)?;
        let ca = p.self_signed(&ca_key).map_err(std::io::Error::other)?;
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(std::io::Error::other)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(std::io::Error::other)?;
        let leaf_cert = leaf
            .signed_by(&leaf_key, &ca, &ca_key)
            .map_err(std::io::Error::other)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        Ok(Arc::new(TestCa {
            dir,
            owned_dir,
            server: Arc::new(server),
        }))
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `dir/bundle.pem`: this CA followed by the given PEM files (e.g. the fake ARM's `ca.pem`),
    /// for one `SSL_CERT_FILE`.
    pub fn bundle(&self, others: &[&Path]) -> std::io::Result<PathBuf> {
        let mut text = std::fs::read_to_string(self.ca_pem())?;
        for o in others {
            text.push_str(&std::fs::read_to_string(o)?);
        }
        let out = self.dir.join("bundle.pem");
        std::fs::write(&out, text)?;
        Ok(out)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The accept loop every HTTPS fake runs (`HttpsServer`, the fake ARM): one thread per
/// connection, one request each (like `http::Server`), until dropped.
pub struct TlsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    pub fn start(
        listener: TcpListener,
        cfg: Arc<rustls::ServerConfig>,
        handler: Handler,
    ) -> std::io::Result<TlsServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let h = handler.clone();
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let peer = tcp.peer_addr().ok();
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = tcp.set_nodelay(true);
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let _ = serve(&mut tls, peer, &h);
                    tls.conn.send_close_notify();
                    let _ = tls.conn.complete_io(&mut tls.sock);
                });
            }
        });
        Ok(TlsServer { addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// An HTTPS/1.1 fake with a certificate from `ca`.
pub struct HttpsServer {
    server: TlsServer,
    _ca: Arc<TestCa>,
}

impl HttpsServer {
    pub fn start(listen: &str, ca: Arc<TestCa>, handler: Handler) -> std::io::Result<HttpsServer> {
        let server = TlsServer::start(TcpListener::bind(listen)?, ca.server.clone(), handler)?;
        Ok(HttpsServer { server, _ca: ca })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// A ureq agent for the fakes' own tests that trusts `ca` (and only it).
pub fn test_agent(ca: &TestCa) -> ureq::Agent {
    let pem = std::fs::read(ca.ca_pem()).expect("ca.pem");
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .new_agent()
}
