//! Workload identity federation (FACTS §11): the machine's own cloud-issued OIDC token (the
//! "assertion", from GCP, AWS, a file or GitHub Actions: one `AssertionSource` each) is exchanged
//! at the tenant's Entra token endpoint for an ARM token of the user-assigned identity whose
//! federated identity credential (issuer + subject + audience) trusts it. `azcmagent` then takes
//! that token like an IMDS one.
//!
//! Every `fresh_token` (one per agent attempt) fetches a fresh assertion and exchanges it, and so
//! does every retry inside it: assertions live minutes (GitHub ~5 min, STS 5 min as we ask,
//! GCP 1 h), and a Kubernetes token file is rotated by the kubelet.
//!
//! Entra's answers (FACTS §11), classified by `classify_exchange`:
//! - 200: the token, then checked like an IMDS token (lifetime, ARM audience, tenant)
//! - AADSTS70021 / 700213 / 7002137 / 7002138, no matching federated credential: also what a new
//!   credential looks like while it propagates, so retried until the deadline; then exit 3 naming
//!   the assertion's issuer, subject and audience and the credential to create
//! - AADSTS700024, assertion expired or not yet valid: a new assertion on the next try
//! - AADSTS700016 unknown client id, AADSTS90002 unknown tenant, AADSTS70023 lifetime over 1 day
//!   1 h, other 4xx: not retried, exit 3 with advice
//! - 429 (Retry-After), 5xx, time-outs: retried
//!
//! The assertion goes only to the authority (https, through the proxy rules); it is a secret: no
//! `Debug` of it, never logged. Its claims (iss, sub, aud, exp) are not secret and are logged.

use std::time::Duration;

use serde::Deserialize;

use crate::azure::http::{Failure, Http};
use crate::config::{Cloud, Identity, Settings};
use crate::error::Error;
use crate::identity::token::{self, AccessToken, Claims};
use crate::identity::TokenSource;
use crate::retry::{Attempt, Backoff, Deadline, BACKOFF_BASE, BACKOFF_CAP};

pub use super::assertion::{
    fic_command, is_transient_status, transport_retry, Assertion, AssertionClaims, AssertionSource,
    Unavailable,
};
use crate::timefmt::human;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// One exchange request (Entra answers in well under a second; a slow proxy gets some room).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one exchange answer means.
#[derive(Debug)]
pub enum Exchange {
    Token(AccessToken),
    /// No matching federated credential (or one still propagating): retry, then exit 3.
    NoMatchingCredential {
        code: u32,
        description: String,
    },
    /// The assertion expired before Entra saw it: fetch a new one.
    AssertionExpired {
        description: String,
    },
    /// 429 / 5xx / unreadable 200: retry.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Not retried.
    Permanent {
        code: Option<u32>,
        detail: String,
        advice: String,
    },
}

#[derive(Deserialize, Default)]
struct EntraError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
}

#[derive(Deserialize)]
struct EntraToken {
    access_token: Option<String>,
}

/// The form body of the exchange (RFC 6749 client credentials with an RFC 7523 assertion).
pub fn exchange_form(client_id: &str, scope: &str, assertion: &Assertion) -> String {
    format!(
        "client_id={}&scope={}&client_assertion_type={}&client_assertion={}&grant_type=client_credentials",
        form_encode(client_id),
        form_encode(scope),
        form_encode(JWT_BEARER),
        form_encode(assertion.expose())
    )
}

fn form_encode(s: &str) -> String {
    crate::identity::imds::encode(s)
}

/// `AADSTS70021: No matching ... ` without the trace/correlation/timestamp tail.
fn first_line(desc: &str) -> String {
    desc.split(['\r', '\n'])
        .next()
        .unwrap_or("")
        .chars()
        .take(400)
        .collect()
}

