//! `--token-source github`: a GitHub Actions job's OIDC token (FACTS §11): `GET
//! $ACTIONS_ID_TOKEN_REQUEST_URL&audience=<exchange audience>` with `Authorization: bearer
//! $ACTIONS_ID_TOKEN_REQUEST_TOKEN` => `{"value": JWT}`, iss
//! `https://token.actions.githubusercontent.com`, sub `repo:OWNER/REPO:...`, about 5 minutes of
//! life. An internet URL, so through the proxy rules like Entra. The job needs
//! `permissions: id-token: write`.

use std::time::Duration;

use serde::Deserialize;

use super::federated::{is_transient_status, transport_retry, Assertion, AssertionSource};
use crate::azure::http::Http;
use crate::config::GithubRequest;
use crate::error::Error;
use crate::identity::imds::encode;
use crate::retry::{Attempt, Deadline};

pub const GITHUB_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct GithubActions<'a> {
    pub request: &'a GithubRequest,
}

#[derive(Deserialize)]
struct IdTokenReply {
    value: Option<String>,
}

/// The request URL already has a query (`?api-version=2.0`); the audience is appended.
pub fn request_url(base: &str, audience: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}audience={}", encode(audience))
}

impl AssertionSource for GithubActions<'_> {
    fn describe(&self) -> String {
        "the GitHub Actions ID-token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL)".into()
    }

    fn assertion(&self, http: &Http, audience: &str, deadline: &Deadline) -> Attempt<Assertion> {
        let url = request_url(&self.request.url.value, audience);
        let auth = format!("bearer {}", self.request.token.expose());
        let timeout = deadline
            .clock
            .io_timeout(deadline.bounded(GITHUB_REQUEST_TIMEOUT));
        let reply = match http.request(
            "GET",
            &url,
            &[("Authorization", &auth), ("Accept", "application/json")],
            None,
            timeout,
        ) {
            Ok(r) => r,
            Err(f) => {
                return transport_retry("cannot reach the GitHub Actions ID-token endpoint", &f)
            }
        };
        match reply.status {
            200 => match serde_json::from_str::<IdTokenReply>(&reply.body).ok().and_then(|r| r.value).as_deref().and_then(Assertion::new) {
                Some(a) => Attempt::Done(a),
                None => Attempt::Retry {
                    reason: "HTTP 200 but no \"value\" token in the answer".into(),
                    retry_after: None,
                },
            },
            s if is_transient_status(s) => Attempt::Retry {
                reason: format!("the GitHub Actions ID-token endpoint answered HTTP {s}"),
                retry_after: reply.retry_after,
            },
            s => Attempt::Fail(Error::NoToken {
                detail: format!("the GitHub Actions ID-token endpoint refused the request (HTTP {s})"),
                advice: "give the job `permissions: id-token: write`, and run arc-enroll in the job's own \
                         environment (ACTIONS_ID_TOKEN_REQUEST_TOKEN is per job)"
                    .into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn audience_is_appended_to_the_query() {
        assert_eq!(
            super::request_url(
                "https://x/_apis/idtoken?api-version=2.0",
                "api://AzureADTokenExchange"
            ),
            "https://x/_apis/idtoken?api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange"
        );
        assert_eq!(
            super::request_url("https://x/t", "a"),
            "https://x/t?audience=a"
        );
    }
}
