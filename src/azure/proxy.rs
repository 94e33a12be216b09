//! curl's proxy rules as pure functions: (url, proxy settings) -> Direct | Via(proxy, rule).
//! IMDS never comes here: `http` sends it direct, whatever the environment says.
//!
//! Where curl's documentation (curl(1) ENVIRONMENT and `--noproxy`, CURLOPT_NOPROXY(3),
//! CURLOPT_PROXYPORT(3)) is silent or its code differs from it, the choice made here is noted
//! next to the code. In short:
//! - NO_PROXY entries are separated by commas and/or blanks in any mix (the contract; curl's own
//!   parser stops at the first blank that is not followed by a comma).
//! - `*` disables the proxy only when it is the whole list (curl compares the whole string).
//! - Entries with a port (`host:8080`) never match: curl compares the entry as written with the
//!   host name (which carries no port), so such an entry is inert there too.
//!   `no_proxy_unusable` reports them, along with `*.example.com` wildcards and bad CIDR ranges.
//! - CIDR `/0` matches every address of that family, as the documentation's "number of network
//!   bits to use in the comparison" says (curl's code treats `/0` as "whole address").

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Default proxy ports when the proxy URL has none (CURLOPT_PROXYPORT(3): "443 for https
/// proxies and 1080 for all others").
pub const DEFAULT_HTTP_PROXY_PORT: u16 = 1080;
pub const DEFAULT_HTTPS_PROXY_PORT: u16 = 443;

/// The IMDS address that must always bypass any proxy.
pub const IMDS_HOST: &str = "169.254.169.254";

/// A proxy URL. `Display` hides the password: `http://user:***@proxy:3128`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: String,
    /// Lower case; IPv6 addresses without brackets.
    pub host: String,
    pub port: u16,
    /// Percent-decoded.
    pub user: Option<String>,
    /// Percent-decoded.
    password: Option<String>,
}

