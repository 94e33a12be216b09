//! Azure IMDS: the managed-identity token and the instance metadata (FACTS §5).
//!
//! Always `http://169.254.169.254/metadata/identity/oauth2/token` (or `--imds-endpoint`), direct:
//! `IDENTITY_ENDPOINT`/`IMDS_ENDPOINT`, which the agent's installer sets, are ignored (FACTS §1.7).
//! Retried (FACTS §5.4, §5.5): 404, 408, 410 ("available within 70 s"), 429 (Retry-After), 5xx,
//! time-outs and connection failures, until the run's deadline. Not retried: other 4xx, which are
//! design-time errors (no identity, wrong selector, bad request).

use std::time::Duration;

use serde::Deserialize;

use crate::azure::http::{Failure, Http};
use crate::config::{Identity, Settings};
use crate::error::Error;
use crate::identity::token::{self, AccessToken, Claims, IdentityKind};
use crate::retry::{retry, Attempt, Backoff, Deadline};
use crate::timefmt::human;

pub const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
pub const INSTANCE_PATH: &str = "/metadata/instance/compute";
/// The token API version the SDKs use (FACTS §5.1).
pub const TOKEN_API_VERSION: &str = "2018-02-01";
pub const INSTANCE_API_VERSION: &str = "2021-02-01";
/// One token request. IMDS is on the host; a slow answer means it is busy or updating, and a
/// fresh attempt is better than a long wait (azidentity's probe uses 1 s, its requests 1 min).
pub const IMDS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Instance metadata is optional (a Nexus sidecar may not serve it): one short try.
pub const INSTANCE_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The token answer (FACTS §5.2: every field is a JSON string; numbers are accepted too).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    resource: Option<String>,
}

