//! The HTTP clients. IMDS: plain HTTP, never through a proxy, short time-outs. Everything else:
//! the proxy chosen per request by `proxy::ProxyConfig::route` (curl's rules, not ureq's), TLS
//! through rustls (ring) trusting the system CA store, so a TLS-inspecting proxy whose CA the image
//! trusts works. TLS roots are loaded on the first HTTPS request only: `token` never pays for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

use crate::azure::proxy::{split_url, ProxyConfig, ProxyUrl, Route};
pub use crate::azure::trust::TrustStore;

/// Responses larger than this are cut off (IMDS and ARM answers are a few KiB).
const MAX_BODY_BYTES: u64 = 4 << 20;
const USER_AGENT: &str = concat!("arc-enroll/", env!("CARGO_PKG_VERSION"));

/// Where the system's CA certificates are looked for when neither SSL_CERT_FILE nor SSL_CERT_DIR
/// is set (Debian/Ubuntu, RHEL/Fedora, SUSE, Alpine).
pub(crate) const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
pub(crate) const CA_DIRS: &[&str] = &["/etc/ssl/certs"];

/// A response: status, `Retry-After` (parsed), ARM's `x-ms-ratelimit-remaining-*` headers
/// (lower-case names), `Location` (long-running operations), and the body as text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub ratelimit: Vec<(String, String)>,
    pub location: Option<String>,
    pub body: String,
}

/// A request that got no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout(String),
    Connect(String),
    Tls(String),
    Proxy(String),
    /// The proxy answered CONNECT with this HTTP status (407 asks for credentials; tinyproxy
    /// answers 401 to credentials it rejects; 403 and others refuse the destination), and what to
    /// do about it for this proxy and destination (`proxy_refusal_advice`).
    ProxyStatus {
        code: u16,
        advice: String,
    },
    Other(String),
    /// SIGTERM/SIGINT arrived while waiting for the answer.
    Interrupted(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(m) => write!(f, "timed out ({m})"),
            Failure::Connect(m) => write!(f, "connection failed ({m})"),
            Failure::Tls(m) => write!(f, "TLS failed ({m})"),
            Failure::Proxy(m) => write!(f, "proxy failed ({m})"),
            Failure::ProxyStatus { code, advice } => {
                write!(f, "{}", proxy_status_text(*code))?;
                if !advice.is_empty() {
                    write!(f, ": {advice}")?;
                }
                Ok(())
            }
            Failure::Other(m) => write!(f, "{m}"),
            Failure::Interrupted(sig) => write!(f, "interrupted by {sig}"),
        }
    }
}

/// The clients of one run. Cheap to create; agents are built on first use. An https URL always
/// gets an https-only agent (its TLS config built with the ring provider, every redirect hop
/// https too), a plain-http URL an agent that follows no redirect: which URL comes first never
/// changes what the other gets.
pub struct Http {
    proxy: ProxyConfig,
    direct: OnceLock<Agent>,
    direct_https: OnceLock<Agent>,
    imds: OnceLock<Agent>,
    via: Mutex<HashMap<String, Agent>>,
    tls: OnceLock<Result<TlsConfig, String>>,
}

impl Http {
    pub fn new(proxy: ProxyConfig) -> Http {
        Http {
            proxy,
            direct: OnceLock::new(),
            direct_https: OnceLock::new(),
            imds: OnceLock::new(),
            via: Mutex::new(HashMap::new()),
            tls: OnceLock::new(),
        }
    }

    pub fn proxy_config(&self) -> &ProxyConfig {
        &self.proxy
    }

    /// GET from IMDS: direct, whatever the environment says (FACTS §5.1: IMDS behind a proxy is
    /// unsupported), no redirects, `Metadata: true`.
    pub fn imds_get(&self, url: &str, timeout: Duration) -> Result<Reply, Failure> {
        let agent = self.imds.get_or_init(imds_agent);
        let req = agent
            .get(url)
            .header("Metadata", "true")
            .config()
            .timeout_global(Some(timeout))
            .build();
        interruptible(move || finish(req.call()))
    }

