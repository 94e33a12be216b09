//! Where the access token comes from, one file per source behind `TokenSource` (afterburn's
//! `providers/` shape): `imds` today; federated sources (issue 15) are added beside it, with one
//! variant in `config::TokenSourceKind` and one arm in `source`. `token` is what every source
//! returns: the secret and its checked claims.

pub mod assertion;
pub mod aws;
pub mod federated;
pub mod file;
pub mod gcp;
pub mod github;
pub mod imds;
pub mod sigv4;
pub mod token;

use crate::azure::http::Http;
use crate::config::{Settings, TokenSourceKind};
use crate::error::Error;
use crate::retry::Deadline;
use token::{AccessToken, Claims};

/// Gets a fresh token for the settings' cloud (its ARM audience) before the deadline, checked
/// (lifetime, audience, tenant) so that it can be handed to the agent.
pub trait TokenSource {
    fn fresh_token(&self, http: &Http, deadline: &Deadline)
        -> Result<(AccessToken, Claims), Error>;

    /// The cloud's instance id for `{instance_id}`, where the source knows one (AWS, GCP).
    fn instance_id(&self, _http: &Http, _deadline: &Deadline) -> Option<String> {
        None
    }
}

/// The token source the settings select.
pub fn source(settings: &Settings) -> Box<dyn TokenSource + '_> {
    match settings.token_source.value {
        TokenSourceKind::Imds => Box::new(imds::Imds { settings }),
        kind => Box::new(federated::Federated {
            settings,
            source: assertion_source(settings, kind),
        }),
    }
}

/// The federated source the settings select (`check` and `token` probe it); `None` for IMDS.
pub fn federated(settings: &Settings) -> Option<federated::Federated<'_>> {
    let kind = settings.token_source.value;
    kind.is_federated().then(|| federated::Federated {
        settings,
        source: assertion_source(settings, kind),
    })
}

/// Where a federated source's assertion comes from.
fn assertion_source(
    settings: &Settings,
    kind: TokenSourceKind,
) -> Box<dyn federated::AssertionSource + '_> {
    let fed = &settings.federation;
    match kind {
        TokenSourceKind::Gcp => Box::new(gcp::GcpMetadata {
            endpoint: fed.gcp_metadata_endpoint.value.clone(),
        }),
        TokenSourceKind::Aws => Box::new(aws::AwsInstance {
            imds_endpoint: fed.aws_imds_endpoint.value.clone(),
            sts_endpoint: fed.aws_sts_endpoint.as_ref().map(|s| s.value.clone()),
        }),
        TokenSourceKind::File => Box::new(file::TokenFile {
            path: fed
                .token_file
                .as_ref()
                .map(|f| f.value.clone())
                .unwrap_or_default(),
        }),
        TokenSourceKind::Github => match &fed.github {
            Some(request) => Box::new(github::GithubActions { request }),
            None => Box::new(federated::Unavailable(
                "GitHub Actions' ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN",
            )),
        },
        TokenSourceKind::Imds => Box::new(federated::Unavailable("IMDS (not an assertion source)")),
    }
}
