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
use std::net::IpAddr;

use super::proxy_url::{is_http_scheme, is_scheme};
pub use super::proxy_url::{
    split_url, ProxyUrl, DEFAULT_HTTPS_PROXY_PORT, DEFAULT_HTTP_PROXY_PORT,
};

/// The IMDS address that must always bypass any proxy.
pub const IMDS_HOST: &str = "169.254.169.254";

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

    #[test]
    fn scrub_masks_the_password_in_every_form_and_keeps_the_rest() {
        let p = ProxyUrl::parse("http://arcuser:p%40ss%3Aw0rd%2f@proxy:3128").unwrap();
        assert_eq!(p.password(), Some("p@ss:w0rd/"));
        let full = p.with_credentials();
        assert_eq!(
            p.scrub(&format!("dial {full}: refused")),
            "dial http://arcuser:***@proxy:3128: refused"
        );
        for f in ["p%40ss%3Aw0rd%2F", "p%40ss%3aw0rd%2f", "p@ss:w0rd/"] {
            assert_eq!(p.scrub(&format!("x{f}y")), "x***y", "{f}");
        }
        assert!(ProxyUrl::parse("http://proxy:1")
            .unwrap()
            .password_forms()
            .is_empty());
        assert_eq!(format!("{p}"), "http://arcuser:***@proxy:3128");
    }
}
