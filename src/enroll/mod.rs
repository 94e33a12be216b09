//! `connect`: the enrollment sequence (`sequence`) and its steps: `decision` (already enrolled,
//! clone, or new), `target` (where to enroll), `azure_checks` (roles, providers, name before the
//! agent), `attempt` (an agent answer → the next step, pure). How the machine becomes an Arc
//! resource is an `EnrollPath`, one file each (afterburn's `providers/` shape): `token_path`
//! today; pre-created machines and Private Relay (issue 14) are added beside it, with one variant
//! in `config::EnrollPathKind` and one arm in `path`.

pub mod attempt;
pub mod azure_checks;
pub mod decision;
pub mod keypair;
pub mod precreate;
pub mod relay;
pub mod sequence;
pub mod target;
pub mod token_path;

pub use decision::{decide, differences, Decision};
pub use sequence::{connect, token_and_claims, Enrolled};
pub use target::{derive, resolve_target, Derived};

use crate::agent::{Agent, AgentClass, Outcome, Target};
use crate::azure::http::Http;
use crate::config::{EnrollPathKind, Settings};
use crate::error::Error;
use crate::identity::token::AccessToken;
use crate::retry::Deadline;

/// What one attempt came to.
#[derive(Debug)]
pub enum Step {
    /// The agent ran: its answer is classified as usual (`agent::classify`).
    Agent(Outcome),
    /// Azure said "not yet" before the agent ran (roles propagating, providers registering,
    /// throttling): another attempt with a fresh token after the backoff. `class` is what it
    /// means if the deadline comes first.
    Retry { reason: String, class: AgentClass },
}

/// One enrollment attempt with a fresh token (attempt `n`). The token is consumed: it is
/// dropped, and zeroed, as soon as the attempt no longer needs it.
pub trait EnrollPath {
    fn attempt(
        &self,
        http: &Http,
        agent: &Agent,
        target: &Target,
        token: AccessToken,
        n: u32,
        deadline: &Deadline,
    ) -> Result<Step, Error>;

    /// What this path adds to the state about to be written.
    fn record(&self, _state: &mut crate::state::State) {}

    /// The error when the deadline ends the attempts while this path's own step was being
    /// retried; `None`: the agent's answer decides (`attempt::deadline_error`).
    fn deadline_error(&self, _last: &str) -> Option<Error> {
        None
    }
}

/// The enrollment path the settings select.
pub fn path(settings: &Settings) -> Box<dyn EnrollPath> {
    match settings.enroll_path.value {
        EnrollPathKind::AgentToken => Box::new(token_path::AgentToken::new(settings)),
        EnrollPathKind::Precreate | EnrollPathKind::PrivateRelay => {
            Box::new(precreate::Precreate::new(settings))
        }
    }
}