    /// A request to another cloud's instance metadata service (GCP metadata server, AWS IMDSv2):
    /// direct like IMDS, whatever the environment says (CONTRACT §6: metadata endpoints are never
    /// proxied), no redirects, only the headers given (no `Metadata: true`).
    pub fn metadata_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let agent = self.imds.get_or_init(imds_agent);
        match method {
            "GET" => {
                let mut req = agent.get(url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = req.config().timeout_global(Some(timeout)).build();
                interruptible(move || finish(req.call()))
            }
            "PUT" => {
                let mut req = agent.put(url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = req.config().timeout_global(Some(timeout)).build();
                interruptible(move || finish(req.send_empty()))
            }
            _ => Err(Failure::Other(format!("unsupported method {method}"))),
        }
    }

    /// A request to anything but IMDS, through the proxy `route` picks for this URL.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let agent = self.agent_for(url)?;
        let result = match body {
            None => {
                let mut req = match method {
                    "GET" => agent.get(url),
                    "DELETE" => agent.delete(url),
                    "HEAD" => agent.head(url),
                    _ => return Err(Failure::Other(format!("unsupported method {method}"))),
                };
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = req.config().timeout_global(Some(timeout)).build();
                interruptible(move || finish(req.call()))
            }
            Some(b) => {
                let mut req = match method {
                    "POST" => agent.post(url),
                    "PUT" => agent.put(url),
                    "PATCH" => agent.patch(url),
                    _ => return Err(Failure::Other(format!("unsupported method {method}"))),
                };
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = req.config().timeout_global(Some(timeout)).build();
                let b = b.to_string();
                interruptible(move || finish(req.send(b)))
            }
        };
        result.map_err(|f| self.explain(url, f))
    }

    /// Download to bytes (the agent installer), through the proxy.
    pub fn download(
        &self,
        url: &str,
        timeout: Duration,
        limit: u64,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let agent = self.agent_for(url)?;
        let req = agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        interruptible(move || {
            let mut resp = req.call().map_err(classify)?;
            let status = resp.status().as_u16();
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(classify)?;
            Ok((status, bytes))
        })
        .map_err(|f| self.explain(url, f))
    }

    /// A CONNECT refusal gets the advice for this URL's proxy and destination.
    fn explain(&self, url: &str, f: Failure) -> Failure {
        match f {
            Failure::ProxyStatus { code, advice } if advice.is_empty() => {
                let advice = match (self.proxy.route(url), split_url(url)) {
                    (Route::Via { proxy, .. }, Some((_, host, port))) => {
                        proxy_refusal_advice(code, &proxy, &host, port)
                    }
                    _ => String::new(),
                };
                Failure::ProxyStatus { code, advice }
            }
            other => other,
        }
    }

    fn agent_for(&self, url: &str) -> Result<Agent, Failure> {
        let https = url.to_ascii_lowercase().starts_with("https://");
        let tls = if https {
            Some(self.tls().map_err(Failure::Tls)?)
        } else {
            None
        };
        match self.proxy.route(url) {
            Route::Direct { .. } => {
                let slot = if https {
                    &self.direct_https
                } else {
                    &self.direct
                };
                Ok(slot
                    .get_or_init(|| build_agent(None, tls.clone(), https))
                    .clone())
            }
            Route::Via { proxy, .. } => {
                let url = proxy.with_credentials();
                let key = format!("{https} {url}");
                let mut via = self.via.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(a) = via.get(&key) {
                    return Ok(a.clone());
                }
                let p = ureq::Proxy::new(&url).map_err(|e| {
                    Failure::Proxy(format!(
                        "cannot use proxy {proxy}: {}",
                        scrub(&e.to_string(), &proxy)
                    ))
                })?;
                // An https:// proxy needs TLS even for a plain-http target.
                let a = build_agent(Some(p), tls.or_else(|| self.tls().ok()), https);
                via.insert(key, a.clone());
                Ok(a)
            }
        }
    }

    fn tls(&self) -> Result<TlsConfig, String> {
        self.tls.get_or_init(load_tls).clone()
    }
}

/// How often a waiting request looks for SIGTERM/SIGINT.
const SIGNAL_POLL: Duration = Duration::from_millis(25);

