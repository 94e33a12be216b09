//! Before enrolling: is this machine already enrolled as itself, a clone of an enrolled machine,
//! or new? Pure apart from logging (and saving an adopted enrollment), table-tested in tests/.

use crate::agent::Show;
use crate::config::{render_resource_name, ClonePolicy, MachineFacts, Settings, Sourced};
use crate::error::Error;
use crate::state::{self, CloneVerdict, Fingerprint, Loaded, State};

/// What to do before enrolling.
#[derive(Debug)]
pub enum Decision {
    AlreadyDone(Box<State>),
    CloneReconnect,
    Enroll,
}

/// The idempotency and clone decision (pure apart from logging).
pub fn decide(
    settings: &Settings,
    loaded: &Loaded,
    now: &Fingerprint,
    show: Option<&Show>,
    facts: &MachineFacts,
) -> Result<Decision, Error> {
    let agent_vm_uuid = show.map(|s| s.vm_uuid.as_str()).filter(|s| !s.is_empty());
    let state = match loaded {
        Loaded::Present(s) => Some(s),
        Loaded::Corrupt { path, reason } => {
            log::warn!(
                "state file {} is unusable ({reason}); treating it as absent",
                path.display()
            );
            None
        }
        Loaded::Absent => None,
    };
    let agent_has_resource = show.map(|s| s.has_resource()).unwrap_or(false);
    let verdict = match state {
        Some(st) => state::clone_verdict(st, now, agent_vm_uuid),
        None if agent_has_resource => {
            // No state of ours, but the agent holds a resource: compare the agent's VM UUID with ours.
            match (agent_vm_uuid, now.product_uuid.as_deref()) {
                (Some(a), Some(p)) if !state::same_uuid(a, p) => CloneVerdict::Clone {
                    evidence: vec![format!(
                        "the agent is connected as {} with VM UUID {a}, but this machine's product_uuid is {p}",
                        show.map(|s| s.resource_id.as_str()).unwrap_or("?")
                    )],
                },
                _ => CloneVerdict::Same,
            }
        }
        None => return Ok(Decision::Enroll),
    };
    match verdict {
        CloneVerdict::Clone { evidence } => {
            let ev = evidence.join("; ");
            match settings.clone_policy.value {
                ClonePolicy::Reconnect => {
                    log::warn!("this machine is a clone of an enrolled machine: {ev}; --clone-policy reconnect: it will enroll as itself");
                    if agent_has_resource {
                        Ok(Decision::CloneReconnect)
                    } else {
                        Ok(Decision::Enroll)
                    }
                }
                ClonePolicy::Fail => Err(Error::Agent {
                    detail: format!("this machine is a clone of an enrolled machine: {ev}"),
                    advice: "refusing under --clone-policy fail; run `arc-enroll generalize` on the image before \
                             capture, or use --clone-policy reconnect to enroll each clone as itself"
                        .into(),
                }),
                ClonePolicy::Ignore => {
                    log::warn!("this machine is a clone of an enrolled machine: {ev}; ignoring it (--clone-policy ignore)");
                    {
                        // Without our state, report what the agent holds rather than an empty record.
                        let held = state
                            .cloned()
                            .or_else(|| show.map(|s| adopt(settings, s, now)))
                            .unwrap_or_default();
                        Ok(Decision::AlreadyDone(Box::new(held)))
                    }
                }
            }
        }
        CloneVerdict::Same => {
            let Some(show) = show else {
                log::info!("no agent status available; enrolling");
                return Ok(Decision::Enroll);
            };
            if !show.has_resource() {
                if state.is_some() {
                    log::warn!(
                        "the state file says this machine was enrolled, but the agent is {}; enrolling again",
                        if show.status.is_empty() { "not connected" } else { &show.status }
                    );
                }
                return Ok(Decision::Enroll);
            }
            let enrolled = match state {
                Some(st) => st.clone(),
                None => {
                    log::info!(
                        "the agent is already connected as {} (not recorded by arc-enroll); adopting it",
                        show.resource_id
                    );
                    adopt(settings, show, now)
                }
            };
            for d in differences(settings, &enrolled, facts) {
                if settings.reconnect_on_change.value {
                    log::warn!("wanted settings differ from the enrollment: {d}");
                } else {
                    log::warn!(
                        "wanted settings differ from the enrollment: {d}; not changing it (run `arc-enroll disconnect` \
                         then `arc-enroll connect` to move it, or use --reconnect-on-change)"
                    );
                }
            }
            if settings.reconnect_on_change.value
                && !differences(settings, &enrolled, facts).is_empty()
            {
                log::info!("--reconnect-on-change: disconnecting locally and enrolling with the new settings");
                return Ok(Decision::CloneReconnect);
            }
            if !show.connected() {
                log::warn!(
                    "the agent holds {} but reports status {:?} (last heartbeat {}); not reconnecting automatically",
                    show.resource_id,
                    show.status,
                    if show.last_heartbeat.is_empty() { "unknown" } else { &show.last_heartbeat }
                );
            }
            log::info!(
                "already enrolled as {} (state matches this machine and the agent reports {}); nothing to do, Azure not contacted",
                enrolled.resource_id,
                if show.status.is_empty() { "a resource" } else { &show.status }
            );
            if state.is_none() {
                state::save(&settings.state_dir.value, &enrolled)?;
            }
            Ok(Decision::AlreadyDone(Box::new(enrolled)))
        }
    }
}

fn adopt(settings: &Settings, show: &Show, now: &Fingerprint) -> State {
    State {
        resource_id: show.resource_id.clone(),
        resource_name: show.resource_name.clone(),
        subscription_id: show.subscription_id.clone(),
        resource_group: show.resource_group.clone(),
        tenant_id: show.tenant_id.clone(),
        location: show.location.clone(),
        cloud: if show.cloud.is_empty() {
            settings.cloud.value.name().into()
        } else {
            show.cloud.clone()
        },
        tags: Default::default(),
        enrolled_at: String::new(),
        agent_version: (!show.agent_version.is_empty()).then(|| show.agent_version.clone()),
        identity: "unknown (adopted)".into(),
        fingerprint: Fingerprint {
            vm_uuid: (!show.vm_uuid.is_empty()).then(|| show.vm_uuid.clone()),
            ..now.clone()
        },
        vm_id: None,
        enrolled_via: None,
    }
}

/// Explicitly wanted settings that differ from what was enrolled.
pub fn differences(settings: &Settings, st: &State, facts: &MachineFacts) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, want: &Option<Sourced<String>>, have: &str| {
        if let Some(w) = want {
            if !have.is_empty() && !w.value.eq_ignore_ascii_case(have) {
                d.push(format!(
                    "{name} is {have:?} but {:?} is wanted (from {})",
                    w.value, w.source
                ));
            }
        }
    };
    cmp(
        "subscription_id",
        &settings.subscription_id,
        &st.subscription_id,
    );
    cmp(
        "resource_group",
        &settings.resource_group,
        &st.resource_group,
    );
    cmp("location", &settings.location, &st.location);
    if settings.resource_name.source != "default" {
        if let Ok(name) = render_resource_name(&settings.resource_name, facts) {
            if !name.eq_ignore_ascii_case(&st.resource_name) && !st.resource_name.is_empty() {
                d.push(format!(
                    "resource_name is {:?} but {name:?} is wanted (from {})",
                    st.resource_name, settings.resource_name.source
                ));
            }
        }
    }
    if settings.tags.source != "default" && settings.tags.value != st.tags {
        d.push(format!(
            "tags are {:?} but {:?} are wanted (from {})",
            st.tags, settings.tags.value, settings.tags.source
        ));
    }
    d
}
