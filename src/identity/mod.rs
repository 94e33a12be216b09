//! Where the access token comes from, one file per source behind `TokenSource` (afterburn's
//! `providers/` shape): `imds` today; federated sources (issue 15) are added beside it, with one
//! variant in `config::TokenSourceKind` and one arm in `source`. `token` is what every source
//! returns: the secret and its checked claims.

pub mod imds;
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
}

/// The token source the settings select.
pub fn source(settings: &Settings) -> Box<dyn TokenSource + '_> {
    match settings.token_source.value {
        TokenSourceKind::Imds => Box::new(imds::Imds { settings }),
    }
}