/// Run a request on a worker thread and wait for its answer in slices, checking for SIGTERM/SIGINT
/// between them: a stop signal ends the wait at once (`Failure::Interrupted`) however long the
/// request's own time-out is. The abandoned request ends on that time-out (it is bounded by the
/// deadline) or with the process, which exits right after.
fn interruptible<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    if let Some(sig) = crate::signals::received() {
        return Err(Failure::Interrupted(sig));
    }
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let _ = tx.send(op());
        })
        .map_err(|e| Failure::Other(format!("cannot start a thread for the request: {e}")))?;
    loop {
        match rx.recv_timeout(SIGNAL_POLL) {
            Ok(r) => return r,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(sig) = crate::signals::received() {
                    return Err(Failure::Interrupted(sig));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Failure::Other(
                    "the request ended without an answer (its thread stopped)".into(),
                ))
            }
        }
    }
}

/// The metadata agent (IMDS, GCP, AWS): no proxy, no redirects.
fn imds_agent() -> Agent {
    Agent::new_with_config(
        Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(USER_AGENT)
            .build(),
    )
}

/// For an https URL (`https`): https only, so a redirect to http:// is refused, not followed. For a
/// plain-http URL: no redirects at all, so it never turns into a TLS connection without our config.
fn build_agent(proxy: Option<ureq::Proxy>, tls: Option<TlsConfig>, https: bool) -> Agent {
    let mut b = Agent::config_builder()
        .proxy(proxy)
        .http_status_as_error(false)
        .user_agent(USER_AGENT);
    if let Some(t) = tls {
        b = b.tls_config(t);
    }
    b = if https {
        b.https_only(true)
    } else {
        b.max_redirects(0)
    };
    Agent::new_with_config(b.build())
}

fn finish(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, Failure> {
    let mut resp = result.map_err(classify)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry::parse_retry_after);
    let ratelimit = resp
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-ratelimit-remaining-"))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_string()
        .map_err(classify)?;
    Ok(Reply {
        status,
        retry_after,
        ratelimit,
        location,
        body,
    })
}

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    match e {
        E::Timeout(t) => Failure::Timeout(format!("no answer within the time-out ({t})")),
        E::HostNotFound => Failure::Connect("host name not found (DNS)".into()),
        E::ConnectionFailed => Failure::Connect("could not connect".into()),
        E::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                Failure::Timeout(io.to_string())
            }
            std::io::ErrorKind::ConnectionRefused => Failure::Connect("connection refused".into()),
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe => {
                Failure::Connect(format!("connection closed before a full answer ({io})"))
            }
            _ => Failure::Other(io.to_string()),
        },
        E::Tls(m) => Failure::Tls(m.to_string()),
        E::Rustls(r) => Failure::Tls(describe_rustls(&r)),
        // ureq says "proxy server responded 407/407" (the code twice): keep the code only.
        E::ConnectProxyFailed(m) => match connect_status(&m) {
            Some(code) => Failure::ProxyStatus {
                code,
                advice: String::new(),
            },
            None => Failure::Proxy(m),
        },
        E::Protocol(p) => Failure::Connect(format!("malformed HTTP answer ({p})")),
        E::RequireHttpsOnly(to) => Failure::Other(format!(
            "refused to follow a redirect to {}: it leaves https (the request carries a token or \
             fetches code that runs as root)",
            crate::text::escape_remote(&to)
        )),
        E::BodyExceedsLimit(n) => Failure::Other(format!("answer larger than {n} bytes")),
        other => Failure::Other(other.to_string()),
    }
}

/// "the proxy answered CONNECT with HTTP 407 (Proxy Authentication Required)".
pub fn proxy_status_text(code: u16) -> String {
    format!(
        "the proxy answered CONNECT with HTTP {code}{}",
        status_reason(code)
    )
}

/// The status code in ureq's "proxy server responded 407/407".
fn connect_status(m: &str) -> Option<u16> {
    let rest = m.split("responded ").nth(1)?;
    let code: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// " (Reason Phrase)" for the statuses a proxy gives to CONNECT.
fn status_reason(code: u16) -> &'static str {
    match code {
        400 => " (Bad Request)",
        401 => " (Unauthorized)",
        403 => " (Forbidden)",
        404 => " (Not Found)",
        405 => " (Method Not Allowed)",
        407 => " (Proxy Authentication Required)",
        502 => " (Bad Gateway)",
        503 => " (Service Unavailable)",
        504 => " (Gateway Timeout)",
        _ => "",
    }
}

