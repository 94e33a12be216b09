//! Which CA certificates are trusted, in words for advice: `SSL_CERT_FILE`, else `SSL_CERT_DIR`,
//! else the distribution's bundle (the order `http::load_tls` reads them in).

use crate::azure::http::{CA_BUNDLES, CA_DIRS};

/// Where the trusted CAs come from, in the order `http::load_tls` looks (for advice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustStore {
    /// SSL_CERT_FILE is set: only that file is trusted.
    File(String),
    /// SSL_CERT_DIR is set (and SSL_CERT_FILE is not): only those directories.
    Dir(String),
    /// The distribution's bundle (or /etc/ssl/certs).
    System(String),
}

impl TrustStore {
    /// The store in effect for this process.
    pub fn current() -> TrustStore {
        if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
            TrustStore::File(std::path::PathBuf::from(f).display().to_string())
        } else if let Some(d) = std::env::var_os("SSL_CERT_DIR") {
            TrustStore::Dir(std::path::PathBuf::from(d).display().to_string())
        } else {
            let b = CA_BUNDLES
                .iter()
                .find(|b| std::path::Path::new(b).is_file())
                .copied()
                .unwrap_or(CA_DIRS[0]);
            TrustStore::System(b.to_string())
        }
    }

    /// "SSL_CERT_FILE (/x.pem)", "SSL_CERT_DIR (/d)", "this machine's CA store (/etc/...)".
    pub fn describe(&self) -> String {
        match self {
            TrustStore::File(f) => format!("SSL_CERT_FILE ({f})"),
            TrustStore::Dir(d) => format!("SSL_CERT_DIR ({d})"),
            TrustStore::System(b) => format!("this machine's CA store ({b})"),
        }
    }

    /// How to make a CA trusted, for the store in effect.
    pub fn add_ca_advice(&self) -> String {
        match self {
            TrustStore::File(f) => format!(
                "add its CA certificate (PEM) to {f}: SSL_CERT_FILE is set, so only that file is \
                 trusted"
            ),
            TrustStore::Dir(d) => format!(
                "add its CA certificate (PEM) to a file in {d}: SSL_CERT_DIR is set, so only that \
                 directory is trusted"
            ),
            TrustStore::System(b) => format!(
                "add its CA to this machine's CA store ({b}: update-ca-certificates on \
                 Debian/Ubuntu, update-ca-trust on RHEL/Azure Linux, SUSE), or point SSL_CERT_FILE \
                 or SSL_CERT_DIR at it"
            ),
        }
    }
}
