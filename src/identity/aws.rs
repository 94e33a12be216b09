//! `--token-source aws`: an AWS instance's web identity token (FACTS §11, IAM outbound identity
//! federation). The instance role's temporary credentials from IMDSv2 (a PUT for a session token,
//! then GETs with it; direct, never through a proxy), then `sts:GetWebIdentityToken` on the
//! regional STS endpoint (the global one does not offer it), signed with SigV4 (`sigv4`) and sent
//! through the proxy rules like any https URL. The token: iss
//! `https://<id>.tokens.sts.global.api.aws` (once per account: `aws iam
//! enable-outbound-web-identity-federation`), sub `arn:aws:iam::<acct>:role/<Role>`, aud the
//! exchange audience, 5 minutes (we ask for 300 s: it is exchanged at once).

use std::time::Duration;

use serde::Deserialize;

use super::federated::{is_transient_status, transport_retry, Assertion, AssertionSource};
use super::sigv4::{self, Credentials};
use crate::azure::http::Http;
use crate::error::Error;
use crate::identity::imds::encode;
use crate::retry::{Attempt, Deadline};

pub const TOKEN_PATH: &str = "/latest/api/token";
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
pub const IDENTITY_DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
pub const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
/// An IMDSv2 session is needed for a few seconds; ask for 5 minutes.
pub const IMDS_SESSION_TTL_SECS: u32 = 300;
pub const AWS_IMDS_TIMEOUT: Duration = Duration::from_secs(5);
pub const STS_TIMEOUT: Duration = Duration::from_secs(30);
/// The web identity token's lifetime we ask for (STS allows 60–3600 s).
pub const WEB_IDENTITY_TOKEN_SECS: u32 = 300;

pub struct AwsInstance {
    pub imds_endpoint: String,
    /// `None`: `https://sts.<region>.amazonaws.com` (`.amazonaws.com.cn` in China).
    pub sts_endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    #[serde(default)]
    code: Option<String>,
}

impl Drop for RoleCredentials {
    fn drop(&mut self) {
        // SAFETY: zero bytes keep the Strings valid UTF-8.
        unsafe {
            self.secret_access_key.as_bytes_mut().fill(0);
            self.token.as_bytes_mut().fill(0);
        }
    }
}

#[derive(Deserialize)]
struct IdentityDocument {
    region: String,
    #[serde(rename = "instanceId", default)]
    instance_id: Option<String>,
}

/// The regional STS endpoint.
pub fn sts_endpoint_for(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://sts.{region}.amazonaws.com.cn")
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

/// The STS query-protocol form body.
pub fn sts_body(audience: &str) -> String {
    format!(
        "Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.1={}&SigningAlgorithm=RS256&DurationSeconds={WEB_IDENTITY_TOKEN_SECS}",
        encode(audience)
    )
}

/// The text of `<tag>...</tag>` in an STS XML answer (STS answers are flat enough for this).
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml[start..start + len].trim())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// What one STS answer means.
pub fn classify_sts_reply(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
) -> Attempt<Assertion> {
    if status == 200 {
        return match xml_text(body, "WebIdentityToken").and_then(Assertion::new) {
            Some(a) => Attempt::Done(a),
            None => Attempt::Retry {
                reason: "HTTP 200 but no WebIdentityToken in STS's answer".into(),
                retry_after: None,
            },
        };
    }
    let code = xml_text(body, "Code").unwrap_or("");
    let message = unescape(xml_text(body, "Message").unwrap_or(""))
        .chars()
        .take(300)
        .collect::<String>();
    let what = format!("STS answered HTTP {status} {code}: {message}");
    let fail = |advice: &str| {
        Attempt::Fail(Error::NoToken {
            detail: what.clone(),
            advice: advice.to_string(),
        })
    };
    match code {
        "Throttling" | "ServiceUnavailable" | "InternalFailure" | "RequestExpired" => Attempt::Retry {
            reason: what.clone(),
            retry_after,
        },
        // The role credentials rotated between the read and the call: read them again.
        "ExpiredToken" | "InvalidClientTokenId" => Attempt::Retry {
            reason: format!("{what} (reading the role's credentials again)"),
            retry_after: None,
        },
        "OutboundWebIdentityFederationDisabledException" => fail(
            "enable it once for the account: `aws iam enable-outbound-web-identity-federation`; the account's \
             issuer URL is then shown by `aws iam get-outbound-web-identity-federation-info`",
        ),
        "AccessDenied" | "AccessDeniedException" => fail(
            "allow sts:GetWebIdentityToken in the instance role's policy (and, if you restrict it, the \
             sts:IdentityTokenAudience condition to the Azure token-exchange audience)",
        ),
        "SignatureDoesNotMatch" => fail(
            "check the machine's clock (SigV4 signatures are valid for 5 minutes) and that no proxy rewrites \
             the request to STS",
        ),
        _ if is_transient_status(status) => Attempt::Retry {
            reason: what.clone(),
            retry_after,
        },
        _ => fail("this answer is not retried; check --aws-sts-endpoint and the instance role"),
    }
}