/// The error answer: `{"error": "...", "error_description": "..."}`.
#[derive(Deserialize, Default)]
struct ErrorResponse {
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The token URL for this identity and cloud, parameters percent-encoded.
pub fn token_url(endpoint: &str, resource: &str, identity: &Identity) -> String {
    let mut url = format!(
        "{}{TOKEN_PATH}?api-version={TOKEN_API_VERSION}&resource={}",
        endpoint.trim_end_matches('/'),
        encode(resource)
    );
    if let Some((k, v)) = identity.query_param() {
        url.push_str(&format!("&{k}={}", encode(v)));
    }
    url
}

/// What one token answer means.
pub fn classify_token_reply(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    identity: &Identity,
) -> Attempt<AccessToken> {
    match status {
        200 => match serde_json::from_str::<TokenResponse>(body) {
            Ok(t) => match t.access_token.and_then(AccessToken::new) {
                Some(tok) => {
                    if let Some(r) = t.resource {
                        log::debug!("IMDS token answer for resource {r}");
                    }
                    Attempt::Done(tok)
                }
                None => Attempt::Retry {
                    reason: "HTTP 200 but the access_token is empty or null (refusing to use it)".into(),
                    retry_after: None,
                },
            },
            Err(e) => Attempt::Retry {
                reason: format!("HTTP 200 but the answer is not a token response ({e})"),
                retry_after: None,
            },
        },
        404 => updating("HTTP 404 (IMDS is updating)", retry_after),
        408 => retry_reason("HTTP 408 (request time-out)", retry_after),
        410 => updating(
            "HTTP 410 (IMDS is updating; Microsoft says it is back within 70 s)",
            retry_after,
        ),
        429 => retry_reason("HTTP 429 (throttled: IMDS allows 20 identity requests/s)", retry_after),
        500..=599 => {
            let e = error_text(body);
            retry_reason(&format!("HTTP {status}{e}"), retry_after)
        }
        400 => {
            let parsed: ErrorResponse = serde_json::from_str(body).unwrap_or_default();
            let desc = parsed.error_description.clone().unwrap_or_default();
            let lower = desc.to_ascii_lowercase();
            let advice = if lower.contains("identity not found") {
                match identity {
                    Identity::SystemAssigned => "this VM has no system-assigned managed identity; create the VM \
                         with one (Nexus: `--mi-system-assigned`; it cannot be added later) or pass a \
                         user-assigned identity with --identity-resource-id / --client-id"
                        .to_string(),
                    other => format!(
                        "{} is not assigned to this VM; check the id, or assign the identity to the VM \
                         (Nexus: `--mi-user-assigned --user-assigned <id>` at creation)",
                        other.describe()
                    ),
                }
            } else if lower.contains("multiple user assigned") {
                "this VM has several user-assigned identities and no system-assigned one; choose one with \
                 --identity-resource-id, --client-id or --object-id"
                    .to_string()
            } else {
                "this request is not retried; check --imds-endpoint and the identity settings".to_string()
            };
            Attempt::Fail(Error::NoToken {
                detail: format!(
                    "IMDS answered HTTP 400 for {}{}",
                    identity.describe(),
                    error_text(body)
                ),
                advice,
            })
        }
        _ => Attempt::Fail(Error::NoToken {
            detail: format!("IMDS answered HTTP {status} for {}{}", identity.describe(), error_text(body)),
            advice: "this answer is not retried (FACTS: other 4xx are design-time errors); check the identity \
                     settings and that 169.254.169.254 is the real IMDS, not a proxy"
                .into(),
        }),
    }
}

/// "IMDS is updating" (404/410): poll every 1–2 s so the token comes promptly once IMDS is back
/// (a backoff would grow to 30 s); a `Retry-After`, if IMDS sends one, still wins.
fn updating(reason: &str, retry_after: Option<Duration>) -> Attempt<AccessToken> {
    match retry_after {
        Some(_) => retry_reason(reason, retry_after),
        None => Attempt::Poll {
            reason: reason.to_string(),
            every: crate::retry::IMDS_UPDATING_POLL,
        },
    }
}

fn retry_reason(reason: &str, retry_after: Option<Duration>) -> Attempt<AccessToken> {
    Attempt::Retry {
        reason: reason.to_string(),
        retry_after,
    }
}

/// `: invalid_request: Identity not found`, or the start of a non-JSON body.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<ErrorResponse>(body) {
        Ok(e) if e.error.is_some() || e.error_description.is_some() => {
            let err = match e.error {
                Some(serde_json::Value::String(s)) => s,
                Some(v) => v.to_string(),
                None => String::new(),
            };
            let desc = e.error_description.unwrap_or_default();
            format!(
                ": {}: {}",
                crate::text::escape_remote(&err),
                crate::text::escape_remote(&desc)
            )
        }
        _ if body.trim().is_empty() => String::new(),
        _ => format!(": {:?}", body.chars().take(120).collect::<String>()),
    }
}

/// The managed identity of an Azure VM (or Nexus VM), through IMDS.
pub struct Imds<'a> {
    pub settings: &'a Settings,
}

impl super::TokenSource for Imds<'_> {
    fn fresh_token(
        &self,
        http: &Http,
        deadline: &Deadline,
    ) -> Result<(AccessToken, Claims), Error> {
        fetch_token(http, self.settings, deadline)
    }
}

