//! The external token a federated source produces (the "assertion"): a secret type, its
//! non-secret claims (what a federated identity credential must match), the `az` line that
//! creates the credential for it, and the `AssertionSource` interface each token source
//! implements (`gcp`, `aws`, `file`, `github`).

use std::fmt;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::azure::http::{Failure, Http};
use crate::config::Cloud;
use crate::error::Error;
use crate::retry::{Attempt, Deadline};
use crate::timefmt::human;

/// The external token. No `Debug`/`Display` of the value; zeroed when dropped.
pub struct Assertion(String);

impl Assertion {
    /// `None` for an empty or whitespace-containing value (fail closed, as `AccessToken`).
    pub fn new(value: &str) -> Option<Assertion> {
        let v = value.trim();
        if v.is_empty() || v.contains(char::is_whitespace) || v.eq_ignore_ascii_case("null") {
            return None;
        }
        Some(Assertion(v.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Assertion(<redacted, {} bytes>)", self.0.len())
    }
}

impl Drop for Assertion {
    fn drop(&mut self) {
        // SAFETY: writing zero bytes keeps the String valid UTF-8.
        unsafe { self.0.as_bytes_mut().fill(0) };
    }
}

/// The assertion's non-secret claims: what a federated credential must match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct AssertionClaims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    /// A string or an array (Kubernetes writes `["api://AzureADTokenExchange"]`).
    #[serde(default, deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    #[serde(default)]
    pub exp: Option<f64>,
    #[serde(default)]
    pub iat: Option<f64>,
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

impl AssertionClaims {
    pub fn decode(a: &Assertion) -> Result<AssertionClaims, String> {
        let mut parts = a.expose().split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the token is not a JWT (expected three dot-separated parts)".into());
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| format!("the token's payload is not base64url: {e}"))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the token's payload is not a JSON object of claims: {e}"))
    }

    pub fn issuer(&self) -> &str {
        self.iss.as_deref().unwrap_or("")
    }

    pub fn subject(&self) -> &str {
        self.sub.as_deref().unwrap_or("")
    }

    /// The one audience a credential can match (empty when there are none or several).
    pub fn audience(&self) -> &str {
        match self.aud.as_slice() {
            [one] => one,
            _ => "",
        }
    }

    /// `iss=..., sub=..., aud=..., expires in 4m59s`.
    pub fn describe(&self, now_unix: u64) -> String {
        let exp = match self.exp {
            Some(e) if e as u64 > now_unix => format!(
                "expires in {}",
                human(Duration::from_secs(e as u64 - now_unix))
            ),
            Some(e) => format!(
                "expired {} ago",
                human(Duration::from_secs(now_unix.saturating_sub(e as u64)))
            ),
            None => "no exp claim".into(),
        };
        format!(
            "iss={}, sub={}, aud={}, {exp}",
            self.issuer(),
            self.subject(),
            self.aud.join(",")
        )
    }
}

/// The federated credential the identity needs for this assertion, as the command that creates it.
pub fn fic_command(claims: &AssertionClaims, cloud: Cloud) -> String {
    let aud = if claims.audience().is_empty() {
        cloud.fic_audience()
    } else {
        claims.audience()
    };
    format!(
        "az identity federated-credential create --resource-group <identity's resource group> \
         --identity-name <identity name> --name arc-enroll --issuer '{}' --subject '{}' --audiences '{aud}'",
        claims.issuer(),
        claims.subject()
    )
}

/// Where an assertion comes from: one implementation per token source.
pub trait AssertionSource {
    /// For log lines: "the GCP metadata server at http://metadata.google.internal".
    fn describe(&self) -> String;

    /// One try at a fresh assertion for `audience` (the cloud's token-exchange audience). Transient
    /// failures are `Attempt::Retry`; the exchange loop retries them within the deadline.
    fn assertion(&self, http: &Http, audience: &str, deadline: &Deadline) -> Attempt<Assertion>;

    /// The cloud's instance id, for `{instance_id}` (AWS and GCP know one).
    fn instance_id(&self, _http: &Http, _deadline: &Deadline) -> Option<String> {
        None
    }
}

/// A source the settings should have refused (a bug if it is ever asked).
pub struct Unavailable(pub &'static str);

impl AssertionSource for Unavailable {
    fn describe(&self) -> String {
        self.0.to_string()
    }

    fn assertion(&self, _http: &Http, _audience: &str, _deadline: &Deadline) -> Attempt<Assertion> {
        Attempt::Fail(Error::Internal(format!(
            "no assertion source: {} is missing; settings should have refused this",
            self.0
        )))
    }
}

/// Retry a metadata request's transport failure (timeouts, refused connections).
pub fn transport_retry<T>(what: &str, f: &Failure) -> Attempt<T> {
    Attempt::Retry {
        reason: format!("{what}: {f}"),
        retry_after: None,
    }
}

/// A metadata answer's status: 429/5xx/404-while-starting are transient for metadata servers.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}