impl AwsInstance {
    fn imds_url(&self, path: &str) -> String {
        format!("{}{path}", self.imds_endpoint.trim_end_matches('/'))
    }

    fn timeout(deadline: &Deadline, cap: Duration) -> Duration {
        deadline.clock.io_timeout(deadline.bounded(cap))
    }

    /// An IMDSv2 session token (secret-ish: it reads the role's credentials), or why not.
    fn session(&self, http: &Http, deadline: &Deadline) -> Result<String, Attempt<Assertion>> {
        let ttl = IMDS_SESSION_TTL_SECS.to_string();
        match http.metadata_request(
            "PUT",
            &self.imds_url(TOKEN_PATH),
            &[("X-aws-ec2-metadata-token-ttl-seconds", &ttl)],
            Self::timeout(deadline, AWS_IMDS_TIMEOUT),
        ) {
            Ok(r) if r.status == 200 && !r.body.trim().is_empty() => Ok(r.body.trim().to_string()),
            Ok(r) if is_transient_status(r.status) => Err(Attempt::Retry {
                reason: format!("the AWS IMDS session request answered HTTP {}", r.status),
                retry_after: None,
            }),
            Ok(r) => Err(Attempt::Fail(Error::NoToken {
                detail: format!("the AWS IMDS at {} refused a session token (HTTP {})", self.imds_endpoint, r.status),
                advice: "check that IMDS is enabled on the instance (HttpEndpoint enabled) and --aws-imds-endpoint"
                    .into(),
            })),
            Err(f) => Err(transport_retry("cannot reach the AWS IMDS", &f)),
        }
    }

    fn imds_get(
        &self,
        http: &Http,
        session: &str,
        path: &str,
        deadline: &Deadline,
    ) -> Result<String, Attempt<Assertion>> {
        match http.metadata_request(
            "GET",
            &self.imds_url(path),
            &[("X-aws-ec2-metadata-token", session)],
            Self::timeout(deadline, AWS_IMDS_TIMEOUT),
        ) {
            Ok(r) if r.status == 200 => Ok(r.body),
            Ok(r) if r.status == 404 && path.starts_with(CREDENTIALS_PATH) => {
                Err(Attempt::Fail(Error::NoToken {
                    detail: format!("the instance has no IAM role (AWS IMDS {path}: HTTP 404)"),
                    advice:
                        "attach an instance profile whose role may call sts:GetWebIdentityToken"
                            .into(),
                }))
            }
            Ok(r) if is_transient_status(r.status) || r.status == 401 => Err(Attempt::Retry {
                reason: format!("AWS IMDS {path} answered HTTP {}", r.status),
                retry_after: None,
            }),
            Ok(r) => Err(Attempt::Fail(Error::NoToken {
                detail: format!("AWS IMDS {path} answered HTTP {}", r.status),
                advice: "this answer is not retried; check --aws-imds-endpoint".into(),
            })),
            Err(f) => Err(transport_retry("cannot reach the AWS IMDS", &f)),
        }
    }