impl ProxyUrl {
    /// Parse `http://[user[:password]@]host[:port][/]` (curl's defaults: no scheme means http,
    /// no port means 1080 — 443 for an `https://` proxy; `https://` proxies are accepted).
    /// Errors say what is wrong and never contain the password.
    ///
    /// The user info ends at the *last* `@`, so a password with an unencoded `/`, `?`, `#` or
    /// `@` still parses; `%XX` escapes in user and password are decoded.
    pub fn parse(s: &str) -> Result<ProxyUrl, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("proxy URL is empty".into());
        }
        let (scheme, rest) = match s.find("://") {
            Some(i) => (s[..i].to_ascii_lowercase(), &s[i + 3..]),
            None => ("http".to_string(), s),
        };
        match scheme.as_str() {
            "http" | "https" => {}
            sc if sc.starts_with("socks") => {
                return Err(format!(
                    "{sc}:// proxies are not supported: arc-enroll only uses HTTP proxies \
                     (CONNECT); give an http:// or https:// proxy URL"
                ))
            }
            "" => return Err("proxy URL has an empty scheme before \"://\"".into()),
            sc => {
                if !is_scheme(sc) {
                    return Err("proxy URL has an invalid scheme".into());
                }
                return Err(format!(
                    "unsupported proxy scheme \"{sc}\": only http:// and https:// proxies are supported"
                ));
            }
        }

        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                let user =
                    percent_decode(u).map_err(|e| format!("proxy URL: the user name has {e}"))?;
                let password = match p {
                    Some(p) => Some(
                        percent_decode(p)
                            .map_err(|e| format!("proxy URL: the password has {e}"))?,
                    ),
                    None => None,
                };
                if user.is_empty() && password.is_none() {
                    (None, None)
                } else {
                    (Some(user), password)
                }
            }
        };

        // Authority ends at the first '/', '?' or '#'; only an empty path or "/" may follow.
        let end = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
        let (authority, tail) = hostpart.split_at(end);
        match tail.chars().next() {
            None => {}
            Some('/') if tail == "/" => {}
            Some('/') => {
                return Err(
                    "proxy URL must not have a path (only an optional trailing \"/\")".into(),
                )
            }
            Some('?') => return Err("proxy URL must not have a query (\"?...\")".into()),
            Some(_) => return Err("proxy URL must not have a fragment (\"#...\")".into()),
        }

        let (host, port_str) = if let Some(after) = authority.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or("proxy URL: IPv6 address is missing its closing \"]\"")?;
            let inner = &after[..close];
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("proxy URL: \"[{inner}]\" is not a valid IPv6 address"))?;
            let rest = &after[close + 1..];
            let port = match rest.strip_prefix(':') {
                Some(p) => Some(p),
                None if rest.is_empty() => None,
                None => {
                    return Err("proxy URL: unexpected text after the IPv6 address \"]\"".into())
                }
            };
            (ip.to_string(), port)
        } else {
            let colons = authority.matches(':').count();
            if colons > 1 {
                return Err(
                    "proxy URL: an IPv6 address must be written in brackets, e.g. http://[::1]:3128"
                        .into(),
                );
            }
            match authority.split_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        if host.is_empty() {
            return Err("proxy URL has no host name".into());
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!(
                "proxy host \"{host}\" contains characters not allowed in a host name"
            ));
        }
        let port = match port_str {
            None => {
                if scheme == "https" {
                    DEFAULT_HTTPS_PROXY_PORT
                } else {
                    DEFAULT_HTTP_PROXY_PORT
                }
            }
            // The port text is not echoed: in a mistyped `user:secret` it would be the password.
            Some("") => return Err("proxy URL has an empty port after \":\"".into()),
            Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err("proxy URL port is not a number (expected 1-65535)".into())
            }
            Some(p) => match p.parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => n as u16,
                _ => return Err("proxy URL port is out of range (expected 1-65535)".into()),
            },
        };
        Ok(ProxyUrl {
            scheme,
            host,
            port,
            user,
            password,
        })
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The full URL including credentials, for ureq and the agent. Never log it.
    pub fn with_credentials(&self) -> String {
        self.render(self.password.as_deref().map(percent_encode).as_deref())
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn host_port(&self) -> String {
        format!("{}:{}", bracket_host(&self.host), self.port)
    }

    fn render(&self, password: Option<&str>) -> String {
        let mut out = format!("{}://", self.scheme);
        if let Some(user) = &self.user {
            out.push_str(&percent_encode(user));
            if let Some(p) = password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        out.push_str(&self.host_port());
        out
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = self.password.as_ref().map(|_| "***");
        f.write_str(&self.render(masked))
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
    /// How `url` is reached: `https://` URLs use the https proxy, `http://` URLs the http proxy,
    /// anything else goes direct. NO_PROXY is checked first.
    pub fn route(&self, url: &str) -> Route {
        let Some((scheme, host, _port)) = split_url(url) else {
            let rule = match url.trim().split_once("://") {
                Some((sc, _)) if is_scheme(sc) && !is_http_scheme(sc) => {
                    format!(
                        "{}:// URLs are never sent through a proxy",
                        sc.to_ascii_lowercase()
                    )
                }
                _ => "not an absolute http(s) URL, so no proxy applies".into(),
            };
            return Route::Direct { rule };
        };
        let proxy = match scheme.as_str() {
            "https" => &self.https,
            "http" => &self.http,
            other => {
                return Route::Direct {
                    rule: format!("{other}:// URLs are never sent through a proxy"),
                }
            }
        };
        if let Some((list, source)) = &self.no_proxy {
            if let Some(entry) = no_proxy_match(list, &host) {
                return Route::Direct {
                    rule: format!("NO_PROXY entry \"{entry}\" (from {source}) matches host"),
                };
            }
        }
        match proxy {
            None => Route::Direct {
                rule: format!("no proxy set for {scheme}"),
            },
            Some((p, source)) => Route::Via {
                proxy: p.clone(),
                rule: format!("{scheme} proxy from {source}"),
            },
        }
    }

    /// True when a proxy is set and NO_PROXY does not cover 169.254.169.254.
    pub fn lacks_imds_bypass(&self) -> bool {
        if self.https.is_none() && self.http.is_none() {
            return false;
        }
        match &self.no_proxy {
            None => true,
            Some((list, _)) => no_proxy_match(list, IMDS_HOST).is_none(),
        }
    }
}

/// The non-empty, trimmed entries of a NO_PROXY list (commas and/or whitespace separate them).
fn no_proxy_entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
}

/// The NO_PROXY entry that matches `host`, if any (curl's rules).
///
/// `host` is a host name or an IP literal (IPv6 with or without brackets); no DNS lookups are
/// made, so an IP or CIDR entry only matches a URL written with an IP address.
/// Returns the entry as written (trimmed).
pub fn no_proxy_match(no_proxy: &str, host: &str) -> Option<String> {
    let entries: Vec<&str> = no_proxy_entries(no_proxy).collect();
    // curl: "The only wildcard is a single * character, which matches all hosts" — it compares
    // the whole NO_PROXY value with "*"; here surrounding blanks/commas are tolerated.
    if let [only] = entries.as_slice() {
        if *only == "*" {
            return Some("*".to_string());
        }
    }
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return entries
            .into_iter()
            .find(|e| ip_entry_matches(e, ip) == Some(true))
            .map(str::to_string);
    }
    let name = host.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    entries
        .into_iter()
        .find(|e| name_entry_matches(e, name))
        .map(str::to_string)
}

/// Host-name entry: itself and its subdomains; a leading and a trailing dot are ignored
/// (curl >= 7.86: `.example.com` also matches `example.com`).
fn name_entry_matches(entry: &str, name: &str) -> bool {
    let entry = entry.to_ascii_lowercase();
    let entry = entry.strip_suffix('.').unwrap_or(&entry);
    let entry = entry.strip_prefix('.').unwrap_or(entry);
    if entry.is_empty() {
        return false;
    }
    name == entry
        || (name.len() > entry.len()
            && name.ends_with(entry)
            && name.as_bytes()[name.len() - entry.len() - 1] == b'.')
}

/// An IP entry (`10.1.2.3`, `::1`, `[::1]`) or CIDR range (`10.0.0.0/8`, `fe80::/10`,
/// `[fe80::]/10`). `None` when the entry is not a valid IP/CIDR (e.g. a host name, a port
/// suffix, or a prefix length too long for the family); `Some(matched)` otherwise.
fn ip_entry_matches(entry: &str, ip: IpAddr) -> Option<bool> {
    let (net, bits) = parse_ip_entry(entry)?;
    Some(match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    })
}

