//! Secrets as types: no `Debug` or `Display` of the value, zeroed when dropped. Their own module
//! (not `identity::token`) because every layer carries them: `azure::arm` sends the bearer,
//! `agent` hands it over, `identity` obtains it; private keys and federated assertions
//! (issues 14, 15) belong here too.

use std::fmt;

/// The bearer token. It has no `Debug` or `Display` of its value, so it cannot be logged by
/// accident; the only way to the text is `expose()`, used where it is written to the agent.
pub struct AccessToken(String);

impl AccessToken {
    /// Wrap a token; `None` for an empty, `null` or whitespace-only value (fail closed).
    pub fn new(value: String) -> Option<AccessToken> {
        let v = value.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("null") || v.contains(char::is_whitespace) {
            return None;
        }
        Some(AccessToken(v.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(<redacted, {} bytes>)", self.0.len())
    }
}

impl Drop for AccessToken {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        // SAFETY: writing zero bytes keeps the String valid UTF-8.
        unsafe { self.0.as_bytes_mut().fill(0) };
    }
}

/// The one-time private key of a pre-created machine (base64 of its PKCS#1 DER, FACTS §10). Like
/// the token: no `Debug`/`Display` of the value, zeroed on drop, text only through `expose()`,
/// used where it is written to the agent's 0600 file.
pub struct PrivateKey(zeroize::Zeroizing<String>);

impl PrivateKey {
    pub fn new(base64_der: zeroize::Zeroizing<String>) -> PrivateKey {
        PrivateKey(base64_der)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<redacted, {} chars>)", self.0.len())
    }
}