    fn try_assertion(
        &self,
        http: &Http,
        audience: &str,
        deadline: &Deadline,
    ) -> Result<Assertion, Attempt<Assertion>> {
        let session = self.session(http, deadline)?;
        let role = self.imds_get(http, &session, CREDENTIALS_PATH, deadline)?;
        let role = role.lines().next().unwrap_or("").trim().to_string();
        if role.is_empty() || role.contains(['/', '?', '#']) {
            return Err(Attempt::Fail(Error::NoToken {
                detail: format!("the AWS IMDS names no usable role ({role:?})"),
                advice: "attach an instance profile to the instance".into(),
            }));
        }
        let creds_text = self.imds_get(
            http,
            &session,
            &format!("{CREDENTIALS_PATH}{role}"),
            deadline,
        )?;
        let creds: RoleCredentials = match serde_json::from_str(&creds_text) {
            Ok(c) => c,
            Err(_) => {
                return Err(Attempt::Retry {
                    reason: format!("the AWS IMDS credentials of role {role} are not readable"),
                    retry_after: None,
                })
            }
        };
        let mut creds_text = creds_text;
        // SAFETY: zero bytes keep the String valid UTF-8 (it held the secret key and session token).
        unsafe { creds_text.as_bytes_mut().fill(0) };
        if creds.code.as_deref().is_some_and(|c| c != "Success") {
            return Err(Attempt::Retry {
                reason: format!(
                    "the AWS IMDS credentials of role {role} are not ready ({:?})",
                    creds.code
                ),
                retry_after: None,
            });
        }
        let doc_text = self.imds_get(http, &session, IDENTITY_DOCUMENT_PATH, deadline)?;
        let region = serde_json::from_str::<IdentityDocument>(&doc_text)
            .map(|d| d.region)
            .unwrap_or_default();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Attempt::Fail(Error::NoToken {
                detail: format!(
                    "the AWS instance identity document has no usable region ({region:?})"
                ),
                advice: "check --aws-imds-endpoint".into(),
            }));
        }
        let endpoint = self
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| sts_endpoint_for(&region));
        let Some((_, host, port)) = crate::azure::proxy::split_url(&endpoint) else {
            return Err(Attempt::Fail(Error::Internal(format!(
                "unusable STS endpoint {endpoint}"
            ))));
        };
        let host_header = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        let body = sts_body(audience);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = vec![
            ("Host".to_string(), host_header),
            ("Content-Type".to_string(), content_type.to_string()),
        ];
        let credentials = Credentials::new(
            &creds.access_key_id,
            &creds.secret_access_key,
            Some(&creds.token),
        );
        let signed = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: body.as_bytes(),
            },
            &credentials,
            &sigv4::Params {
                region: &region,
                service: "sts",
                // Wall-clock time, not the run's (tests speed that one up): STS allows 5 min of skew.
                unix_time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
                normalize_path: true,
                content_sha256_header: false,
                sign_session_token: true,
            },
        );
        drop(credentials);
        let mut send: Vec<(&str, &str)> =
            vec![("Content-Type", content_type), ("Accept", "text/xml")];
        for (k, v) in &signed.headers {
            send.push((k.as_str(), v.as_str()));
        }
        log::info!(
            "asking STS at {endpoint} for a web identity token (role {role}, region {region})"
        );
        let reply = http.request(
            "POST",
            &format!("{}/", endpoint.trim_end_matches('/')),
            &send,
            Some(&body),
            Self::timeout(deadline, STS_TIMEOUT),
        );
        match reply {
            Ok(r) => match classify_sts_reply(r.status, &r.body, r.retry_after) {
                Attempt::Done(a) => Ok(a),
                other => Err(other),
            },
            Err(f) => Err(transport_retry(
                &format!("cannot reach STS at {endpoint}"),
                &f,
            )),
        }
    }
}

impl AssertionSource for AwsInstance {
    fn describe(&self) -> String {
        format!(
            "AWS STS GetWebIdentityToken with the instance role from the AWS IMDS at {} (direct)",
            self.imds_endpoint
        )
    }

    fn assertion(&self, http: &Http, audience: &str, deadline: &Deadline) -> Attempt<Assertion> {
        match self.try_assertion(http, audience, deadline) {
            Ok(a) => Attempt::Done(a),
            Err(attempt) => attempt,
        }
    }

    fn instance_id(&self, http: &Http, deadline: &Deadline) -> Option<String> {
        let session = self.session(http, deadline).ok()?;
        let id = self
            .imds_get(http, &session, INSTANCE_ID_PATH, deadline)
            .ok()
            .or_else(|| {
                let doc = self
                    .imds_get(http, &session, IDENTITY_DOCUMENT_PATH, deadline)
                    .ok()?;
                serde_json::from_str::<IdentityDocument>(&doc)
                    .ok()?
                    .instance_id
            })?;
        let id = id.trim().to_string();
        (id.starts_with("i-") && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_body_and_xml() {
        assert_eq!(
            sts_endpoint_for("eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint_for("cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            sts_body("api://AzureADTokenExchange"),
            "Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.1=api%3A%2F%2FAzureADTokenExchange&SigningAlgorithm=RS256&DurationSeconds=300"
        );
        let ok = "<GetWebIdentityTokenResponse><GetWebIdentityTokenResult>\n<WebIdentityToken>a.b.c</WebIdentityToken><Expiration>x</Expiration></GetWebIdentityTokenResult></GetWebIdentityTokenResponse>";
        assert_eq!(xml_text(ok, "WebIdentityToken"), Some("a.b.c"));
        assert!(matches!(
            classify_sts_reply(200, ok, None),
            Attempt::Done(_)
        ));
    }

    #[test]
    fn classifies_sts_errors() {
        let err = |code: &str| {
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>m &amp; n</Message></Error></ErrorResponse>")
        };
        let kind = |status: u16, code: &str| match classify_sts_reply(status, &err(code), None) {
            Attempt::Done(_) => "done",
            Attempt::Retry { .. } | Attempt::Poll { .. } => "retry",
            Attempt::Fail(e) => {
                assert_eq!(e.exit_code(), 3);
                assert!(e.to_string().contains("m & n"), "{e}");
                "fail"
            }
        };
        assert_eq!(kind(400, "Throttling"), "retry");
        assert_eq!(kind(503, "ServiceUnavailable"), "retry");
        assert_eq!(kind(400, "ExpiredToken"), "retry");
        assert_eq!(
            kind(403, "OutboundWebIdentityFederationDisabledException"),
            "fail"
        );
        assert_eq!(kind(403, "AccessDenied"), "fail");
        assert_eq!(kind(403, "SignatureDoesNotMatch"), "fail");
        assert_eq!(kind(400, "ValidationError"), "fail");
        assert_eq!(kind(500, "Whatever"), "retry");
    }
}
