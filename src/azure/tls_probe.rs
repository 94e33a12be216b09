//! What a TLS server (or a TLS-inspecting proxy in front of it) presents: a diagnostic handshake
//! with a recording certificate verifier, run only to explain a TLS failure or to look for what
//! the agent will refuse. The verifier wraps rustls' WebPKI verifier with the same roots as every
//! other request, records the chain it was shown and returns the real verdict; after the
//! handshake nothing is sent (no request, no token).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::azure::proxy::ProxyUrl;

/// One certificate of the presented chain, as far as the advice needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// The serial number's DER INTEGER is negative (RFC 5280 requires a positive one).
    pub negative_serial: bool,
}

/// The chain the server presented (end entity first), and the verdict of the normal verifier.
#[derive(Clone, Debug)]
pub struct Presented {
    pub chain: Vec<CertInfo>,
    pub verdict: Result<(), String>,
}

impl Presented {
    /// The issuer named by the end-entity certificate.
    pub fn issuer(&self) -> Option<&str> {
        self.chain.first().map(|c| c.issuer.as_str())
    }

    /// Certificates of the chain with a negative serial number, by subject.
    pub fn negative_serials(&self) -> Vec<&str> {
        self.chain
            .iter()
            .filter(|c| c.negative_serial)
            .map(|c| c.subject.as_str())
            .collect()
    }
}

/// What the verifier was shown, and its verdict.
type Seen = (Vec<CertInfo>, Result<(), String>);

#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .map(|c| cert_info(c.as_ref()))
            .collect();
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            chain,
            verdict.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        ));
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Connect to `host:port` (through `proxy` with CONNECT when given), do a TLS handshake with the
/// recording verifier and report what was presented. `roots` are the trusted CAs.
pub fn presented_with(
    host: &str,
    port: u16,
    proxy: Option<&ProxyUrl>,
    roots: Arc<RootCertStore>,
    timeout: Duration,
) -> Result<Presented, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
    let recorder = Arc::new(Recorder {
        inner,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| format!("bad host name {host}: {e}"))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut sock = match proxy {
        None => connect(host, port, timeout)?,
        Some(p) => {
            let mut s = connect(&p.host, p.port, timeout)?;
            tunnel(&mut s, p, host, port)?;
            s
        }
    };
    // Handshake only: complete_io drives it; an error after the verifier ran is the verdict.
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            if recorder
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
            {
                return Err(format!(
                    "TLS handshake with {host}:{port} failed before a certificate was seen: {e}"
                ));
            }
            break;
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let seen = recorder
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match seen {
        Some((chain, verdict)) => Ok(Presented { chain, verdict }),
        None => Err(format!("{host}:{port} presented no certificate")),
    }
}

/// [`presented_with`] with the CAs every request trusts; None (logged at debug) when the
/// diagnostic handshake itself fails.
pub fn presented(
    host: &str,
    port: u16,
    proxy: Option<&ProxyUrl>,
    timeout: Duration,
) -> Option<Presented> {
    let roots = crate::azure::http::root_store().ok()?;
    match presented_with(host, port, proxy, roots, timeout) {
        Ok(p) => Some(p),
        Err(e) => {
            log::debug!("could not see the certificate {host}:{port} presents: {e}");
            None
        }
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host}:{port} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(timeout));
                let _ = s.set_write_timeout(Some(timeout));
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {host}:{port}: {e}"),
        }
    }
    Err(last)
}

/// CONNECT through an http:// proxy (an https:// proxy is not probed: its own TLS would come first).
fn tunnel(s: &mut TcpStream, p: &ProxyUrl, host: &str, port: u16) -> Result<(), String> {
    if p.scheme != "http" {
        return Err(format!(
            "the presented certificate is not probed through a {}:// proxy",
            p.scheme
        ));
    }
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = &p.user {
        use base64::Engine;
        let cred = format!("{user}:{}", p.password().unwrap_or(""));
        req.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(cred)
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("proxy {p}: {e}"))?;
    // Read the answer's head byte by byte so no TLS byte after it is consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(format!("proxy {p}: answer head too long"));
        }
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => return Err(format!("proxy {p} closed the connection")),
            Err(e) => return Err(format!("proxy {p}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("proxy {p} answered CONNECT with {status}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- a small DER reader

/// (tag, content, rest) of the DER element at the start of `b`.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, b) = b.split_first()?;
    let (len, b) = if l0 < 0x80 {
        (l0 as usize, b)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, &b[n..])
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// Subject, issuer and serial sign of a DER certificate (best effort: "?" where unreadable).
pub fn cert_info(der: &[u8]) -> CertInfo {
    parse_cert(der).unwrap_or(CertInfo {
        subject: "?".into(),
        issuer: "?".into(),
        negative_serial: false,
    })
}

fn parse_cert(der: &[u8]) -> Option<CertInfo> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    let (0x02, serial, r) = tlv(rest)? else {
        return None;
    };
    let negative_serial = serial.first().is_some_and(|b| b & 0x80 != 0);
    let (0x30, _sig_alg, r) = tlv(r)? else {
        return None;
    };
    let (0x30, issuer, r) = tlv(r)? else {
        return None;
    };
    let (0x30, _validity, r) = tlv(r)? else {
        return None;
    };
    let (0x30, subject, _) = tlv(r)? else {
        return None;
    };
    Some(CertInfo {
        subject: name_text(subject),
        issuer: name_text(issuer),
        negative_serial,
    })
}

/// A Name as "CN=..., O=..." (the attributes people recognise; others skipped).
fn name_text(mut rdns: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((0x31, set, r)) = tlv(rdns) {
        rdns = r;
        let mut atvs = set;
        while let Some((0x30, atv, r2)) = tlv(atvs) {
            atvs = r2;
            let Some((0x06, oid, val)) = tlv(atv) else {
                continue;
            };
            let Some((_, v, _)) = tlv(val) else { continue };
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                [0x55, 0x04, 0x06] => "C",
                _ => continue,
            };
            let text: String = String::from_utf8_lossy(v)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(200)
                .collect();
            parts.push(format!("{key}={text}"));
        }
    }
    if parts.is_empty() {
        "(no CN/O in the name)".into()
    } else {
        parts.join(", ")
    }
}
