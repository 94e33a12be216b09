//! AWS Signature Version 4 for one request signed in its headers (the `sts:GetWebIdentityToken`
//! call of `--token-source aws`), as a pure function: request + credentials + time -> the headers
//! to add. HMAC-SHA256 and SHA-256 come from `ring` (already linked for rustls).
//!
//! Checked against the public AWS SigV4 test suite (awslabs/aws-c-auth
//! `tests/aws-signing-test-suite/v4/`, copied to `tests/data/sigv4/`): canonical request, string
//! to sign, signature and Authorization header of every header-signed vector (`tests/sigv4.rs`).
//! Not implemented, because the STS call never needs them: presigned (query-string) signing,
//! SigV4a (ECDSA), chunked/streaming payloads, S3's path rules beyond `normalize_path: false`.
//!
//! The algorithm (AWS "Create a signed AWS API request"):
//! 1. canonical request = method \n canonical URI \n canonical query \n canonical headers \n
//!    signed headers \n hex(SHA-256(payload))
//! 2. string to sign = `AWS4-HMAC-SHA256` \n amz-date \n scope \n hex(SHA-256(canonical request))
//! 3. signing key = HMAC chain over `AWS4`+secret: date, region, service, `aws4_request`
//! 4. signature = hex(HMAC(signing key, string to sign))

use std::fmt;

use ring::{digest, hmac};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An AWS key pair with its optional session token (an instance role's credentials are always
/// temporary, so they always have one). The secret key and the token are secrets: no `Debug` of
/// them, only of the access key id, which AWS sends in the clear in every Authorization header.
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Credentials {
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: session_token.map(str::to_string),
        }
    }

    /// The session token, for callers that must register or scrub it (never for logging).
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ access_key_id: {:?}, secret_access_key: <redacted>, session_token: {} }}",
            self.access_key_id,
            if self.session_token.is_some() {
                "<redacted>"
            } else {
                "none"
            }
        )
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        // Best effort, as AccessToken does: overwrite the secret bytes before they are freed.
        // SAFETY: writing zero bytes keeps each String valid UTF-8.
        unsafe {
            self.secret_access_key.as_bytes_mut().fill(0);
            if let Some(t) = &mut self.session_token {
                t.as_bytes_mut().fill(0);
            }
        }
    }
}

/// The request to sign, as it will be sent.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as it appears in the request line (before percent-encoding; `/` for STS).
    pub path: &'a str,
    /// The raw query string without `?` (may be empty; percent-encoded or not).
    pub query: &'a str,
    /// Every header that will be sent and must be signed, `Host` included. Names in any case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Where and when the request is signed.
pub struct Params<'a> {
    pub region: &'a str,
    pub service: &'a str,
    /// Seconds since the Unix epoch (UTC); becomes `X-Amz-Date`.
    pub unix_time: i64,
    /// Remove `.`/`..` segments and empty segments from the path (every service except S3).
    pub normalize_path: bool,
    /// Also send and sign `X-Amz-Content-Sha256` (S3 wants it; STS does not).
    pub content_sha256_header: bool,
    /// Sign `X-Amz-Security-Token` (the normal case). `false` adds it after signing, unsigned, as
    /// a few services (IoT) require; the test suite has a vector for each.
    pub sign_session_token: bool,
}

/// The result: what the request must carry, and the intermediate texts the test suite checks.
/// No `Debug`: the canonical request contains the session token.
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lower-case hex.
    pub signature: String,
    /// Headers to add to the request, in this order: `X-Amz-Date`, then `X-Amz-Content-Sha256`
    /// and `X-Amz-Security-Token` when they apply, then `Authorization`.
    pub headers: Vec<(String, String)>,
}

