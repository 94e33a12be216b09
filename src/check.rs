//! (in progress)

use crate::agent::Agent;
use crate::config::Settings;
use crate::error::Error;
use crate::http::Http;
use crate::retry::Deadline;

/// Install the agent (after the token was obtained). (in progress)
pub fn install_agent(
    settings: &Settings,
    http: &Http,
    deadline: &Deadline,
) -> Result<Agent, Error> {
    let _ = (http, deadline);
    Err(Error::Agent {
        detail: format!(
            "installing the agent from {} is not built yet",
            settings.agent_installer_url.value
        ),
        advice: "install azcmagent in the image".into(),
    })
}

/// `check`. (in progress)
pub fn run(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    let _ = (settings, deadline);
    Err(Error::Internal("check is not built yet".into()))
}
