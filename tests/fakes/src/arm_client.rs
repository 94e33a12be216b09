//! A minimal HTTPS client for the fakes' own ARM calls (the fake agent's resource write when it
//! is pointed at a fake ARM, and the fakes' tests): one request, the test CA trusted; through the
//! proxy given to `request_via`, else ureq's default (the environment's `https_proxy`, if any).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// One answer: status, headers (lower-case names), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }
}

/// `method url` with `Authorization: Bearer <token>` and an optional JSON body, trusting the
/// certificates in `ca_pem`.
pub fn request(
    method: &str,
    url: &str,
    ca_pem: &Path,
    token: &str,
    body: Option<&str>,
) -> Result<Answer, String> {
    request_via(None, method, url, ca_pem, token, body)
}

/// `request` through an HTTP proxy (`http://host:port`) when one is given.
pub fn request_via(
    proxy: Option<&str>,
    method: &str,
    url: &str,
    ca_pem: &Path,
    token: &str,
    body: Option<&str>,
) -> Result<Answer, String> {
    let proxy = match proxy.filter(|p| !p.is_empty()) {
        Some(p) => Some(ureq::Proxy::new(p).map_err(|e| format!("proxy {p}: {e}"))?),
        None => None,
    };
    let data = std::fs::read(ca_pem).map_err(|e| format!("{}: {e}", ca_pem.display()))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&data)
        .flatten()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls);
    if proxy.is_some() {
        config = config.proxy(proxy);
    }
    let agent = ureq::Agent::new_with_config(config.build());
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json");
    let result = match body {
        Some(b) => agent.run(req.body(b.to_string()).map_err(|e| e.to_string())?),
        None => agent.run(req.body(()).map_err(|e| e.to_string())?),
    };
    let mut resp = result.map_err(|e| e.to_string())?;
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}