/// (network address, prefix length) of an IP or CIDR entry; a plain address gets the full length.
fn parse_ip_entry(entry: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (entry, None),
    };
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
            let n: u32 = b.parse().ok()?;
            if n > max {
                return None;
            }
            n
        }
        Some(_) => return None,
    };
    Some((ip, bits))
}

/// NO_PROXY entries that can never match anything, each with the reason — for a warning.
/// (They are skipped silently by `no_proxy_match`, as curl does.)
pub fn no_proxy_unusable(no_proxy: &str) -> Vec<(String, String)> {
    let entries: Vec<&str> = no_proxy_entries(no_proxy).collect();
    let alone = entries.len() == 1;
    let mut out = Vec::new();
    for e in entries {
        let reason = if e == "*" {
            if alone {
                continue;
            }
            "\"*\" only disables the proxy when it is the whole NO_PROXY list".to_string()
        } else if let Some(rest) = e.strip_prefix("*.") {
            format!("wildcards are not supported; write \".{rest}\" to match the domain and its subdomains")
        } else if e.contains('/') {
            if parse_ip_entry(e).is_some() {
                continue;
            }
            "not a valid IP address/prefix-length CIDR range".to_string()
        } else if parse_ip_entry(e).is_some() {
            continue;
        } else if has_port_suffix(e) {
            "ports are not supported in NO_PROXY entries (curl never matches them); remove \":port\""
                .to_string()
        } else if e.contains('*') {
            "\"*\" is not a wildcard inside an entry".to_string()
        } else {
            continue;
        };
        out.push((e.to_string(), reason));
    }
    out
}

/// `host:port` or `[v6]:port` (a bare IPv6 address is not mistaken for one).
fn has_port_suffix(entry: &str) -> bool {
    let Some((h, p)) = entry.rsplit_once(':') else {
        return false;
    };
    let port_like = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    port_like && (h.starts_with('[') && h.ends_with(']') || !h.contains(':'))
}

/// The entries always added to the agent's NO_PROXY, so its local calls stay local.
const AGENT_NO_PROXY: [&str; 3] = [IMDS_HOST, "localhost", "127.0.0.1"];

/// The NO_PROXY value for the agent's environment: the given list extended with
/// `169.254.169.254,localhost,127.0.0.1` (entries already there are not repeated).
pub fn agent_no_proxy(existing: Option<&str>) -> String {
    let mut entries: Vec<String> = no_proxy_entries(existing.unwrap_or(""))
        .map(str::to_string)
        .collect();
    for add in AGENT_NO_PROXY {
        if !entries.iter().any(|e| e.eq_ignore_ascii_case(add)) {
            entries.push(add.to_string());
        }
    }
    entries.join(",")
}

/// Parse `/etc/environment` (pam_env's simple `KEY=value` form, optional quotes, `export ` prefix).
/// Comment and blank lines, and lines without `=` or with an empty key, are skipped; a later
/// line for the same key wins. Values are taken literally (no variable expansion).
pub fn parse_etc_environment(content: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in content.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        out.insert(key.to_string(), value.to_string());
    }
    out
}

