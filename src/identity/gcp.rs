//! `--token-source gcp`: the GCP metadata server's identity token for the instance's service
//! account (FACTS §11): `GET {endpoint}/computeMetadata/v1/instance/service-accounts/default/
//! identity?audience=<exchange audience>&format=full` with `Metadata-Flavor: Google`, direct (never
//! through a proxy: the server refuses forwarded requests), retried like IMDS (429, 5xx,
//! time-outs). iss `https://accounts.google.com`, sub the service account's numeric unique id,
//! one hour of life. `{instance_id}` is `/computeMetadata/v1/instance/id`.

use std::time::Duration;

use super::federated::{is_transient_status, transport_retry, Assertion, AssertionSource};
use crate::azure::http::Http;
use crate::error::Error;
use crate::identity::imds::encode;
use crate::retry::{Attempt, Deadline};

pub const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
pub const INSTANCE_ID_PATH: &str = "/computeMetadata/v1/instance/id";
/// The metadata server is on the host; as IMDS, a slow answer gets a fresh try.
pub const GCP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");

pub struct GcpMetadata {
    pub endpoint: String,
}

pub fn identity_url(endpoint: &str, audience: &str) -> String {
    format!(
        "{}{IDENTITY_PATH}?audience={}&format=full",
        endpoint.trim_end_matches('/'),
        encode(audience)
    )
}

/// What one identity answer means.
pub fn classify_identity_reply(status: u16, body: &str, endpoint: &str) -> Attempt<Assertion> {
    match status {
        200 => match Assertion::new(body) {
            Some(a) => Attempt::Done(a),
            None => Attempt::Retry {
                reason: "HTTP 200 but an empty identity token".into(),
                retry_after: None,
            },
        },
        s if is_transient_status(s) => Attempt::Retry {
            reason: format!("the GCP metadata server answered HTTP {s}"),
            retry_after: None,
        },
        404 => Attempt::Fail(Error::NoToken {
            detail: format!("the GCP metadata server at {endpoint} has no identity token (HTTP 404)"),
            advice: "attach a service account to the instance (gcloud compute instances set-service-account), \
                     or choose another --token-source"
                .into(),
        }),
        403 => Attempt::Fail(Error::NoToken {
            detail: format!(
                "the GCP metadata server at {endpoint} refused the request (HTTP 403: {})",
                body.lines().find(|l| l.contains("Metadata-Flavor") || l.contains("Forwarded")).unwrap_or("forbidden").trim()
            ),
            advice: "check that --gcp-metadata-endpoint is the instance's metadata server and that nothing \
                     rewrites requests to it"
                .into(),
        }),
        s => Attempt::Fail(Error::NoToken {
            detail: format!("the GCP metadata server at {endpoint} answered HTTP {s}"),
            advice: "this answer is not retried; check --gcp-metadata-endpoint".into(),
        }),
    }
}

impl AssertionSource for GcpMetadata {
    fn describe(&self) -> String {
        format!("the GCP metadata server at {} (direct)", self.endpoint)
    }

    fn assertion(&self, http: &Http, audience: &str, deadline: &Deadline) -> Attempt<Assertion> {
        let timeout = deadline
            .clock
            .io_timeout(deadline.bounded(GCP_REQUEST_TIMEOUT));
        match http.metadata_request(
            "GET",
            &identity_url(&self.endpoint, audience),
            &[FLAVOR],
            timeout,
        ) {
            Ok(r) => classify_identity_reply(r.status, &r.body, &self.endpoint),
            Err(f) => transport_retry("cannot reach the GCP metadata server", &f),
        }
    }

    fn instance_id(&self, http: &Http, deadline: &Deadline) -> Option<String> {
        let url = format!("{}{INSTANCE_ID_PATH}", self.endpoint.trim_end_matches('/'));
        let timeout = deadline
            .clock
            .io_timeout(deadline.bounded(GCP_REQUEST_TIMEOUT));
        match http.metadata_request("GET", &url, &[FLAVOR], timeout) {
            Ok(r)
                if r.status == 200
                    && r.body.trim().bytes().all(|b| b.is_ascii_digit())
                    && !r.body.trim().is_empty() =>
            {
                Some(r.body.trim().to_string())
            }
            Ok(r) => {
                log::warn!(
                    "the GCP metadata server gave no instance id (HTTP {})",
                    r.status
                );
                None
            }
            Err(f) => {
                log::warn!("the GCP metadata server gave no instance id ({f})");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_answers() {
        assert_eq!(
            identity_url("http://metadata.google.internal/", "api://AzureADTokenExchange"),
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=api%3A%2F%2FAzureADTokenExchange&format=full"
        );
        let kind = |a: Attempt<Assertion>| match a {
            Attempt::Done(_) => "done",
            Attempt::Retry { .. } | Attempt::Poll { .. } => "retry",
            Attempt::Fail(e) => {
                assert_eq!(e.exit_code(), 3);
                "fail"
            }
        };
        assert_eq!(kind(classify_identity_reply(200, "a.b.c", "e")), "done");
        assert_eq!(kind(classify_identity_reply(200, "", "e")), "retry");
        assert_eq!(kind(classify_identity_reply(503, "", "e")), "retry");
        assert_eq!(kind(classify_identity_reply(429, "", "e")), "retry");
        assert_eq!(kind(classify_identity_reply(404, "", "e")), "fail");
        assert_eq!(
            kind(classify_identity_reply(
                403,
                "Missing Metadata-Flavor:Google header.",
                "e"
            )),
            "fail"
        );
        assert_eq!(kind(classify_identity_reply(400, "", "e")), "fail");
    }
}