pub fn classify_exchange(status: u16, body: &str, retry_after: Option<Duration>) -> Exchange {
    if status == 200 {
        return match serde_json::from_str::<EntraToken>(body) {
            Ok(t) => match t.access_token.and_then(AccessToken::new) {
                Some(tok) => Exchange::Token(tok),
                None => Exchange::Transient {
                    reason: "HTTP 200 but the access_token is empty or null (refusing to use it)"
                        .into(),
                    retry_after: None,
                },
            },
            Err(e) => Exchange::Transient {
                reason: format!("HTTP 200 but the answer is not a token response ({e})"),
                retry_after: None,
            },
        };
    }
    let e: EntraError = serde_json::from_str(body).unwrap_or_default();
    let code = e.error_codes.first().copied().or_else(|| {
        // The code also starts the description: "AADSTS70021: ...".
        e.error_description
            .as_deref()
            .and_then(|d| d.strip_prefix("AADSTS"))
            .and_then(|d| d.split(':').next())
            .and_then(|n| n.parse().ok())
    });
    let desc = first_line(e.error_description.as_deref().unwrap_or(""));
    let error = e.error.unwrap_or_default();
    if status == 429 || status >= 500 {
        return Exchange::Transient {
            reason: format!(
                "HTTP {status}{}",
                if desc.is_empty() {
                    String::new()
                } else {
                    format!(": {desc}")
                }
            ),
            retry_after,
        };
    }
    match code {
        Some(70021 | 700213 | 7002137 | 7002138) => Exchange::NoMatchingCredential {
            code: code.unwrap_or(0),
            description: desc,
        },
        Some(700024) => Exchange::AssertionExpired { description: desc },
        Some(700016) => Exchange::Permanent {
            code,
            detail: format!("Entra does not know the client id in this tenant (HTTP {status} {error}: {desc})"),
            advice: "check --client-id (the user-assigned identity's clientId) and --tenant-id (the identity's \
                     tenant); and that --cloud/--authority-host is the identity's cloud"
                .into(),
        },
        Some(90002) => Exchange::Permanent {
            code,
            detail: format!("Entra does not know the tenant (HTTP {status} {error}: {desc})"),
            advice: "check --tenant-id and that --cloud/--authority-host is the tenant's cloud".into(),
        },
        Some(70023) => Exchange::Permanent {
            code,
            detail: format!("Entra refuses the assertion's lifetime (HTTP {status} {error}: {desc})"),
            advice: "the external token lives longer than Entra accepts (1 day 1 hour); have its issuer mint \
                     shorter-lived tokens (Kubernetes: expirationSeconds of the projected token)"
                .into(),
        },
        _ => Exchange::Permanent {
            code,
            detail: format!(
                "Entra refused the exchange: HTTP {status}{}{}",
                if error.is_empty() { String::new() } else { format!(" {error}") },
                if desc.is_empty() { String::new() } else { format!(": {desc}") }
            ),
            advice: "this answer is not retried; check --client-id, --tenant-id and the identity's federated \
                     credentials"
                .into(),
        },
    }
}

/// A federated token source: an assertion source plus the exchange.
pub struct Federated<'a> {
    pub settings: &'a Settings,
    pub source: Box<dyn AssertionSource + 'a>,
}

/// What the last try saw, for the error at the deadline and for `check`.
#[derive(Default)]
pub struct Progress {
    pub assertion: Option<AssertionClaims>,
    pub no_match: Option<(u32, String)>,
}

