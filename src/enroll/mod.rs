//! `connect`: the enrollment sequence (`sequence`) and its steps: `decision` (already enrolled,
//! clone, or new), `target` (where to enroll), `azure_checks` (roles, providers, name before the
//! agent), `attempt` (an agent answer → the next step, pure). How the machine becomes an Arc
//! resource is an `EnrollPath`, one file each (afterburn's `providers/` shape): `token_path`
//! today; pre-created machines and Private Relay (issue 14) are added beside it, with one variant
//! in `config::EnrollPathKind` and one arm in `path`.

pub mod attempt;
pub mod azure_checks;
pub mod decision;
pub mod sequence;
pub mod target;
pub mod token_path;

pub use decision::{decide, differences, Decision};
pub use sequence::{connect, token_and_claims, Enrolled};
pub use target::{derive, resolve_target, Derived};

use crate::agent::{Agent, Outcome, Target};
use crate::azure::http::Http;
use crate::config::{EnrollPathKind, Settings};
use crate::error::Error;
use crate::identity::token::AccessToken;
use crate::retry::Deadline;

/// One enrollment attempt with a fresh token (attempt `n`): what the agent answered. The token
/// is consumed: it is dropped, and zeroed, as soon as the attempt no longer needs it.
pub trait EnrollPath {
    fn attempt(
        &self,
        http: &Http,
        agent: &Agent,
        target: &Target,
        token: AccessToken,
        n: u32,
        deadline: &Deadline,
    ) -> Result<Outcome, Error>;
}

/// The enrollment path the settings select.
pub fn path(settings: &Settings) -> Box<dyn EnrollPath> {
    match settings.enroll_path.value {
        EnrollPathKind::AgentToken => Box::new(token_path::AgentToken::new(settings)),
    }
}
