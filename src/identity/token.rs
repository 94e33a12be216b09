//! The access token: a secret type that cannot be printed, its non-secret claims, and the checks a
//! token must pass before it is handed to the agent (FACTS §6, CONTRACT §3).

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use crate::secret::AccessToken;

/// A token with under this much life left is refused: the agent's connect can take minutes and
/// its own calls must not start with a token that is about to expire.
pub const TOKEN_MIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The claims we read from the token's payload. None of these is secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_az_rid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_string"
    )]
    pub exp: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_string"
    )]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtyp: Option<String>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        N(u64),
        F(f64),
        S(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        None => None,
        Some(NumOrStr::N(n)) => Some(n),
        Some(NumOrStr::F(f)) if f.is_finite() && f >= 0.0 => Some(f as u64),
        Some(NumOrStr::F(_)) => None,
        Some(NumOrStr::S(s)) => s.trim().parse().ok(),
    })
}

/// Decode the payload of a JWT. The signature is not checked: we are the token's bearer, not its
/// audience; the checks below only catch a token that is plainly wrong for the job.
pub fn decode_claims(token: &AccessToken) -> Result<Claims, String> {
    decode_claims_str(token.expose())
}

pub fn decode_claims_str(jwt: &str) -> Result<Claims, String> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT (expected three dot-separated parts)".into());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the token's payload is not base64url: {e}"))?;
    let mut c: Claims = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the token's payload is not a JSON object of claims: {e}"))?;
    // Claims are remote text: escaped once here, so no log line, result line or derived value
    // ever holds a control character or line separator from them. A valid GUID, resource id
    // or URL has none, so validation still sees every bad value as bad.
    for v in [
        &mut c.tid,
        &mut c.oid,
        &mut c.appid,
        &mut c.xms_mirid,
        &mut c.xms_az_rid,
        &mut c.aud,
        &mut c.iss,
        &mut c.idtyp,
    ]
    .into_iter()
    .flatten()
    {
        if let std::borrow::Cow::Owned(e) = crate::text::escape_remote(v) {
            *v = e;
        }
    }
    Ok(c)
}

/// Which kind of identity a token was issued to, from `xms_mirid` (FACTS §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    SystemAssigned,
    UserAssigned,
    Unknown,
}

pub fn identity_kind(claims: &Claims) -> IdentityKind {
    match claims.xms_mirid.as_deref() {
        Some(id)
            if id
                .to_ascii_lowercase()
                .contains("/microsoft.managedidentity/userassignedidentities/") =>
        {
            IdentityKind::UserAssigned
        }
        Some(_) => IdentityKind::SystemAssigned,
        None => IdentityKind::Unknown,
    }
}

/// Why a token may not be handed to the agent; `None` when it may.
pub fn refusal(
    claims: &Claims,
    now_unix: u64,
    accepted_audiences: &[&str],
    configured_tenant: Option<&str>,
) -> Option<String> {
    match claims.exp {
        None => {
            return Some("the token has no exp claim, so its lifetime cannot be checked".into())
        }
        Some(exp) if exp <= now_unix => {
            return Some(format!(
                "the token expired {}s ago (exp {exp})",
                now_unix - exp
            ))
        }
        Some(exp) if Duration::from_secs(exp - now_unix) < TOKEN_MIN_LIFETIME => {
            return Some(format!(
                "the token has only {}s of life left (exp {exp}); at least {}s are needed",
                exp - now_unix,
                TOKEN_MIN_LIFETIME.as_secs()
            ))
        }
        Some(_) => {}
    }
    let aud = claims.aud.as_deref().unwrap_or("");
    let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    if !accepted_audiences.iter().any(|a| norm(a) == norm(aud)) {
        return Some(format!(
            "the token's audience {aud:?} is not this cloud's ARM audience (expected one of {accepted_audiences:?})"
        ));
    }
    if let (Some(want), Some(got)) = (configured_tenant, claims.tid.as_deref()) {
        if !want.eq_ignore_ascii_case(got) {
            return Some(format!(
                "the token's tenant {got} differs from the configured tenant {want}"
            ));
        }
    }
    None
}

#[cfg(test)]
pub(crate) fn test_jwt(claims: &serde_json::Value) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b.encode(br#"{"typ":"JWT","alg":"RS256"}"#),
        b.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARM: &[&str] = &[
        "https://management.azure.com/",
        "https://management.core.windows.net/",
    ];

    #[test]
    fn empty_and_null_tokens_are_refused_at_the_door() {
        for bad in ["", "   ", "null", "NULL", "a b"] {
            assert!(AccessToken::new(bad.into()).is_none(), "{bad:?}");
        }
        assert!(AccessToken::new("eyJ.x.y".into()).is_some());
    }

    #[test]
    fn debug_never_shows_the_value() {
        let t = AccessToken::new("super-secret-value".into()).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
    }

    #[test]
    fn decodes_claims_with_numbers_or_strings() {
        let jwt = test_jwt(
            &json!({"tid": "t", "oid": "o", "aud": "https://management.azure.com/", "exp": 100, "iat": "50"}),
        );
        let c = decode_claims_str(&jwt).unwrap();
        assert_eq!(c.tid.as_deref(), Some("t"));
        assert_eq!(c.exp, Some(100));
        assert_eq!(c.iat, Some(50));
    }

    #[test]
    fn rejects_what_is_not_a_jwt() {
        for bad in ["abc", "a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c"] {
            assert!(decode_claims_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals() {
        let now = 1_000_000;
        let good = Claims {
            aud: Some("https://management.core.windows.net/".into()),
            tid: Some("T1".into()),
            exp: Some(now + 3600),
            ..Default::default()
        };
        assert_eq!(refusal(&good, now, ARM, Some("t1")), None);
        let cases = [
            (
                Claims {
                    exp: None,
                    ..good.clone()
                },
                "no exp",
            ),
            (
                Claims {
                    exp: Some(now - 5),
                    ..good.clone()
                },
                "expired",
            ),
            (
                Claims {
                    exp: Some(now + 300),
                    ..good.clone()
                },
                "only 300s",
            ),
            (
                Claims {
                    aud: Some("https://graph.microsoft.com".into()),
                    ..good.clone()
                },
                "audience",
            ),
        ];
        for (c, want) in cases {
            let r = refusal(&c, now, ARM, None).unwrap_or_default();
            assert!(r.contains(want), "{r:?} should mention {want:?}");
        }
        let r = refusal(&good, now, ARM, Some("other")).unwrap();
        assert!(r.contains("tenant"), "{r}");
    }

    #[test]
    fn identity_kind_from_mirid() {
        let ua = Claims {
            xms_mirid: Some("/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1".into()),
            ..Default::default()
        };
        let sa = Claims {
            xms_mirid: Some(
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
                    .into(),
            ),
            ..Default::default()
        };
        assert_eq!(identity_kind(&ua), IdentityKind::UserAssigned);
        assert_eq!(identity_kind(&sa), IdentityKind::SystemAssigned);
        assert_eq!(identity_kind(&Claims::default()), IdentityKind::Unknown);
    }

    #[test]
    fn claims_are_escaped_when_decoded() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"tid":"a\nERROR b\u001b[31m\u2028","oid":"plain"}"#);
        let c = decode_claims_str(&format!("h.{payload}.s")).unwrap();
        assert_eq!(c.tid.as_deref(), Some("a\\nERROR b\\u{001b}[31m\\u{2028}"));
        assert_eq!(c.oid.as_deref(), Some("plain"));
    }
}