impl Federated<'_> {
    fn client_id(&self) -> Result<&str, Error> {
        match &self.settings.identity.value {
            Identity::ClientId(c) => Ok(c),
            other => Err(Error::Internal(format!(
                "federation without a client id ({}); settings should have refused this",
                other.describe()
            ))),
        }
    }

    fn tenant(&self) -> Result<&str, Error> {
        self.settings
            .tenant_id
            .as_ref()
            .map(|t| t.value.as_str())
            .ok_or_else(|| {
                Error::Internal(
                    "federation without a tenant; settings should have refused this".into(),
                )
            })
    }

    pub fn token_url(&self) -> Result<String, Error> {
        Ok(format!(
            "{}/{}/oauth2/v2.0/token",
            self.settings
                .federation
                .authority_host
                .value
                .trim_end_matches('/'),
            self.tenant()?
        ))
    }

    /// One assertion and one exchange.
    pub fn try_once(
        &self,
        http: &Http,
        deadline: &Deadline,
        progress: &mut Progress,
        n: u32,
    ) -> Attempt<AccessToken> {
        let cloud = self.settings.cloud.value;
        let assertion = match self.source.assertion(http, cloud.fic_audience(), deadline) {
            Attempt::Done(a) => a,
            Attempt::Retry {
                reason,
                retry_after,
            } => {
                return Attempt::Retry {
                    reason,
                    retry_after,
                }
            }
            Attempt::Poll { reason, every } => return Attempt::Poll { reason, every },
            Attempt::Fail(e) => return Attempt::Fail(e),
        };
        let claims = match AssertionClaims::decode(&assertion) {
            Ok(c) => c,
            Err(e) => {
                return Attempt::Fail(Error::NoToken {
                    detail: format!(
                        "{} gave a token that cannot be read: {e}",
                        self.source.describe()
                    ),
                    advice: "check that the token source is what it claims to be".into(),
                })
            }
        };
        log::info!(
            "federated token attempt {n}: assertion from {}: {}",
            self.source.describe(),
            claims.describe(deadline.clock.unix_now())
        );
        progress.assertion = Some(claims);
        let (client_id, url) = match (self.client_id(), self.token_url()) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) | (_, Err(e)) => return Attempt::Fail(e),
        };
        let body = exchange_form(client_id, cloud.arm_scope(), &assertion);
        drop(assertion);
        let timeout = deadline
            .clock
            .io_timeout(deadline.bounded(EXCHANGE_TIMEOUT));
        let reply = http.request(
            "POST",
            &url,
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "application/json"),
            ],
            Some(&body),
            timeout,
        );
        // The body holds the assertion: overwrite it before it is freed.
        let mut body = body;
        // SAFETY: zero bytes keep the String valid UTF-8.
        unsafe { body.as_bytes_mut().fill(0) };
        let reply = match reply {
            Ok(r) => r,
            Err(f) => {
                return Attempt::Retry {
                    reason: format!(
                        "cannot reach the Entra authority {}: {}",
                        self.settings.federation.authority_host.value,
                        describe_failure(&f)
                    ),
                    retry_after: None,
                }
            }
        };
        match classify_exchange(reply.status, &reply.body, reply.retry_after) {
            Exchange::Token(t) => {
                log::info!(
                    "federated token attempt {n}: Entra exchanged the assertion for an ARM token"
                );
                Attempt::Done(t)
            }
            Exchange::NoMatchingCredential { code, description } => {
                progress.no_match = Some((code, description.clone()));
                Attempt::Retry {
                    reason: format!(
                        "Entra found no matching federated credential (AADSTS{code}; a new credential takes a \
                         few minutes to propagate): {description}"
                    ),
                    retry_after: None,
                }
            }
            Exchange::AssertionExpired { description } => Attempt::Retry {
                reason: format!(
                    "Entra says the assertion expired ({description}); fetching a new one"
                ),
                retry_after: None,
            },
            Exchange::Transient {
                reason,
                retry_after,
            } => Attempt::Retry {
                reason: format!("Entra answered {reason}"),
                retry_after,
            },
            Exchange::Permanent { detail, advice, .. } => {
                Attempt::Fail(Error::NoToken { detail, advice })
            }
        }
    }

    /// Exchange until a token comes, a permanent answer, or the deadline.
    pub fn exchange(&self, http: &Http, deadline: &Deadline) -> Result<AccessToken, Error> {
        let cloud = self.settings.cloud.value;
        log::info!(
            "requesting an ARM token for {} in tenant {} through workload identity federation: an assertion from {}, \
             exchanged at {}",
            self.settings.identity.value.describe(),
            self.tenant()?,
            self.source.describe(),
            self.settings.federation.authority_host.value
        );
        let mut progress = Progress::default();
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        crate::retry::retry_with(
            "federated token",
            deadline,
            &mut backoff,
            &mut progress,
            |p, n| self.try_once(http, deadline, p, n),
            |p, last| self.deadline_error(p, cloud, deadline, last),
        )
    }

    /// `check` and `token`: one look, not a wait for a credential to propagate. Transient
    /// answers are still retried within `deadline`; "no matching credential" stops at once.
    pub fn probe(
        &self,
        http: &Http,
        deadline: &Deadline,
    ) -> (
        Option<AssertionClaims>,
        Result<(AccessToken, Claims), Error>,
    ) {
        let cloud = self.settings.cloud.value;
        let mut progress = Progress::default();
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let token = crate::retry::retry_with(
            "federated token",
            deadline,
            &mut backoff,
            &mut progress,
            |p, n| match self.try_once(http, deadline, p, n) {
                Attempt::Retry { .. } if p.no_match.is_some() => {
                    Attempt::Fail(self.no_match_error(p, cloud, "now"))
                }
                other => other,
            },
            |p, last| self.deadline_error(p, cloud, deadline, last),
        );
        let result = token.and_then(|t| self.checked(t, deadline));
        (progress.assertion, result)
    }

    fn no_match_error(&self, p: &Progress, cloud: Cloud, when: &str) -> Error {
        let (code, a) = match (&p.no_match, &p.assertion) {
            (Some((code, _)), Some(a)) => (*code, a.clone()),
            _ => (0, AssertionClaims::default()),
        };
        Error::NoToken {
            detail: format!(
                "Entra found no federated credential of {} matching the assertion (AADSTS{code}) {when}: \
                 issuer {:?}, subject {:?}, audience {:?}",
                self.settings.identity.value.describe(),
                a.issuer(),
                a.subject(),
                a.aud.join(",")
            ),
            advice: format!(
                "create the federated credential on the identity (it is matched exactly, case included): {}; \
                 then run arc-enroll again",
                fic_command(&a, cloud)
            ),
        }
    }

    fn deadline_error(
        &self,
        p: &Progress,
        cloud: Cloud,
        deadline: &Deadline,
        last: String,
    ) -> Error {
        match (&p.no_match, &p.assertion) {
            (Some(_), Some(_)) => self.no_match_error(p, cloud, &format!("until the deadline ({})", human(deadline.timeout))),
            _ => Error::NoToken {
                detail: format!(
                    "no federated token before the deadline ({}); last answer: {last}",
                    human(deadline.timeout)
                ),
                advice: format!(
                    "check that {} is reachable and that the Entra authority {} is reachable (through the proxy, \
                     if one is set), then run arc-enroll again",
                    self.source.describe(),
                    self.settings.federation.authority_host.value
                ),
            },
        }
    }
}

