//! The enrollment path "the agent connects with the token": `azcmagent connect` gets the fresh
//! ARM token (in a 0600 `--config` file, or on argv with `--token-on-command-line`) and creates
//! the machine resource itself.

use super::{EnrollPath, Step};
use crate::agent::{Agent, Target, TokenMode};
use crate::azure::http::Http;
use crate::config::Settings;
use crate::error::Error;
use crate::identity::token::AccessToken;
use crate::retry::Deadline;

pub struct AgentToken {
    pub mode: TokenMode,
}

impl AgentToken {
    pub fn new(settings: &Settings) -> AgentToken {
        AgentToken {
            mode: TokenMode::from_settings(settings),
        }
    }
}

impl EnrollPath for AgentToken {
    fn attempt(
        &self,
        _http: &Http,
        agent: &Agent,
        target: &Target,
        token: AccessToken,
        n: u32,
        deadline: &Deadline,
    ) -> Result<Step, Error> {
        log::info!("agent connect attempt {n}: running azcmagent connect with a fresh token");
        agent
            .connect(target, &token, self.mode, deadline)
            .map(Step::Agent)
        // The token is dropped (and zeroed) here, before the answer is classified.
    }
}
