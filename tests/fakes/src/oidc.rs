//! What the federation fakes share: external OIDC tokens ("assertions") that the fake Entra can
//! check were really minted by a fake issuer and not edited on the way, and the list of secrets
//! each fake hands out (for the tests' secret scanner).
//!
//! Signatures: a real issuer signs with RS256 and publishes its keys at its JWKS endpoint, which
//! Entra fetches. The fakes sign `header.payload` with HMAC-SHA256 under a key derived from the
//! issuer URL (the stand-in for that issuer's JWKS), so the fake Entra detects a token whose bytes
//! were changed (trimmed, re-encoded, claims edited) without any network fetch. The header still
//! says `RS256` because that is what the real issuers send.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Kinds of secret, named as the shared secret-scan registry names them.
pub const FEDERATED_ASSERTION: &str = crate::secrets::FEDERATED_ASSERTION;
pub const EXCHANGED_TOKEN: &str = crate::secrets::EXCHANGED_TOKEN;
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS secret access key";
pub const AWS_SESSION_TOKEN: &str = "AWS session token";
pub const IMDSV2_SESSION_TOKEN: &str = "AWS IMDSv2 session token";
pub const GITHUB_REQUEST_TOKEN: &str = "GitHub Actions ID-token request token";

/// Every secret one fake handed out, in order (kind, value); each is also registered with the
/// tests' secret scanner (`crate::secrets`).
#[derive(Clone, Default)]
pub struct IssuedLog(Arc<Mutex<Vec<(String, String)>>>);

impl IssuedLog {
    pub fn record(&self, kind: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        // What of a JWT is secret: not its header (shared by every token of an issuer), not its
        // claims (arc-enroll prints them, and base64 of similar JSON shares 16-byte runs between
        // tokens: `","exp":17…`, a tenant id at the same alignment): its signature, which makes it
        // a credential and which every leak of the whole token contains. Every JWT these fakes
        // mint has its own signature (`mint`).
        let secret_part = match value.split('.').collect::<Vec<_>>().as_slice() {
            [_, _, sig] if sig.len() >= 16 => *sig,
            _ => value,
        };
        crate::secrets::register(kind, secret_part);
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !l.iter().any(|(_, v)| v == value) {
            l.push((kind.to_string(), value.to_string()));
        }
    }

    pub fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn values(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, v)| v).collect()
    }
}

impl std::fmt::Debug for IssuedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedLog(<{} secrets>)", self.all().len())
    }
}

fn issuer_key(iss: &str) -> hmac::Key {
    hmac::Key::new(
        hmac::HMAC_SHA256,
        format!("arc-enroll fake OIDC issuer key for {iss}").as_bytes(),
    )
}

/// A token from issuer `claims.iss`, signed so that [`verify`] accepts it.
pub fn mint(claims: &Value, kid: &str) -> String {
    let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
    let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = hmac::sign(&issuer_key(iss), signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Why a presented token is not acceptable before any claim is looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not three base64url parts with a JSON payload.
    NotAJwt,
    /// The signature does not match the issuer's key (bytes changed after minting, or not minted
    /// by a fake issuer at all).
    BadSignature,
}

/// The claims of a token minted by [`mint`], checked against its issuer's key.
pub fn verify(token: &str) -> Result<Value, Malformed> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(Malformed::NotAJwt);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1])
        .map_err(|_| Malformed::NotAJwt)?;
    let claims: Value = serde_json::from_slice(&payload).map_err(|_| Malformed::NotAJwt)?;
    if !claims.is_object() {
        return Err(Malformed::NotAJwt);
    }
    let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
    let sig = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|_| Malformed::BadSignature)?;
    let input = format!("{}.{}", parts[0], parts[1]);
    hmac::verify(&issuer_key(iss), input.as_bytes(), &sig).map_err(|_| Malformed::BadSignature)?;
    Ok(claims)
}

/// A Kubernetes projected service-account token (the `file` source's usual content): issuer the
/// cluster's OIDC URL, `sub` `system:serviceaccount:<ns>:<sa>`, `aud` a one-element array as the
/// kubelet writes it, `exp` `lifetime_secs` from now.
pub fn kubernetes_token(
    issuer: &str,
    namespace: &str,
    sa: &str,
    audience: &str,
    lifetime_secs: i64,
) -> String {
    let now = crate::jwt::now_unix() as i64;
    mint(
        &json!({
            "aud": [audience],
            "exp": now + lifetime_secs,
            "iat": now,
            "nbf": now,
            "iss": issuer,
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": format!("{sa}-0"), "uid": crate::imds::fake_guid(&format!("pod:{namespace}:{sa}"))},
                "serviceaccount": {"name": sa, "uid": crate::imds::fake_guid(&format!("sa:{namespace}:{sa}"))}
            },
            "sub": format!("system:serviceaccount:{namespace}:{sa}"),
        }),
        "k8s-fake-key",
    )
}

/// Unix seconds => (year, month, day, hour, minute, second) in UTC (Howard Hinnant's
/// civil_from_days; the fakes have no date crate).
pub fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// (year, month, day) => days since 1970-01-01 (days_from_civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_round_trip() {
        // 2015-08-30T12:36:00Z, the SigV4 suite's time.
        assert_eq!(civil(1_440_938_160), (2015, 8, 30, 12, 36, 0));
        assert_eq!(
            days_from_civil(2015, 8, 30) * 86_400 + 12 * 3600 + 36 * 60,
            1_440_938_160
        );
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400, 951_782_400);
    }

    use super::*;

    #[test]
    fn minted_tokens_verify_and_edits_do_not() {
        let t = mint(&json!({"iss": "https://issuer.example", "sub": "s"}), "k");
        assert_eq!(verify(&t).unwrap()["sub"], "s");
        // Another issuer's key, an edited payload, a truncated signature: all rejected.
        let other = mint(&json!({"iss": "https://other.example", "sub": "s"}), "k");
        let parts: Vec<&str> = t.split('.').collect();
        let o: Vec<&str> = other.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], o[1], parts[2]);
        assert_eq!(verify(&forged), Err(Malformed::BadSignature));
        assert_eq!(verify(&t[..t.len() - 2]), Err(Malformed::BadSignature));
        assert_eq!(verify("a.b"), Err(Malformed::NotAJwt));
        assert_eq!(verify("a.!!.c"), Err(Malformed::NotAJwt));
    }

    #[test]
    fn kubernetes_token_shape() {
        let t = kubernetes_token(
            "https://oidc.example/abc/",
            "arc",
            "enroller",
            "api://AzureADTokenExchange",
            3600,
        );
        let c = verify(&t).unwrap();
        assert_eq!(c["sub"], "system:serviceaccount:arc:enroller");
        assert_eq!(c["aud"], json!(["api://AzureADTokenExchange"]));
    }
}