fn describe_failure(f: &Failure) -> String {
    f.to_string()
}

impl Federated<'_> {
    /// The exchanged token's claims, checked like an IMDS token's before anyone gets it.
    fn checked(
        &self,
        token: AccessToken,
        deadline: &Deadline,
    ) -> Result<(AccessToken, Claims), Error> {
        let claims = token::decode_claims(&token).map_err(|e| Error::NoToken {
            detail: format!("Entra returned a token that cannot be read: {e}"),
            advice: "refusing to hand it to the agent; check that --authority-host is the real Entra authority".into(),
        })?;
        if let Some(why) = token::refusal(
            &claims,
            deadline.clock.unix_now(),
            self.settings.cloud.value.accepted_audiences(),
            self.settings.tenant_id.as_ref().map(|t| t.value.as_str()),
        ) {
            return Err(Error::NoToken {
                detail: format!("refusing the exchanged token: {why}"),
                advice: "check --cloud, --tenant-id and --authority-host".into(),
            });
        }
        let left = claims
            .exp
            .unwrap_or(0)
            .saturating_sub(deadline.clock.unix_now());
        log::info!(
            "token: tenant {}, object id {}, identity {}, expires in {}",
            claims.tid.as_deref().unwrap_or("?"),
            claims.oid.as_deref().unwrap_or("?"),
            claims.xms_mirid.as_deref().unwrap_or("?"),
            human(Duration::from_secs(left))
        );
        Ok((token, claims))
    }
}