/// Fetch a token for the configured identity, retrying transient answers until the deadline, and
/// check it before it can be handed to anyone (lifetime, audience, tenant).
pub fn fetch_token(
    http: &Http,
    settings: &Settings,
    deadline: &Deadline,
) -> Result<(AccessToken, Claims), Error> {
    let identity = &settings.identity.value;
    let cloud = settings.cloud.value;
    let url = token_url(
        &settings.imds_endpoint.value,
        cloud.token_resource(),
        identity,
    );
    log::info!(
        "requesting a managed-identity token for {} (audience {}) from {} (direct, never through a proxy)",
        identity.describe(),
        cloud.token_resource(),
        settings.imds_endpoint.value
    );
    let mut backoff = Backoff::new(crate::retry::BACKOFF_BASE, crate::retry::BACKOFF_CAP);
    let token = retry(
        "IMDS token",
        deadline,
        &mut backoff,
        |n| {
            let timeout = deadline
                .clock
                .io_timeout(deadline.bounded(IMDS_REQUEST_TIMEOUT));
            match http.imds_get(&url, timeout) {
                Ok(reply) => {
                    let a = classify_token_reply(
                        reply.status,
                        &reply.body,
                        reply.retry_after,
                        identity,
                    );
                    if let Attempt::Done(_) = a {
                        log::info!("IMDS token attempt {n}: HTTP 200, got a token");
                    }
                    a
                }
                Err(f) => Attempt::Retry {
                    reason: transport_reason(&f),
                    retry_after: None,
                },
            }
        },
        |last| {
            Error::NoToken {
            detail: format!(
                "IMDS at {} gave no token before the deadline ({}); last answer: {last}",
                settings.imds_endpoint.value,
                human(deadline.timeout)
            ),
            advice: "check that this VM has a managed identity and reaches 169.254.169.254 directly \
                     (Nexus: `curl -H Metadata:true http://169.254.169.254/healthz`), then run arc-enroll again"
                .into(),
        }
        },
    )?;
    let claims = token::decode_claims(&token).map_err(|e| Error::NoToken {
        detail: format!("IMDS returned a token that cannot be read: {e}"),
        advice: "refusing to hand it to the agent; check that --imds-endpoint is the real IMDS"
            .into(),
    })?;
    if let Some(why) = token::refusal(
        &claims,
        deadline.clock.unix_now(),
        cloud.accepted_audiences(),
        settings.tenant_id.as_ref().map(|t| t.value.as_str()),
    ) {
        return Err(Error::NoToken {
            detail: format!("refusing the token from IMDS: {why}"),
            advice:
                "check --cloud and --tenant-id against the identity's tenant; a token too close to \
                     expiry usually clears if you run arc-enroll again in a few minutes"
                    .into(),
        });
    }
    let kind = token::identity_kind(&claims);
    if *identity == Identity::SystemAssigned && kind == IdentityKind::UserAssigned {
        log::warn!(
            "asked IMDS for the system-assigned identity but got a token for the user-assigned identity {} \
             (IMDS does this when the VM has exactly one user-assigned identity and no system-assigned one); \
             continuing with it",
            claims.xms_mirid.as_deref().unwrap_or("?")
        );
    }
    let left = claims
        .exp
        .unwrap_or(0)
        .saturating_sub(deadline.clock.unix_now());
    log::info!(
        "token: tenant {}, object id {}, expires in {}",
        claims.tid.as_deref().unwrap_or("?"),
        claims.oid.as_deref().unwrap_or("?"),
        human(Duration::from_secs(left))
    );
    Ok((token, claims))
}

fn transport_reason(f: &Failure) -> String {
    match f {
        Failure::Timeout(_) => {
            "no answer within the request time-out (IMDS busy or updating)".into()
        }
        Failure::Connect(m) => format!("cannot reach IMDS: {m}"),
        other => format!("request failed: {other}"),
    }
}

/// The instance metadata fields arc-enroll can use as defaults (FACTS §5.6; strings).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compute {
    #[serde(default)]
    pub subscription_id: String,
    #[serde(default)]
    pub resource_group_name: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub vm_id: String,
    #[serde(default)]
    pub az_environment: String,
}

