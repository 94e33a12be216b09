//! Test JWTs: header.payload.signature, base64url without padding, signature not verifiable
//! (arc-enroll never verifies it either: it is the token's bearer, not its audience).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

pub fn mint(claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"fake"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(b"fake-signature-not-verifiable")
    )
}

/// The claims of a JWT, or None when it is not one.
pub fn claims(jwt: &str) -> Option<Value> {
    let mut parts = jwt.trim().split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
