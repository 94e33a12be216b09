//! (in progress)

use crate::agent::Agent;
use crate::config::Settings;
use crate::error::Error;
use crate::retry::Deadline;

/// Apply the wanted agent settings before connect. (in progress)
pub fn apply(agent: &Agent, settings: &Settings, deadline: &Deadline) -> Result<(), Error> {
    let _ = (agent, deadline);
    if settings.agent.is_some() {
        log::warn!("the config file's agent section is not applied yet");
    }
    Ok(())
}
