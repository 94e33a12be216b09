//! Applying the agent's wanted local settings (`agent::settings`): read each, set only what
//! differs, one log line per setting; before the first connect, verified after it, and repaired
//! on a re-run of an enrolled machine.

use super::settings::{
    is_unknown_property, parse_current, plan, same, validate, Setting, Step, Val, Wanted,
};
use super::Agent;
use crate::config::Settings;
use crate::error::Error;
use crate::retry::Deadline;

/// The installed agent's version, asked once, for messages about properties it lacks.
struct VersionOnce<'a> {
    agent: &'a Agent,
    deadline: &'a Deadline,
    version: Option<String>,
}

impl VersionOnce<'_> {
    fn get(&mut self) -> String {
        if self.version.is_none() {
            self.version = Some(
                self.agent
                    .version(self.deadline)
                    .unwrap_or_else(|| "of unknown version".into()),
            );
        }
        self.version.clone().unwrap_or_default()
    }
}

/// Read every wanted setting; the ones the agent lacks are skipped (optional) or an error.
/// Returns (setting, its current value) for the rest.
fn read_all<'w>(
    agent: &Agent,
    wanted: &'w Wanted,
    deadline: &Deadline,
    version: &mut VersionOnce,
) -> Result<Vec<(&'w Setting, Val)>, Error> {
    let mut known = Vec::new();
    let mut lacking = Vec::new();
    for s in &wanted.settings {
        match agent.config_get(s.key, deadline) {
            Ok(v) => known.push((s, parse_current(s.kind, &v))),
            Err(msg) if is_unknown_property(&msg) => {
                if s.optional {
                    log::warn!(
                        "{}: the installed agent {} does not know this setting ({msg}); skipped, as agent.optional allows",
                        s.key,
                        version.get()
                    );
                } else {
                    lacking.push(format!("{} ({msg})", s.key));
                }
            }
            Err(msg) => {
                return Err(Error::Agent {
                    detail: format!("`azcmagent config get {}` failed: {msg}", s.key),
                    advice: "check the agent installation and /var/opt/azcmagent/log/azcmagent.log"
                        .into(),
                })
            }
        }
    }
    if !lacking.is_empty() {
        return Err(lacks_error(&lacking, &version.get()));
    }
    Ok(known)
}

fn lacks_error(lacking: &[String], version: &str) -> Error {
    Error::Agent {
        detail: format!(
            "the installed agent {version} does not know the setting{} {}",
            if lacking.len() == 1 { "" } else { "s" },
            lacking.join("; ")
        ),
        advice:
            "upgrade the Azure Connected Machine agent, or list the setting in the config file's \
                 agent.optional to skip it on agents that lack it; nothing was changed"
                .into(),
    }
}

/// Apply the wanted agent settings before connect: read each, set only what differs, one log
/// line per setting. Returns how many were changed.
pub fn reconcile(agent: &Agent, settings: &Settings, deadline: &Deadline) -> Result<usize, Error> {
    let wanted = validate(settings)?;
    if wanted.is_empty() {
        return Ok(0);
    }
    log::info!(
        "agent settings: applying {} setting{} from {}",
        wanted.settings.len(),
        if wanted.settings.len() == 1 { "" } else { "s" },
        wanted.source
    );
    let mut version = VersionOnce {
        agent,
        deadline,
        version: None,
    };
    let current = read_all(agent, &wanted, deadline, &mut version)?;
    let mut changed = 0;
    for (s, have) in current {
        let result = match plan(s, &have) {
            Step::AlreadyAsWanted => {
                log::info!("{}: already as wanted ({})", s.key, have.display());
                continue;
            }
            Step::Set { arg } => agent.config_set(s.key, &arg, deadline),
            Step::Clear => agent.config_clear(s.key, deadline),
        };
        match result {
            Ok(()) => {
                changed += 1;
                log::info!(
                    "{}: set to {} (was {})",
                    s.key,
                    s.value.display(),
                    have.display()
                );
            }
            Err(msg) if is_unknown_property(&msg) && s.optional => log::warn!(
                "{}: the installed agent {} refused this setting ({msg}); skipped, as agent.optional allows",
                s.key,
                version.get()
            ),
            Err(msg) if is_unknown_property(&msg) => {
                return Err(lacks_error(&[format!("{} ({msg})", s.key)], &version.get()))
            }
            Err(msg) => {
                return Err(Error::Agent {
                    detail: format!(
                        "`azcmagent config set {} {}` failed: {msg}",
                        s.key,
                        s.value.set_arg().unwrap_or_default()
                    ),
                    advice: "check the value against `azcmagent config info` and the agent's log"
                        .into(),
                })
            }
        }
    }
    Ok(changed)
}

/// Apply the wanted agent settings before connect. See [`reconcile`].
pub fn apply(agent: &Agent, settings: &Settings, deadline: &Deadline) -> Result<(), Error> {
    reconcile(agent, settings, deadline).map(|_| ())
}

/// After connect (or a repair): read every wanted setting back; any mismatch is an agent error
/// that names each setting, the agent's value and the wanted one.
pub fn verify(agent: &Agent, settings: &Settings, deadline: &Deadline) -> Result<(), Error> {
    let wanted = validate(settings)?;
    if wanted.is_empty() {
        return Ok(());
    }
    let mut version = VersionOnce {
        agent,
        deadline,
        version: None,
    };
    let current = read_all(agent, &wanted, deadline, &mut version)?;
    let mut wrong = Vec::new();
    for (s, have) in current {
        if same(&s.value, &have) {
            log::info!("{}: verified {}", s.key, have.display());
        } else {
            log::error!(
                "{}: is {} after applying, but {} is wanted",
                s.key,
                have.display(),
                s.value.display()
            );
            wrong.push(format!(
                "{} is {} but {} is wanted",
                s.key,
                have.display(),
                s.value.display()
            ));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Error::Agent {
        detail: format!(
            "the agent's settings do not hold (read back after connect or repair): {}",
            wrong.join("; ")
        ),
        advice: "something changed them (an Azure policy, a config mode preset, or another tool); \
                 run arc-enroll again to reapply them, or see `arc-enroll status`"
            .into(),
    })
}