/// What to do when the proxy `p` answered CONNECT to `host:port` with `code`: credentials for
/// 407/401 (asked for, or rejected when the proxy URL already carries them), else allowing the
/// destination.
pub fn proxy_refusal_advice(code: u16, p: &ProxyUrl, host: &str, port: u16) -> String {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match (code, &p.user) {
        (407 | 401, Some(user)) => format!(
            "the proxy {p} rejected the credentials in the proxy URL (user {user}): check the user \
             name and password (percent-encode @ : / in them) or ask the proxy's administrators \
             whether this user may CONNECT to {target}"
        ),
        (407 | 401, None) => format!(
            "the proxy {p} requires authentication: put user:password in the proxy URL \
             (http://user:password@host:port)"
        ),
        _ => format!("allow CONNECT to {target} at the proxy {p}"),
    }
}

fn describe_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let store = TrustStore::current();
            format!(
                "the server's certificate is not trusted by {} ({c:?}); if a proxy inspects TLS, {}",
                store.describe(),
                store.add_ca_advice()
            )
        }
        other => other.to_string(),
    }
}

/// Remove a proxy's password from a message that might echo its URL (encoded or not).
fn scrub(msg: &str, proxy: &ProxyUrl) -> String {
    proxy.scrub(msg)
}

/// The trusted CAs as a rustls root store (the same certificates every request trusts), for
/// `tls_probe`.
pub fn root_store() -> Result<Arc<rustls::RootCertStore>, String> {
    let (certs, _) = load_roots()?;
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(
        certs
            .into_iter()
            .map(|c| CertificateDer::from(c.der().to_vec())),
    );
    Ok(Arc::new(store))
}

/// The system CA store: SSL_CERT_FILE, else SSL_CERT_DIR, else the distribution's bundle.
fn load_tls() -> Result<TlsConfig, String> {
    let (certs, sources) = load_roots()?;
    log::debug!(
        "trusting {} CA certificates from {}",
        certs.len(),
        sources.join(", ")
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .unversioned_rustls_crypto_provider(provider)
        .build())
}

/// The trusted certificates and where they came from.
type Roots = (Vec<Certificate<'static>>, Vec<String>);

fn load_roots() -> Result<Roots, String> {
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    let mut sources = Vec::new();
    // var_os: a non-UTF-8 path is still a path (and `var` would treat it as unset).
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        let f = std::path::PathBuf::from(f);
        read_pem(&f, &mut certs)
            .map_err(|e| format!("cannot read SSL_CERT_FILE {}: {e}", f.display()))?;
        sources.push(f.display().to_string());
    } else if let Some(d) = std::env::var_os("SSL_CERT_DIR") {
        for dir in std::env::split_paths(&d) {
            read_pem_dir(&dir, &mut certs);
        }
        sources.push(std::path::PathBuf::from(d).display().to_string());
    } else if let Some(b) = CA_BUNDLES
        .iter()
        .find(|b| read_pem(std::path::Path::new(b), &mut certs).is_ok() && !certs.is_empty())
    {
        sources.push(b.to_string());
    } else {
        for d in CA_DIRS {
            read_pem_dir(std::path::Path::new(d), &mut certs);
            sources.push(d.to_string());
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "no CA certificates found in {}; install ca-certificates or set SSL_CERT_FILE",
            sources.join(", ")
        ));
    }
    Ok((certs, sources))
}

/// The certificates in a PEM file (other sections and unreadable ones are skipped).
fn read_pem(path: &std::path::Path, out: &mut Vec<Certificate<'static>>) -> std::io::Result<()> {
    let data = std::fs::read(path)?;
    for der in CertificateDer::pem_slice_iter(&data).flatten() {
        out.push(Certificate::from_der(&der).to_owned());
    }
    Ok(())
}

fn read_pem_dir(dir: &std::path::Path, out: &mut Vec<Certificate<'static>>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() {
                let _ = read_pem(&p, out);
            }
        }
    }
}
