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

/// Wanted vs current agent settings for `status --json`. (in progress)
pub fn status_json(
    agent: Option<&Agent>,
    settings: &Settings,
    deadline: &Deadline,
) -> serde_json::Value {
    let _ = (agent, deadline);
    match &settings.agent {
        Some(a) => serde_json::json!({"wanted": a.value}),
        None => serde_json::Value::Null,
    }
}

/// The agent-settings lines of `status`. (in progress)
pub fn status_text(v: &serde_json::Value, out: &mut String) {
    if !v.is_null() {
        out.push_str(&format!("agent settings wanted: {}\n", v["wanted"]));
    }
}
