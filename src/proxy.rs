//! curl's proxy rules as pure functions: (url, proxy settings) -> Direct | Via(proxy, rule).
//! IMDS never comes here: `http` sends it direct, whatever the environment says.
//! (STUB: interface fixed, implementation in progress.)

use std::collections::BTreeMap;
use std::fmt;

/// A proxy URL. `Display` hides the password: `http://user:***@proxy:3128`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    password: Option<String>,
}

impl ProxyUrl {
    /// Parse `http://[user[:password]@]host[:port][/]` (curl's defaults: no scheme means http,
    /// no port means 1080; `https://` proxies are accepted). Errors say what is wrong.
    pub fn parse(s: &str) -> Result<ProxyUrl, String> {
        let _ = s;
        todo!()
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The full URL including credentials, for ureq and the agent. Never log it.
    pub fn with_credentials(&self) -> String {
        todo!()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// The proxy settings in force, each with where it came from (for the log and `proxy URL`).
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    /// Used for `https://` URLs.
    pub https: Option<(ProxyUrl, String)>,
    /// Used for `http://` URLs.
    pub http: Option<(ProxyUrl, String)>,
    /// The NO_PROXY list as given, and where it came from.
    pub no_proxy: Option<(String, String)>,
}

/// How one URL is reached, and the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Direct { rule: String },
    Via { proxy: ProxyUrl, rule: String },
}

impl ProxyConfig {
    pub fn route(&self, url: &str) -> Route {
        let _ = url;
        todo!()
    }

    /// True when a proxy is set and NO_PROXY does not cover 169.254.169.254.
    pub fn lacks_imds_bypass(&self) -> bool {
        todo!()
    }
}

/// The NO_PROXY entry that matches `host`, if any (curl's rules).
pub fn no_proxy_match(no_proxy: &str, host: &str) -> Option<String> {
    let _ = (no_proxy, host);
    todo!()
}

/// The NO_PROXY value for the agent's environment: the given list extended with
/// `169.254.169.254,localhost,127.0.0.1` (entries already there are not repeated).
pub fn agent_no_proxy(existing: Option<&str>) -> String {
    let _ = existing;
    todo!()
}

/// Parse `/etc/environment` (pam_env's simple `KEY=value` form, optional quotes, `export ` prefix).
pub fn parse_etc_environment(content: &str) -> BTreeMap<String, String> {
    let _ = content;
    todo!()
}

/// (scheme, host, port) of a URL; IPv6 hosts come back without brackets.
pub fn split_url(url: &str) -> Option<(String, String, u16)> {
    let _ = url;
    todo!()
}
