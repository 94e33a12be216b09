//! A proxy URL as curl reads it (`http://[user[:password]@]host[:port]`), its password never
//! shown, and the URL splitting the proxy rules and the HTTP agents share.

use std::fmt;
use std::net::Ipv6Addr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Default proxy ports when the proxy URL has none (CURLOPT_PROXYPORT(3): "443 for https
/// proxies and 1080 for all others").
pub const DEFAULT_HTTP_PROXY_PORT: u16 = 1080;
pub const DEFAULT_HTTPS_PROXY_PORT: u16 = 443;

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

    /// The forms in which this proxy's password can appear in text we did not write (an agent
    /// or library echoing the URL): decoded, and percent-encoded as `with_credentials` puts it
    /// (and in lower-case hex). Empty without a password. For scrubbing foreign text only; our
    /// own messages print the parsed URL (`Display`), never a string with the password removed.
    pub fn password_forms(&self) -> Vec<String> {
        let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) else {
            return Vec::new();
        };
        let enc = percent_encode(p);
        let mut forms = vec![enc.clone(), enc.to_ascii_lowercase(), p.to_string()];
        forms.dedup();
        forms
    }

    /// `text` (foreign text that may echo this proxy's URL) with the credentialed URL shown as
    /// `Display` shows it and any remaining form of the password as `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.with_credentials(), &self.to_string());
        for f in self.password_forms() {
            out = out.replace(&f, "***");
        }
        out
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
pub(super) fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

pub(super) fn is_http_scheme(s: &str) -> bool {
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