impl TokenSource for Federated<'_> {
    fn fresh_token(
        &self,
        http: &Http,
        deadline: &Deadline,
    ) -> Result<(AccessToken, Claims), Error> {
        let token = self.exchange(http, deadline)?;
        self.checked(token, deadline)
    }

    fn instance_id(&self, http: &Http, deadline: &Deadline) -> Option<String> {
        self.source.instance_id(http, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", e(r#"{"alg":"RS256"}"#), e(claims), e("sig"))
    }

    #[test]
    fn assertion_claims_take_a_string_or_a_list_audience() {
        let a = Assertion::new(&jwt(
            r#"{"iss":"https://i","sub":"s","aud":"api://AzureADTokenExchange","exp":100}"#,
        ))
        .unwrap();
        let c = AssertionClaims::decode(&a).unwrap();
        assert_eq!(
            (c.issuer(), c.subject(), c.audience()),
            ("https://i", "s", "api://AzureADTokenExchange")
        );
        let a = Assertion::new(&jwt(r#"{"iss":"https://k","sub":"system:serviceaccount:a:b","aud":["api://AzureADTokenExchange"],"exp":100}"#)).unwrap();
        assert_eq!(
            AssertionClaims::decode(&a).unwrap().audience(),
            "api://AzureADTokenExchange"
        );
        let a = Assertion::new(&jwt(r#"{"aud":["x","y"]}"#)).unwrap();
        assert_eq!(AssertionClaims::decode(&a).unwrap().audience(), "");
        assert!(
            Assertion::new("").is_none()
                && Assertion::new("a b").is_none()
                && Assertion::new("null").is_none()
        );
        assert!(AssertionClaims::decode(&Assertion::new("a.b").unwrap()).is_err());
        assert_eq!(
            format!("{:?}", Assertion::new("secret-assertion").unwrap()),
            "Assertion(<redacted, 16 bytes>)"
        );
    }

    #[test]
    fn exchange_form_encodes_every_value() {
        let a = Assertion::new("aa.bb+/=.cc").unwrap();
        let f = exchange_form("c-1", "https://management.azure.com/.default", &a);
        assert_eq!(
            f,
            "client_id=c-1&scope=https%3A%2F%2Fmanagement.azure.com%2F.default&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=aa.bb%2B%2F%3D.cc&grant_type=client_credentials"
        );
    }

    fn err(code: u32, error: &str) -> String {
        format!(
            r#"{{"error":"{error}","error_description":"AADSTS{code}: something.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2026-12-01 10:00:00Z","error_codes":[{code}]}}"#
        )
    }

    #[test]
    fn classifies_entra_answers() {
        let kind = |e: &Exchange| match e {
            Exchange::Token(_) => "token",
            Exchange::NoMatchingCredential { .. } => "no-match",
            Exchange::AssertionExpired { .. } => "expired",
            Exchange::Transient { .. } => "transient",
            Exchange::Permanent { .. } => "permanent",
        };
        let cases: &[(u16, String, &str)] = &[
            (
                200,
                r#"{"token_type":"Bearer","expires_in":3599,"access_token":"a.b.c"}"#.into(),
                "token",
            ),
            (200, r#"{"access_token":null}"#.into(), "transient"),
            (200, "<html>".into(), "transient"),
            (400, err(70021, "invalid_request"), "no-match"),
            (400, err(700213, "invalid_request"), "no-match"),
            (401, err(7002137, "invalid_client"), "no-match"),
            (401, err(7002138, "invalid_client"), "no-match"),
            (400, err(700024, "invalid_client"), "expired"),
            (400, err(700016, "unauthorized_client"), "permanent"),
            (400, err(90002, "invalid_request"), "permanent"),
            (400, err(70023, "invalid_client"), "permanent"),
            (400, err(50027, "invalid_request"), "permanent"),
            (429, err(50196, "temporarily_unavailable"), "transient"),
            (503, String::new(), "transient"),
            (500, err(90033, "server_error"), "transient"),
            (403, String::new(), "permanent"),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                kind(&classify_exchange(*status, body, None)),
                *want,
                "HTTP {status} {body}"
            );
        }
        // The code is read from the description when error_codes is missing; the trace tail is cut.
        match classify_exchange(
            400,
            r#"{"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity record found.\r\nTrace ID: x"}"#,
            None,
        ) {
            Exchange::NoMatchingCredential { code, description } => {
                assert_eq!(code, 70021);
                assert_eq!(
                    description,
                    "AADSTS70021: No matching federated identity record found."
                );
            }
            other => panic!("{other:?}"),
        }
        match classify_exchange(429, "", Some(Duration::from_secs(7))) {
            Exchange::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fic_command_names_issuer_subject_audience() {
        let c = AssertionClaims {
            iss: Some("https://accounts.google.com".into()),
            sub: Some("1122".into()),
            aud: vec!["api://AzureADTokenExchange".into()],
            ..Default::default()
        };
        let cmd = fic_command(&c, Cloud::AzureCloud);
        assert!(cmd.contains("--issuer 'https://accounts.google.com' --subject '1122' --audiences 'api://AzureADTokenExchange'"), "{cmd}");
        let none = AssertionClaims {
            iss: Some("i".into()),
            sub: Some("s".into()),
            ..Default::default()
        };
        assert!(fic_command(&none, Cloud::AzureUSGovernment)
            .contains("--audiences 'api://AzureADTokenExchangeUSGov'"));
    }
}