impl Signed {
    pub fn authorization(&self) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// `YYYYMMDDTHHMMSSZ`, or None for a time outside what jiff represents.
pub fn amz_date(unix_time: i64) -> Option<String> {
    // RFC 3339 without its separators (jiff's Display, already linked for `timefmt`; strftime
    // would add its formatter to the binary for this one string).
    let ts = jiff::Timestamp::from_second(unix_time).ok()?;
    Some(ts.to_string().replace(['-', ':'], ""))
}

pub fn sign(req: &Request, creds: &Credentials, p: &Params) -> Signed {
    // Times jiff cannot represent (beyond year 9999) do not come from a clock; sign as the epoch
    // rather than panic, and AWS will answer with a clock-skew error.
    let date_time = amz_date(p.unix_time).unwrap_or_else(|| "19700101T000000Z".to_string());
    let date = &date_time[..8];
    let payload_hash = hex(digest::digest(&digest::SHA256, req.body).as_ref());

    let mut added: Vec<(String, String)> = vec![("X-Amz-Date".into(), date_time.clone())];
    if p.content_sha256_header {
        added.push(("X-Amz-Content-Sha256".into(), payload_hash.clone()));
    }
    let token_header = creds
        .session_token
        .as_ref()
        .map(|t| ("X-Amz-Security-Token".to_string(), t.clone()));
    let mut to_sign: Vec<(String, String)> = req.headers.to_vec();
    to_sign.extend(added.iter().cloned());
    if p.sign_session_token {
        to_sign.extend(token_header.iter().cloned());
    }
    let (canonical_headers, signed_headers) = canonical_headers(&to_sign);

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path, p.normalize_path),
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        payload_hash
    );
    let scope = format!("{date}/{}/{}/aws4_request", p.region, p.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{date_time}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let key = signing_key(&creds.secret_access_key, date, p.region, p.service);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());

    added.extend(token_header);
    added.push((
        "Authorization".into(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    Signed {
        canonical_request,
        string_to_sign,
        signature,
        headers: added,
    }
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// The path, dot segments and empty segments removed when `normalize`, each byte outside the
/// unreserved set percent-encoded once (`/` kept).
pub fn canonical_uri(path: &str, normalize: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let path = if normalize {
        normalize_path(path)
    } else {
        path.to_string()
    };
    uri_encode(&path, false)
}

fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = format!("/{}", out.join("/"));
    // A trailing slash is part of the resource name ("/example/" is not "/example").
    if path.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Parameters decoded then encoded strictly, sorted by name then value (byte order).
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// (`name:value\n` lines, `name;name`): names lower-cased and sorted, values trimmed with inner
/// runs of white space (folded lines included) made one space, repeated names joined with `,`.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in headers {
        let name = k.trim().to_ascii_lowercase();
        let value = v.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let lines: String = merged.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (lines, names)
}

/// RFC 3986 unreserved characters stay; every other byte becomes `%XX` (upper case). `/` stays
/// in paths and is encoded in query parameters.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decoding of a query component (`+` stays `+`: SigV4 does not treat it as a space).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hexval = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `data` (the fakes and tests compare payload hashes with it).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_of_the_suite_timestamp() {
        // context.json "2015-08-30T12:36:00Z"
        assert_eq!(amz_date(1_440_938_160).as_deref(), Some("20150830T123600Z"));
        assert_eq!(amz_date(i64::MAX), None);
    }

    #[test]
    fn path_normalization() {
        for (path, want) in [
            ("/", "/"),
            ("", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("//example//", "/example/"),
            ("/./example", "/example"),
            ("/a/b/../c", "/a/c"),
            ("/../..", "/"),
        ] {
            assert_eq!(canonical_uri(path, true), want, "{path:?}");
        }
        assert_eq!(canonical_uri("//example//", false), "//example//");
    }

    #[test]
    fn query_encoding_and_order() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a b/c+d"), "k=a%20b%2Fc%2Bd");
        assert_eq!(canonical_query("%E1%88%B4=x"), "%E1%88%B4=x");
        assert_eq!(canonical_query("flag"), "flag=");
        // A lone or malformed % is a literal percent sign.
        assert_eq!(canonical_query("k=100%&j=%zz"), "j=%25zz&k=100%25");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials::new("ASIAEXAMPLE", "secret/key+value", Some("tok-en"));
        let d = format!("{c:?}");
        assert!(d.contains("ASIAEXAMPLE"), "{d}");
        assert!(!d.contains("secret/key") && !d.contains("tok-en"), "{d}");
    }
}