/// (scheme, host, port) of a URL; IPv6 hosts come back without brackets.
///
/// Scheme and host are lower-cased; the port defaults to 80 for http/ws and 443 for https/wss.
/// Another scheme without an explicit port, an empty host, a bad port, or a string that is not
/// `scheme://...` gives `None`.
pub fn split_url(url: &str) -> Option<(String, String, u16)> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if !is_scheme(scheme) {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        let close = after.find(']')?;
        let ip: Ipv6Addr = after[..close].parse().ok()?;
        let rest = &after[close + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return None,
        };
        (ip.to_string(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (hostport.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let default = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let port = match port {
        None | Some("") => default?,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some((scheme, host, port))
}

/// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_http_scheme(s: &str) -> bool {
    s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")
}

fn bracket_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Everything but RFC 3986 unreserved characters is escaped in a proxy URL's user and password.
const USERINFO_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, USERINFO_ESCAPED).to_string()
}

/// Decode `%XX` escapes. A `%` without two hex digits is refused (as curl does; the crate would
/// keep it as it is). The error describes the problem without quoting the input.
fn percent_decode(s: &str) -> Result<String, &'static str> {
    for (i, _) in s.match_indices('%') {
        let hex = s
            .as_bytes()
            .get(i + 1..i + 3)
            .ok_or("an incomplete %-escape")?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err("an invalid %-escape");
        }
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "%-escapes that do not decode to UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        https: Option<(&str, &str)>,
        http: Option<(&str, &str)>,
        no_proxy: Option<(&str, &str)>,
    ) -> ProxyConfig {
        let p =
            |v: Option<(&str, &str)>| v.map(|(u, s)| (ProxyUrl::parse(u).unwrap(), s.to_string()));
        ProxyConfig {
            https: p(https),
            http: p(http),
            no_proxy: no_proxy.map(|(l, s)| (l.to_string(), s.to_string())),
        }
    }

    #[test]
    fn no_proxy_vectors() {
        // (case, list, host, expected matching entry)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("exact name", "example.com", "example.com", Some("example.com")),
            ("subdomain", "example.com", "www.example.com", Some("example.com")),
            ("deep subdomain", "example.com", "a.b.example.com", Some("example.com")),
            ("not a suffix label", "example.com", "badexample.com", None),
            ("curl doc ample.com vs www.example.com", "ample.com", "www.example.com", None),
            ("curl doc ample.com.org", "ample.com", "ample.com.org", None),
            ("entry longer than host", "www.example.com", "example.com", None),
            ("leading dot matches subdomain", ".example.com", "a.example.com", Some(".example.com")),
            ("leading dot matches domain itself", ".example.com", "example.com", Some(".example.com")),
            ("leading dot not badexample", ".example.com", "badexample.com", None),
            ("case-insensitive host", "example.com", "WWW.Example.COM", Some("example.com")),
            ("case-insensitive entry", "EXAMPLE.com", "www.example.com", Some("EXAMPLE.com")),
            ("trailing dot on host", "example.com", "www.example.com.", Some("example.com")),
            ("trailing dot on entry", "example.com.", "www.example.com", Some("example.com.")),
            ("star alone", "*", "anything.example", Some("*")),
            ("star alone matches IP", "*", "10.1.2.3", Some("*")),
            ("star alone with spaces", "  * ", "x.y", Some("*")),
            ("star alone with stray comma", "*,", "x.y", Some("*")),
            ("star among others is not a wildcard", "foo.com,*", "x.y", None),
            ("star-dot wildcard not supported", "*.example.com", "a.example.com", None),
            ("comma list", "a.com,b.com,example.com", "www.example.com", Some("example.com")),
            ("spaces around entries", " a.com , example.com ", "example.com", Some("example.com")),
            ("space separated", "a.com example.com", "example.com", Some("example.com")),
            ("tabs and newlines", "a.com\texample.com\nc.com", "example.com", Some("example.com")),
            ("mixed separators", "a.com, ,b.com  example.com,,", "x.example.com", Some("example.com")),
            ("empty list", "", "example.com", None),
            ("only separators", " , ,, ", "example.com", None),
            ("lone dot entry", ".", "example.com", None),
            ("first match wins", "example.com,.example.com", "a.example.com", Some("example.com")),
            ("localhost", "localhost,127.0.0.1", "localhost", Some("localhost")),
            ("ipv4 exact", "10.0.0.1", "10.0.0.1", Some("10.0.0.1")),
            ("ipv4 different", "10.0.0.1", "10.0.0.2", None),
            ("ipv4 no partial string match", "10.0.0.1", "110.0.0.1", None),
            ("ipv4 not suffix-matched", "0.0.1", "10.0.0.1", None),
            ("imds", "169.254.169.254", "169.254.169.254", Some("169.254.169.254")),
            ("ipv4 cidr /8", "10.0.0.0/8", "10.200.3.4", Some("10.0.0.0/8")),
            ("ipv4 cidr /8 outside", "10.0.0.0/8", "11.0.0.1", None),
            ("ipv4 cidr /16 link-local", "169.254.0.0/16", "169.254.169.254", Some("169.254.0.0/16")),
            ("ipv4 cidr /12 edge in", "172.16.0.0/12", "172.31.255.255", Some("172.16.0.0/12")),
            ("ipv4 cidr /12 edge out", "172.16.0.0/12", "172.32.0.0", None),
            ("ipv4 cidr /32", "10.1.2.3/32", "10.1.2.3", Some("10.1.2.3/32")),
            ("ipv4 cidr /0 everything", "0.0.0.0/0", "8.8.8.8", Some("0.0.0.0/0")),
            ("ipv4 cidr unmasked net bits", "10.1.2.3/8", "10.9.9.9", Some("10.1.2.3/8")),
            ("ipv4 cidr bits too long", "10.0.0.0/33", "10.0.0.0", None),
            ("ipv4 cidr bits not numeric", "10.0.0.0/x", "10.0.0.0", None),
            ("ipv4 cidr empty bits", "10.0.0.0/", "10.0.0.0", None),
            ("ipv4 entry does not match name", "10.0.0.1", "host.example", None),
            ("name entry does not match ip", "example.com", "10.0.0.1", None),
            ("ipv4 cidr no DNS for names", "10.0.0.0/8", "ten.example", None),
            ("ipv6 exact", "::1", "::1", Some("::1")),
            ("ipv6 host in brackets", "::1", "[::1]", Some("::1")),
            ("ipv6 entry in brackets", "[::1]", "::1", Some("[::1]")),
            ("ipv6 both in brackets", "[::1]", "[::1]", Some("[::1]")),
            ("ipv6 expanded form", "::1", "0:0:0:0:0:0:0:1", Some("::1")),
            ("ipv6 upper case", "FE80::1", "fe80::1", Some("FE80::1")),
            ("ipv6 different", "::1", "::2", None),
            ("ipv6 cidr", "fe80::/10", "fe80::1234:5678", Some("fe80::/10")),
            ("ipv6 cidr edge in", "fe80::/10", "febf::1", Some("fe80::/10")),
            ("ipv6 cidr outside", "fe80::/10", "fec0::1", None),
            ("ipv6 cidr bracketed", "[fd00::]/8", "[fd12::1]", Some("[fd00::]/8")),
            ("ipv6 cidr /128", "2001:db8::1/128", "2001:db8::1", Some("2001:db8::1/128")),
            ("ipv6 cidr bits too long", "2001:db8::/129", "2001:db8::", None),
            ("ipv6 cidr /0", "::/0", "2001:db8::1", Some("::/0")),
            ("ipv4 entry vs ipv6 host", "0.0.0.0/0", "::1", None),
            ("ipv6 entry vs ipv4 host", "::/0", "10.0.0.1", None),
            ("port entry ignored for name (curl)", "example.com:8080", "example.com", None),
            ("port entry ignored for ip (curl)", "10.0.0.1:8080", "10.0.0.1", None),
            ("port entry skipped, next matches", "example.com:443, example.com", "example.com", Some("example.com")),
            ("empty host", "example.com", "", None),
        ];
        for (case, list, host, want) in cases {
            let got = no_proxy_match(list, host);
            assert_eq!(
                got.as_deref(),
                *want,
                "case {case:?}: list {list:?} host {host:?}"
            );
        }
    }

    #[test]
    fn no_proxy_unusable_entries() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[&str])] = &[
            ("all fine", "a.com,.b.com,10.0.0.0/8,::1,[::1],fe80::/10,*x", &["*x"]),
            ("star alone is fine", "*", &[]),
            ("star among others", "a.com,*", &["*"]),
            ("wildcard", "*.example.com", &["*.example.com"]),
            ("ports", "a.com:80,[::1]:443,10.0.0.1:3128,::1", &["a.com:80", "[::1]:443", "10.0.0.1:3128"]),
            ("bad cidr", "10.0.0.0/33,fe80::/200,10.0.0.0/x,10.0.0.0/8", &["10.0.0.0/33", "fe80::/200", "10.0.0.0/x"]),
        ];
        for (case, list, want) in cases {
            let got: Vec<String> = no_proxy_unusable(list)
                .into_iter()
                .map(|(e, _)| e)
                .collect();
            assert_eq!(got, *want, "case {case:?}");
        }
    }

    #[test]
    fn parse_ok() {
        // (case, input, scheme, host, port, user, password)
        type Want<'a> = (&'a str, &'a str, u16, Option<&'a str>, Option<&'a str>);
        #[rustfmt::skip]
        let cases: &[(&str, &str, Want)] = &[
            ("plain", "http://proxy:3128", ("http", "proxy", 3128, None, None)),
            ("trailing slash", "http://proxy:3128/", ("http", "proxy", 3128, None, None)),
            ("no scheme", "proxy.corp:8080", ("http", "proxy.corp", 8080, None, None)),
            ("no port http -> 1080", "http://proxy", ("http", "proxy", 1080, None, None)),
            ("no scheme no port", "proxy", ("http", "proxy", 1080, None, None)),
            ("https proxy", "https://proxy:8443", ("https", "proxy", 8443, None, None)),
            ("https no port -> 443", "https://proxy", ("https", "proxy", 443, None, None)),
            ("upper-case scheme and host", "HTTP://Proxy.Corp:3128", ("http", "proxy.corp", 3128, None, None)),
            ("surrounding spaces", "  http://proxy:3128 \n", ("http", "proxy", 3128, None, None)),
            ("ipv4", "http://10.0.0.5:3128", ("http", "10.0.0.5", 3128, None, None)),
            ("ipv6", "http://[::1]:3128", ("http", "::1", 3128, None, None)),
            ("ipv6 no port", "http://[2001:db8::1]", ("http", "2001:db8::1", 1080, None, None)),
            ("user only", "http://bob@proxy:3128", ("http", "proxy", 3128, Some("bob"), None)),
            ("user and password", "http://bob:s3cret@proxy:3128", ("http", "proxy", 3128, Some("bob"), Some("s3cret"))),
            ("empty password", "http://bob:@proxy:3128", ("http", "proxy", 3128, Some("bob"), Some(""))),
            ("percent-decoded", "http://dom%5Cbob:p%40ss%3Aw%2Fd@proxy:3128", ("http", "proxy", 3128, Some("dom\\bob"), Some("p@ss:w/d"))),
            ("unencoded @ and / in password", "http://bob:p@ss/x@proxy:3128", ("http", "proxy", 3128, Some("bob"), Some("p@ss/x"))),
            ("empty userinfo", "http://@proxy:3128", ("http", "proxy", 3128, None, None)),
            ("port with leading zero", "http://proxy:03128", ("http", "proxy", 3128, None, None)),
            ("max port", "http://proxy:65535", ("http", "proxy", 65535, None, None)),
        ];
        for (case, input, (scheme, host, port, user, password)) in cases {
            let p = ProxyUrl::parse(input).unwrap_or_else(|e| panic!("case {case:?}: {e}"));
            assert_eq!(p.scheme, *scheme, "case {case:?} scheme");
            assert_eq!(p.host, *host, "case {case:?} host");
            assert_eq!(p.port, *port, "case {case:?} port");
            assert_eq!(p.user.as_deref(), *user, "case {case:?} user");
            assert_eq!(p.password(), *password, "case {case:?} password");
        }
    }

    #[test]
    fn parse_errors() {
        // (case, input, text the error must contain). "s3cret"/"hunter2" must never appear.
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("empty", "", "empty"),
            ("blank", "   ", "empty"),
            ("socks5", "socks5://bob:s3cret@proxy:1080", "socks5:// proxies are not supported"),
            ("socks5h", "socks5h://proxy", "not supported"),
            ("socks4", "SOCKS4://proxy", "socks4:// proxies are not supported"),
            ("ftp scheme", "ftp://proxy:21", "unsupported proxy scheme \"ftp\""),
            ("empty scheme", "://proxy", "empty scheme"),
            ("no host", "http://", "no host"),
            ("no host with port", "http://:3128", "no host"),
            ("no host with creds", "http://bob:s3cret@:3128", "no host"),
            ("port zero", "http://proxy:0", "out of range"),
            ("port too big", "http://proxy:65536", "out of range"),
            ("port huge", "http://proxy:99999999999", "out of range"),
            ("port not numeric", "http://proxy:abc", "not a number"),
            ("port negative", "http://proxy:-1", "not a number"),
            ("port plus", "http://proxy:+80", "not a number"),
            ("port empty", "http://proxy:", "empty port"),
            ("password taken as port", "http://bob:s3cret", "not a number"),
            ("path", "http://proxy:3128/path", "path"),
            ("path with creds", "http://bob:s3cret@proxy:3128/x", "path"),
            ("query", "http://proxy:3128?x=1", "query"),
            ("query after slash", "http://proxy:3128/?x=1", "path"),
            ("fragment", "http://proxy:3128#f", "fragment"),
            ("unbracketed ipv6", "http://::1:3128", "brackets"),
            ("unclosed bracket", "http://[::1:3128", "closing"),
            ("bad ipv6", "http://[nothex::zz]:3128", "not a valid IPv6"),
            ("junk after ]", "http://[::1]x:3128", "after the IPv6"),
            ("bad host char", "http://pro xy:3128", "not allowed"),
            ("bad escape in password", "http://bob:s3cret%zz@proxy:3128", "password has an invalid %-escape"),
            ("short escape in password", "http://bob:hunter2%4@proxy:3128", "password has an incomplete"),
            ("bad escape in user", "http://b%g0b:s3cret@proxy:3128", "user name has an invalid"),
            ("non-utf8 password", "http://bob:%ff%fe@proxy:3128", "UTF-8"),
        ];
        for (case, input, want) in cases {
            let err = match ProxyUrl::parse(input) {
                Ok(p) => panic!("case {case:?}: parsed as {p}, expected an error"),
                Err(e) => e,
            };
            assert!(
                err.contains(want),
                "case {case:?}: error {err:?} lacks {want:?}"
            );
            for secret in ["s3cret", "hunter2"] {
                assert!(
                    !err.contains(secret),
                    "case {case:?}: error {err:?} leaks the password"
                );
            }
        }
    }

    #[test]
    fn display_redacts_and_with_credentials_encodes() {
        // (case, input, Display, with_credentials)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, &str)] = &[
            ("no creds", "proxy:3128", "http://proxy:3128", "http://proxy:3128"),
            ("default port shown", "http://proxy", "http://proxy:1080", "http://proxy:1080"),
            ("user only", "http://bob@proxy:3128", "http://bob@proxy:3128", "http://bob@proxy:3128"),
            ("user and password", "http://bob:s3cret@proxy:3128", "http://bob:***@proxy:3128", "http://bob:s3cret@proxy:3128"),
            ("empty password still masked", "http://bob:@proxy:3128", "http://bob:***@proxy:3128", "http://bob:@proxy:3128"),
            ("https", "https://bob:s3cret@proxy:8443/", "https://bob:***@proxy:8443", "https://bob:s3cret@proxy:8443"),
            ("ipv6", "http://bob:s3cret@[2001:DB8::1]:3128", "http://bob:***@[2001:db8::1]:3128", "http://bob:s3cret@[2001:db8::1]:3128"),
            ("special chars re-encoded", "http://dom%5Cbob:s3cret%40%3A%2F%20x@proxy:3128", "http://dom%5Cbob:***@proxy:3128", "http://dom%5Cbob:s3cret%40%3A%2F%20x@proxy:3128"),
            ("unencoded input encoded on output", "http://bob:s3cret@/x@proxy:3128", "http://bob:***@proxy:3128", "http://bob:s3cret%40%2Fx@proxy:3128"),
        ];
        for (case, input, display, full) in cases {
            let p = ProxyUrl::parse(input).unwrap_or_else(|e| panic!("case {case:?}: {e}"));
            assert_eq!(p.to_string(), *display, "case {case:?} Display");
            assert_eq!(
                p.with_credentials(),
                *full,
                "case {case:?} with_credentials"
            );
            let debug = format!("{p:?}");
            assert_eq!(debug, format!("ProxyUrl({display})"), "case {case:?} Debug");
            if let Some(pw) = p.password().filter(|pw| !pw.is_empty()) {
                assert!(!p.to_string().contains(pw), "case {case:?}: Display leaks");
                assert!(!debug.contains(pw), "case {case:?}: Debug leaks");
            }
            // The full URL parses back to the same thing.
            assert_eq!(
                ProxyUrl::parse(full).unwrap(),
                p,
                "case {case:?} round trip"
            );
        }
    }

    #[test]
    fn debug_of_config_and_route_never_leaks_password() {
        let c = cfg(
            Some(("http://bob:s3cret@proxy:3128", "ARC_ENROLL_PROXY")),
            Some(("http://bob:hunter2@proxy:3129", "http_proxy")),
            Some(("example.com", "NO_PROXY")),
        );
        let dump = format!("{c:?} {:?}", c.route("https://management.azure.com/"));
        for secret in ["s3cret", "hunter2"] {
            assert!(!dump.contains(secret), "Debug leaks {secret}: {dump}");
        }
        assert!(dump.contains("bob:***@proxy:3128"), "{dump}");
    }

    #[test]
    fn routing() {
        let both = cfg(
            Some(("http://secure-proxy:3128", "ARC_ENROLL_PROXY")),
            Some(("http://plain-proxy:8080", "http_proxy in /etc/environment")),
            Some(("localhost, .internal.corp 10.0.0.0/8", "NO_PROXY")),
        );
        let https_only = cfg(Some(("http://secure-proxy:3128", "--proxy")), None, None);
        let none = cfg(None, None, Some(("example.com", "no_proxy")));
        let star = cfg(
            Some(("http://secure-proxy:3128", "--proxy")),
            None,
            Some(("*", "--no-proxy")),
        );

        enum W {
            Direct(&'static str),
            Via(&'static str, &'static str),
        }
        #[rustfmt::skip]
        let cases: &[(&str, &ProxyConfig, &str, W)] = &[
            ("https via https proxy", &both, "https://management.azure.com/subscriptions?x=1",
                W::Via("http://secure-proxy:3128", "https proxy from ARC_ENROLL_PROXY")),
            ("http via http proxy", &both, "http://example.com/file",
                W::Via("http://plain-proxy:8080", "http proxy from http_proxy in /etc/environment")),
            ("upper-case scheme", &both, "HTTPS://Example.com",
                W::Via("http://secure-proxy:3128", "https proxy from ARC_ENROLL_PROXY")),
            ("no_proxy name", &both, "https://localhost:40342/metadata",
                W::Direct("NO_PROXY entry \"localhost\" (from NO_PROXY) matches host")),
            ("no_proxy leading dot", &both, "https://vault.internal.corp/",
                W::Direct("NO_PROXY entry \".internal.corp\" (from NO_PROXY) matches host")),
            ("no_proxy cidr", &both, "http://10.1.2.3:8080/",
                W::Direct("NO_PROXY entry \"10.0.0.0/8\" (from NO_PROXY) matches host")),
            ("no_proxy with userinfo in url", &both, "https://user:pw@host.internal.corp/",
                W::Direct("NO_PROXY entry \".internal.corp\" (from NO_PROXY) matches host")),
            ("http without http proxy", &https_only, "http://example.com/",
                W::Direct("no proxy set for http")),
            ("https with https proxy", &https_only, "https://example.com/",
                W::Via("http://secure-proxy:3128", "https proxy from --proxy")),
            ("nothing set", &none, "https://other.com/", W::Direct("no proxy set for https")),
            ("star", &star, "https://example.com/",
                W::Direct("NO_PROXY entry \"*\" (from --no-proxy) matches host")),
            ("other scheme", &both, "ftp://example.com/",
                W::Direct("ftp:// URLs are never sent through a proxy")),
            ("not a url", &both, "example.com",
                W::Direct("not an absolute http(s) URL, so no proxy applies")),
        ];
        for (case, c, url, want) in cases {
            let got = c.route(url);
            match (want, &got) {
                (W::Direct(rule), Route::Direct { rule: r }) => {
                    assert_eq!(r, rule, "case {case:?}")
                }
                (W::Via(proxy, rule), Route::Via { proxy: p, rule: r }) => {
                    assert_eq!(p.to_string(), *proxy, "case {case:?} proxy");
                    assert_eq!(r, rule, "case {case:?} rule");
                }
                _ => panic!("case {case:?}: got {got:?}"),
            }
        }
    }

    #[test]
    fn imds_bypass() {
        #[rustfmt::skip]
        let cases: &[(&str, ProxyConfig, bool)] = &[
            ("nothing set", cfg(None, None, None), false),
            ("no_proxy but no proxy", cfg(None, None, Some(("x", "s"))), false),
            ("https proxy, no no_proxy", cfg(Some(("p:1", "s")), None, None), true),
            ("http proxy, no no_proxy", cfg(None, Some(("p:1", "s")), None), true),
            ("no_proxy without imds", cfg(Some(("p:1", "s")), None, Some(("localhost", "s"))), true),
            ("empty no_proxy", cfg(Some(("p:1", "s")), None, Some(("", "s"))), true),
            ("imds listed", cfg(Some(("p:1", "s")), None, Some(("localhost 169.254.169.254", "s"))), false),
            ("link-local cidr", cfg(Some(("p:1", "s")), None, Some(("169.254.0.0/16", "s"))), false),
            ("star", cfg(None, Some(("p:1", "s")), Some(("*", "s"))), false),
            ("imds with port does not count", cfg(Some(("p:1", "s")), None, Some(("169.254.169.254:80", "s"))), true),
        ];
        for (case, c, want) in cases {
            assert_eq!(c.lacks_imds_bypass(), *want, "case {case:?}");
        }
    }

    #[test]
    fn agent_no_proxy_cases() {
        let all = "169.254.169.254,localhost,127.0.0.1";
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("none", None, all),
            ("empty", Some(""), all),
            ("blank", Some("  , "), all),
            ("existing kept first", Some("example.com"), "example.com,169.254.169.254,localhost,127.0.0.1"),
            ("trimmed and rejoined", Some(" a.com , b.com  c.com"), "a.com,b.com,c.com,169.254.169.254,localhost,127.0.0.1"),
            ("some present", Some("localhost,corp"), "localhost,corp,169.254.169.254,127.0.0.1"),
            ("case-insensitive", Some("LOCALHOST"), "LOCALHOST,169.254.169.254,127.0.0.1"),
            ("all present", Some("127.0.0.1,localhost,169.254.169.254"), "127.0.0.1,localhost,169.254.169.254"),
            ("cidr is not an exact entry", Some("169.254.0.0/16"), "169.254.0.0/16,169.254.169.254,localhost,127.0.0.1"),
        ];
        for (case, existing, want) in cases {
            assert_eq!(agent_no_proxy(*existing), *want, "case {case:?}");
        }
    }

    #[test]
    fn etc_environment() {
        let content = "\
# comment line
   # indented comment
PATH=\"/usr/local/sbin:/usr/local/bin:/usr/bin\"
http_proxy=http://plain:8080
export https_proxy='http://bob:s3cret@proxy:3128'
export\tNO_PROXY = localhost, 169.254.169.254 \r
no_proxy=\"\"
EMPTY=
lonely line without equals
=novalue
exported=1
HALF=\"unbalanced
EQ=a=b=c
DUP=first
DUP=second
";
        let env = parse_etc_environment(content);
        #[rustfmt::skip]
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("double quotes stripped", "PATH", Some("/usr/local/sbin:/usr/local/bin:/usr/bin")),
            ("plain value", "http_proxy", Some("http://plain:8080")),
            ("export and single quotes", "https_proxy", Some("http://bob:s3cret@proxy:3128")),
            ("export with tab, spaces around =, CRLF", "NO_PROXY", Some("localhost, 169.254.169.254")),
            ("empty quoted", "no_proxy", Some("")),
            ("empty", "EMPTY", Some("")),
            ("key starting with export", "exported", Some("1")),
            ("unbalanced quote kept", "HALF", Some("\"unbalanced")),
            ("only first = splits", "EQ", Some("a=b=c")),
            ("last wins", "DUP", Some("second")),
            ("no equals ignored", "lonely line without equals", None),
            ("comment ignored", "# comment line", None),
        ];
        for (case, key, want) in cases {
            assert_eq!(env.get(*key).map(String::as_str), *want, "case {case:?}");
        }
        assert_eq!(env.len(), 10, "unexpected keys: {env:?}");
    }

    #[test]
    fn split_url_cases() {
        type Want = Option<(&'static str, &'static str, u16)>;
        #[rustfmt::skip]
        let cases: &[(&str, &str, Want)] = &[
            ("https default", "https://management.azure.com/x?y#z", Some(("https", "management.azure.com", 443))),
            ("http default", "http://example.com", Some(("http", "example.com", 80))),
            ("explicit port", "https://example.com:8443/path", Some(("https", "example.com", 8443))),
            ("upper case", "HTTPS://EXAMPLE.com", Some(("https", "example.com", 443))),
            ("userinfo", "https://user:p@ss@host.example:444/", Some(("https", "host.example", 444))),
            ("ipv6 port", "https://[::1]:8443/x", Some(("https", "::1", 8443))),
            ("ipv6 default", "http://[FE80::1]", Some(("http", "fe80::1", 80))),
            ("query directly", "http://host?x=@y", Some(("http", "host", 80))),
            ("fragment directly", "http://host#frag", Some(("http", "host", 80))),
            ("empty port", "http://host:/", Some(("http", "host", 80))),
            ("ipv4", "http://169.254.169.254/metadata", Some(("http", "169.254.169.254", 80))),
            ("other scheme with port", "ftp://host:21/", Some(("ftp", "host", 21))),
            ("other scheme no port", "ftp://host/", None),
            ("no scheme", "example.com", None),
            ("relative", "/path", None),
            ("empty host", "https:///path", None),
            ("bad port", "http://host:abc/", None),
            ("port zero", "http://host:0/", None),
            ("port too big", "http://host:70000/", None),
            ("bad ipv6", "http://[zz]/", None),
            ("unclosed ipv6", "http://[::1/", None),
            ("bad scheme", "1http://host/", None),
        ];
        for (case, url, want) in cases {
            let got = split_url(url);
            let want = want.map(|(s, h, p)| (s.to_string(), h.to_string(), p));
            assert_eq!(got, want, "case {case:?}: {url:?}");
        }
    }
}