/// One short try at the instance metadata; `None` when IMDS does not serve it (Nexus sidecar).
pub fn instance_metadata(http: &Http, endpoint: &str, deadline: &Deadline) -> Option<Compute> {
    let url = format!(
        "{}{INSTANCE_PATH}?api-version={INSTANCE_API_VERSION}&format=json",
        endpoint.trim_end_matches('/')
    );
    let timeout = deadline
        .clock
        .io_timeout(deadline.bounded(INSTANCE_REQUEST_TIMEOUT));
    match http.imds_get(&url, timeout) {
        Ok(r) if r.status == 200 => match serde_json::from_str::<Compute>(&r.body) {
            Ok(c) => Some(c),
            Err(e) => {
                log::info!("IMDS instance metadata is not readable ({e}); not using it");
                None
            }
        },
        Ok(r) => {
            log::info!(
                "IMDS instance metadata not available (HTTP {}); not using it",
                r.status
            );
            None
        }
        Err(f) => {
            log::info!("IMDS instance metadata not available ({f}); not using it");
            None
        }
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(a: &Attempt<AccessToken>) -> &'static str {
        match a {
            Attempt::Done(_) => "done",
            Attempt::Retry { .. } => "retry",
            Attempt::Poll { .. } => "poll",
            Attempt::Fail(_) => "fail",
        }
    }

    #[test]
    fn token_url_encodes_resource_and_selector() {
        let id = Identity::ResourceId("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x".into());
        let u = token_url(
            "http://169.254.169.254/",
            "https://management.azure.com/",
            &id,
        );
        assert_eq!(
            u,
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&msi_res_id=%2Fsubscriptions%2Fs%2FresourceGroups%2Frg%2Fproviders%2FMicrosoft.ManagedIdentity%2FuserAssignedIdentities%2Fx"
        );
        let u = token_url("http://h", "r", &Identity::ClientId("c".into()));
        assert!(u.ends_with("&client_id=c"), "{u}");
        let u = token_url("http://h", "r", &Identity::SystemAssigned);
        assert!(!u.contains("client_id") && !u.contains("msi_res_id") && !u.contains("object_id"));
    }

    #[test]
    fn classifies_answers_per_microsoft_guidance() {
        let sa = Identity::SystemAssigned;
        let ok = r#"{"access_token":"a.b.c","expires_in":"3599","expires_on":"1506484173","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
        let cases: &[(u16, &str, &str)] = &[
            (200, ok, "done"),
            (200, r#"{"access_token":null}"#, "retry"),
            (200, r#"{"access_token":""}"#, "retry"),
            (200, r#"{"access_token":"null"}"#, "retry"),
            (200, "<html>proxy login</html>", "retry"),
            (200, r#"{"access_tok"#, "retry"),
            // "IMDS is updating": polled every 1-2 s, not backed off.
            (404, "", "poll"),
            (408, "", "retry"),
            (410, "", "poll"),
            (429, "", "retry"),
            (
                500,
                r#"{"error":"unknown","error_description":"Failed to retrieve token from the Active directory"}"#,
                "retry",
            ),
            (503, "", "retry"),
            (
                400,
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
                "fail",
            ),
            (
                400,
                r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#,
                "fail",
            ),
            (
                401,
                r#"{"error":"unknown_source","error_description":"Unknown Source"}"#,
                "fail",
            ),
            (403, "", "fail"),
        ];
        for (status, body, want) in cases {
            let got = classify_token_reply(*status, body, None, &sa);
            assert_eq!(kind(&got), *want, "HTTP {status} {body}");
        }
    }

    #[test]
    fn identity_not_found_gives_advice_for_the_identity_asked_for() {
        let body = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        let Attempt::Fail(e) = classify_token_reply(400, body, None, &Identity::SystemAssigned)
        else {
            panic!("must fail")
        };
        assert_eq!(e.exit_code(), 3);
        assert!(
            e.to_string()
                .contains("no system-assigned managed identity"),
            "{e}"
        );
        let Attempt::Fail(e) =
            classify_token_reply(400, body, None, &Identity::ClientId("abc".into()))
        else {
            panic!("must fail")
        };
        assert!(e.to_string().contains("client id abc"), "{e}");
    }

    #[test]
    fn retry_after_is_passed_on() {
        match classify_token_reply(
            429,
            "",
            Some(Duration::from_secs(3)),
            &Identity::SystemAssigned,
        ) {
            Attempt::Retry { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)))
            }
            _ => panic!("429 must be retried"),
        }
        // A Retry-After on 410 wins over polling.
        match classify_token_reply(
            410,
            "",
            Some(Duration::from_secs(5)),
            &Identity::SystemAssigned,
        ) {
            Attempt::Retry { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(5)))
            }
            _ => panic!("410 with Retry-After must honour it"),
        }
    }

    #[test]
    fn compute_fields_are_strings() {
        let c: Compute = serde_json::from_str(
            r#"{"subscriptionId":"s","resourceGroupName":"rg","location":"westeurope","vmId":"v","name":"n","azEnvironment":"AzurePublicCloud","tags":"","zone":""}"#,
        )
        .unwrap();
        assert_eq!(c.location, "westeurope");
        assert_eq!(c.resource_group_name, "rg");
    }
}
