//! `connect`: the enrollment sequence. It reads like the log it prints:
//! settings → lock → state and clone verdict → token → derived settings → agent → state.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::agent::{self, Agent, AgentClass, Outcome, Show, Target, TokenMode};
use crate::azure::http::Http;
use crate::azure::proxy::Route;
use crate::config::{parse_resource_id, render_resource_name, MachineFacts, Settings, Sourced};
use crate::error::Error;
use crate::identity::imds;
use crate::identity::token::{AccessToken, Claims};
use crate::retry::{human, retry, Attempt, Backoff, Deadline};
use crate::state::{self, CloneVerdict, Fingerprint, Loaded, State};

/// Between agent attempts: role assignments take minutes to propagate (FACTS §1.5, §8), so the
/// agent is retried more slowly than IMDS: 5 s doubling to 60 s, jittered.
pub const AGENT_BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const AGENT_BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A fresh token plus `azcmagent connect` needs at least this long; with less left before the
/// deadline, the run stops with the agent's last answer instead of starting an attempt that
/// could only fail for lack of time.
pub const AGENT_MIN_ATTEMPT: Duration = Duration::from_secs(20);

/// What `connect` did, for the result line.
pub struct Enrolled {
    pub state: State,
    pub action: &'static str,
}

/// The machine's identity facts under `--sysroot`.
pub fn machine_facts(settings: &Settings) -> (MachineFacts, Fingerprint) {
    let fp = state::read_fingerprint(&settings.sysroot.value);
    let facts = MachineFacts {
        hostname: crate::config::read_hostname(&settings.sysroot.value),
        product_uuid: fp.product_uuid.clone(),
        machine_id: fp.machine_id.clone(),
    };
    (facts, fp)
}

/// Run `connect`.
pub fn connect(settings: &Settings, deadline: &Deadline) -> Result<Enrolled, Error> {
    settings.log_sources();
    let http = Http::new(settings.proxy.clone());
    warn_imds_bypass(settings);
    let state_dir = &settings.state_dir.value;
    let _lock = state::lock(state_dir, deadline)?;
    log::info!("holding the run lock in {}", state_dir.display());

    let (facts, fingerprint) = machine_facts(settings);
    log::info!(
        "this machine: hostname {}, product_uuid {}, machine-id {}",
        facts.hostname.as_deref().unwrap_or("(none)"),
        fingerprint
            .product_uuid
            .as_deref()
            .unwrap_or("(unreadable)"),
        fingerprint.machine_id.as_deref().unwrap_or("(unreadable)")
    );

    let agent_path = agent::locate(settings.azcmagent.as_ref().map(|s| s.value.as_str()));
    let mut agent = match &agent_path {
        Some(p) if agent::is_executable(p) => Some(Agent::new(
            p.clone(),
            &settings.proxy,
            &settings.arm_endpoint.value,
        )),
        _ if settings.install_agent.value => {
            log::info!("azcmagent is not installed; it will be installed after the token is obtained (--install-agent)");
            None
        }
        _ => return Err(Error::Agent {
            detail: match &agent_path {
                Some(p) => format!("the agent {} is missing or not executable", p.display()),
                None => format!(
                    "azcmagent is not installed (not on PATH, not at {})",
                    agent::DEFAULT_AGENT_PATH
                ),
            },
            advice:
                "install the Azure Connected Machine agent in the image, pass --azcmagent PATH, \
                         or let arc-enroll install it with --install-agent"
                    .into(),
        }),
    };

    // 1. What are we, and what does the agent say?
    let loaded = state::load(state_dir);
    let show = match &agent {
        Some(a) => {
            match a.show(deadline) {
                Ok(s) => Some(s),
                Err(e @ Error::Interrupted { .. }) => return Err(e),
                Err(e) => {
                    log::warn!("cannot read the agent's status: {e}; continuing as if it were not connected");
                    None
                }
            }
        }
        None => None,
    };
    if let Some(s) = &show {
        log::info!("agent status: {}", s.summary());
    }
    match decide(settings, &loaded, &fingerprint, show.as_ref(), &facts)? {
        Decision::AlreadyDone(state) => {
            // Drift repair: the agent's local settings are reapplied without reconnecting.
            let mut action = "already enrolled as this machine; nothing to do";
            if let Some(a) = agent.as_ref().filter(|_| settings.agent.is_some()) {
                if crate::agent::settings::reconcile(a, settings, deadline)? > 0 {
                    action = "already enrolled as this machine; agent settings repaired";
                }
                crate::agent::settings::verify(a, settings, deadline)?;
            }
            return Ok(Enrolled {
                state: *state,
                action,
            });
        }
        Decision::CloneReconnect => {
            let a = agent.as_ref().expect("a clone verdict needs the agent");
            log::info!("clone: disconnecting the agent locally (--force-local-only); the parent's Azure resource is left alone");
            let out = a.disconnect(None, deadline)?;
            if out.code != Some(0) {
                return Err(Error::Agent {
                    detail: format!(
                        "`azcmagent disconnect --force-local-only` failed: {}: {}",
                        out.describe(),
                        out.tail_text()
                    ),
                    advice: "run it by hand, then arc-enroll again".into(),
                });
            }
            state::clear(state_dir)?;
            log::info!(
                "clone: local agent state and arc-enroll state cleared; enrolling as this machine"
            );
        }
        Decision::Enroll => {}
    }

    // 2. Enroll: a fresh token before every attempt, the agent classified after each.
    let mut backoff =
        Backoff::new(AGENT_BACKOFF_BASE, AGENT_BACKOFF_CAP).with_min_attempt(AGENT_MIN_ATTEMPT);
    let target: RefCell<Option<Target>> = RefCell::new(None);
    let mut prepared = false;
    let last_class = Cell::new(AgentClass::Retry);
    let token_mode = if settings.token_on_command_line.value {
        TokenMode::CommandLine
    } else {
        TokenMode::ConfigFile
    };
    let result = retry(
        "agent connect",
        deadline,
        &mut backoff,
        |n| {
            let mut step = || -> Result<Attempt<Outcome>, Error> {
                let (mut token, claims) = imds::fetch_token(&http, settings, deadline)?;
                if target.borrow().is_none() {
                    let t = resolve_target(settings, &claims, &http, deadline, &facts)?;
                    log::info!(
                        "enrolling as {} in subscription {}, resource group {}, location {}, tenant {}",
                        t.resource_name, t.subscription_id, t.resource_group, t.location, t.tenant_id
                    );
                    // Azure side first (issue 5): wait for roles/providers, refuse a taken name.
                    if let Some((fresh, _)) = crate::commands::check::before_connect(
                        settings, &http, deadline, &t, &facts, &token,
                    )? {
                        token = fresh;
                    }
                    *target.borrow_mut() = Some(t);
                }
                let t = target.borrow().clone().expect("set above");
                let t = &t;
                if agent.is_none() {
                    agent = Some(crate::commands::check::install_agent(
                        settings, &http, deadline,
                    )?);
                }
                let a = agent.as_ref().expect("set above");
                if !prepared {
                    reconcile_proxy_url(a, settings, deadline)?;
                    crate::agent::settings::apply(a, settings, deadline)?;
                    prepared = true;
                }
                log::info!(
                    "agent connect attempt {n}: running azcmagent connect with a fresh token"
                );
                let out = a.connect(t, &token, token_mode, deadline)?;
                drop(token);
                let class = agent::classify(out.code, &out.tail_text());
                last_class.set(class);
                // Retried classes get their line from the retry loop (reason, wait, deadline).
                if matches!(
                    class,
                    AgentClass::Success
                        | AgentClass::AlreadyConnected
                        | AgentClass::NameConflict
                        | AgentClass::Permanent
                        | AgentClass::RetryAfterCleanup
                ) {
                    log::info!(
                        "agent connect attempt {n}: {} → {}",
                        out.describe(),
                        describe_class(&class)
                    );
                }
                Ok(match class {
                    AgentClass::Success | AgentClass::AlreadyConnected => Attempt::Done(out),
                    AgentClass::NameConflict => Attempt::Fail(Error::NameConflict {
                        name: t.resource_name.clone(),
                        detail: format!(
                            "the agent answered {}: {}",
                            out.describe(),
                            last_line(&out)
                        ),
                    }),
                    AgentClass::Permanent => Attempt::Fail(Error::Agent {
                        detail: format!("azcmagent connect failed with {}: {}", out.describe(), out.tail_text()),
                        advice: "this error is not retried; see /var/opt/azcmagent/log/azcmagent.log and the \
                                 AZCM code in Microsoft's troubleshooting guide"
                            .into(),
                    }),
                    AgentClass::RetryAfterCleanup => {
                        log::warn!(
                            "the failed attempt may have created {}; if the next attempt fails too, delete it in Azure",
                            t.resource_id()
                        );
                        log::info!("cleaning the agent's half-configured local state before the next attempt");
                        let _ = a.disconnect(None, deadline)?;
                        Attempt::Retry { reason: format!("agent {}", out.describe()), retry_after: None }
                    }
                    AgentClass::Permission => Attempt::Retry {
                        reason: format!(
                            "agent {}: the identity is not (yet) allowed to create the machine; a new role \
                             assignment can take minutes to propagate",
                            out.describe()
                        ),
                        retry_after: None,
                    },
                    AgentClass::Providers => Attempt::Retry {
                        reason: format!("agent {}: resource providers not registered: {}", out.describe(), last_line(&out)),
                        retry_after: None,
                    },
                    AgentClass::RetryFreshToken => Attempt::Retry {
                        reason: format!("agent {}: the token was refused; a fresh one will be used", out.describe()),
                        retry_after: None,
                    },
                    AgentClass::Retry => Attempt::Retry {
                        reason: format!("agent {}: transient: {}", out.describe(), last_line(&out)),
                        retry_after: None,
                    },
                })
            };
            match step() {
                Ok(a) => a,
                Err(e) => Attempt::Fail(e),
            }
        },
        |last| {
            deadline_error(
                settings,
                deadline,
                &last_class.get(),
                target.borrow().as_ref(),
                last,
            )
        },
    );
    let out = result?;
    let target = target
        .into_inner()
        .expect("a successful attempt resolved the target");
    let agent = agent.expect("a successful attempt had an agent");
    if out.code == Some(67) {
        log::info!(
            "the agent says it is already connected; checking that it is connected as this machine"
        );
    }

    // 3. Record what we enrolled as, only now that it worked.
    let show = agent.show(deadline).ok();
    if let Some(s) = &show {
        if out.code == Some(67) && !s.resource_name.eq_ignore_ascii_case(&target.resource_name) {
            return Err(Error::Agent {
                detail: format!(
                    "the agent is already connected as {} ({}), not as {}",
                    s.resource_name, s.resource_id, target.resource_name
                ),
                advice: "run `arc-enroll disconnect` (or `azcmagent disconnect`) first if this machine should be re-enrolled".into(),
            });
        }
    }
    let state = new_state(
        settings,
        &target,
        show.as_ref(),
        &fingerprint,
        deadline,
        &agent,
    );
    state::save(state_dir, &state)?;
    log::info!(
        "state written to {}",
        state_dir.join(state::STATE_FILE).display()
    );
    // The enrollment stands (state is recorded); settings that did not hold are exit 5, and a
    // re-run repairs them without reconnecting.
    crate::agent::settings::verify(&agent, settings, deadline)?;
    Ok(Enrolled {
        state,
        action: if out.code == Some(67) {
            "already connected; state recorded"
        } else {
            "enrolled"
        },
    })
}

fn last_line(out: &Outcome) -> String {
    out.tail
        .last()
        .cloned()
        .unwrap_or_else(|| "no output".into())
}

fn describe_class(c: &AgentClass) -> &'static str {
    match c {
        AgentClass::Success => "connected",
        AgentClass::AlreadyConnected => "already connected",
        AgentClass::NameConflict => "name conflict (not retried)",
        AgentClass::Permanent => "permanent error (not retried)",
        AgentClass::RetryAfterCleanup => "failed mid-way; will clean up locally and retry",
        AgentClass::Permission => "not authorized yet; will retry with a fresh token",
        AgentClass::Providers => "resource providers missing; will retry",
        AgentClass::RetryFreshToken => "token refused; will retry with a fresh token",
        AgentClass::Retry => "transient; will retry",
    }
}

fn deadline_error(
    settings: &Settings,
    deadline: &Deadline,
    class: &AgentClass,
    target: Option<&Target>,
    last: String,
) -> Error {
    let scope = target
        .map(|t| {
            format!(
                "/subscriptions/{}/resourceGroups/{}",
                t.subscription_id, t.resource_group
            )
        })
        .unwrap_or_else(|| "the target resource group".into());
    match class {
        AgentClass::Permission => Error::NotAuthorized {
            detail: format!(
                "{} still could not create the machine when the deadline ({}) came: {last}",
                settings.identity.value.describe(),
                human(deadline.timeout)
            ),
            advice: format!(
                "assign the roles \"Azure Connected Machine Resource Manager\" and \"HybridCompute Machine \
                 ListAccessDetails Action\" (or \"Azure Connected Machine Onboarding\") to the identity at scope \
                 {scope}, e.g. `az role assignment create --assignee <principal id> --role \"Azure Connected \
                 Machine Resource Manager\" --scope {scope}`, then run arc-enroll again"
            ),
        },
        AgentClass::Providers => Error::NotAuthorized {
            detail: format!("resource providers are still not registered at the deadline: {last}"),
            advice: "register them once per subscription: `az provider register --namespace Microsoft.HybridCompute`, \
                     Microsoft.GuestConfiguration, Microsoft.HybridConnectivity (and Microsoft.AzureArcData), then run \
                     arc-enroll again"
                .into(),
        },
        _ => Error::Deadline {
            timeout: deadline.timeout,
            waiting_for: "retrying azcmagent connect".into(),
            last,
        },
    }
}

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
                crate::config::ClonePolicy::Reconnect => {
                    log::warn!("this machine is a clone of an enrolled machine: {ev}; --clone-policy reconnect: it will enroll as itself");
                    if agent_has_resource {
                        Ok(Decision::CloneReconnect)
                    } else {
                        Ok(Decision::Enroll)
                    }
                }
                crate::config::ClonePolicy::Fail => Err(Error::Agent {
                    detail: format!("this machine is a clone of an enrolled machine: {ev}"),
                    advice: "refusing under --clone-policy fail; run `arc-enroll generalize` on the image before \
                             capture, or use --clone-policy reconnect to enroll each clone as itself"
                        .into(),
                }),
                crate::config::ClonePolicy::Ignore => {
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

/// Fill subscription, group, tenant and location from the token and IMDS where not configured.
pub fn resolve_target(
    settings: &Settings,
    claims: &Claims,
    http: &Http,
    deadline: &Deadline,
    facts: &MachineFacts,
) -> Result<Target, Error> {
    let derived = derive(settings, claims, || {
        imds::instance_metadata(http, &settings.imds_endpoint.value, deadline)
    });
    let need =
        |name: &str, v: Option<Sourced<String>>, how: &str| -> Result<Sourced<String>, Error> {
            v.ok_or_else(|| {
                Error::invalid(
                    name,
                    "",
                    "nowhere",
                    format!(
                        "could not be derived ({how}); set --{} or {}",
                        name.replace('_', "-"),
                        env_name(name)
                    ),
                )
            })
        };
    let sub = need(
        "subscription_id",
        derived.subscription_id,
        "the token has no usable xms_mirid and IMDS has no instance metadata",
    )?;
    let rg = need(
        "resource_group",
        derived.resource_group,
        "the token has no usable xms_mirid and IMDS has no instance metadata",
    )?;
    let tenant = need("tenant_id", derived.tenant_id, "the token has no tid claim")?;
    let location = need(
        "location",
        derived.location,
        "IMDS has no instance metadata here (as on Nexus)",
    )?;
    for (name, v) in [
        ("subscription_id", &sub),
        ("resource_group", &rg),
        ("tenant_id", &tenant),
        ("location", &location),
    ] {
        if v.source.starts_with("derived") || v.source.starts_with("IMDS") {
            log::info!("setting {name} = {} ({})", v.value, v.source);
        }
    }
    crate::config::validate_guid(&sub.value)
        .map_err(|e| Error::invalid("subscription_id", &sub.value, &sub.source, e))?;
    let name = render_resource_name(&settings.resource_name, facts)?;
    Ok(Target {
        subscription_id: sub.value,
        resource_group: rg.value,
        tenant_id: tenant.value,
        location: location.value,
        resource_name: name,
        cloud: settings.cloud.value.name().into(),
        tags: settings.tags.value.clone(),
        private_link_scope: settings
            .private_link_scope
            .as_ref()
            .map(|s| s.value.clone()),
        correlation_id: settings.correlation_id.as_ref().map(|s| s.value.clone()),
        gateway_id: settings.gateway_id.as_ref().map(|s| s.value.clone()),
        enable_automatic_upgrade: settings.enable_automatic_upgrade.value,
    })
}

fn env_name(name: &str) -> String {
    format!("ARC_ENROLL_{}", name.to_ascii_uppercase())
}

/// The four derivable settings with their sources.
pub struct Derived {
    pub subscription_id: Option<Sourced<String>>,
    pub resource_group: Option<Sourced<String>>,
    pub tenant_id: Option<Sourced<String>>,
    pub location: Option<Sourced<String>>,
}

/// Derive missing settings: subscription and group from the VM's resource id in the token
/// (`xms_az_rid` for a user-assigned identity, whose `xms_mirid` names the identity, FACTS §6;
/// else `xms_mirid`), tenant from `tid`, location (and what is still missing) from IMDS metadata.
pub fn derive(
    settings: &Settings,
    claims: &Claims,
    metadata: impl FnOnce() -> Option<imds::Compute>,
) -> Derived {
    let mut sub = settings.subscription_id.clone();
    let mut rg = settings.resource_group.clone();
    let mut tenant = settings.tenant_id.clone();
    let mut location = settings.location.clone();
    let vm_id = claims
        .xms_az_rid
        .as_deref()
        .map(|v| (v, "xms_az_rid"))
        .or_else(|| claims.xms_mirid.as_deref().map(|v| (v, "xms_mirid")));
    if let Some((id, claim)) = vm_id {
        if let Some((s, g, _, _)) = parse_resource_id(id) {
            if sub.is_none() {
                sub = Some(Sourced::new(
                    s,
                    format!("derived from the token's {claim} claim"),
                ));
            }
            if rg.is_none() {
                rg = Some(Sourced::new(
                    g,
                    format!("derived from the token's {claim} claim"),
                ));
            }
        }
    }
    if tenant.is_none() {
        tenant = claims
            .tid
            .clone()
            .map(|t| Sourced::new(t.to_ascii_lowercase(), "derived from the token's tid claim"));
    }
    if location.is_none() || sub.is_none() || rg.is_none() {
        if let Some(c) = metadata() {
            let src = "IMDS instance metadata";
            if location.is_none() && !c.location.is_empty() {
                location = Some(Sourced::new(c.location.to_ascii_lowercase(), src));
            }
            if sub.is_none() && !c.subscription_id.is_empty() {
                sub = Some(Sourced::new(c.subscription_id.to_ascii_lowercase(), src));
            }
            if rg.is_none() && !c.resource_group_name.is_empty() {
                rg = Some(Sourced::new(c.resource_group_name.clone(), src));
            }
        }
    }
    Derived {
        subscription_id: sub,
        resource_group: rg,
        tenant_id: tenant,
        location,
    }
}

/// Make the agent's proxy.url match the proxy that applies to Azure (left alone when it does).
fn reconcile_proxy_url(a: &Agent, settings: &Settings, deadline: &Deadline) -> Result<(), Error> {
    let Route::Via { proxy, rule } = settings.proxy.route(&settings.arm_endpoint.value) else {
        return Ok(());
    };
    let want = proxy.with_credentials();
    match a.config_get("proxy.url", deadline) {
        Ok(v)
            if v.as_str()
                .map(|s| s.trim_end_matches('/') == want.trim_end_matches('/'))
                .unwrap_or(false) =>
        {
            log::info!("agent proxy.url is already {proxy}; leaving it");
            Ok(())
        }
        other => {
            if let Err(e) = &other {
                log::info!("cannot read the agent's proxy.url ({e}); setting it");
            }
            log::info!("setting the agent's proxy.url to {proxy} ({rule})");
            a.config_set("proxy.url", &want, deadline)
                .map_err(|e| Error::Agent {
                    detail: format!("`azcmagent config set proxy.url {proxy}` failed: {e}"),
                    advice:
                        "check the agent installation; the agent needs the proxy to reach Azure"
                            .into(),
                })
        }
    }
}

fn new_state(
    settings: &Settings,
    t: &Target,
    show: Option<&Show>,
    fp: &Fingerprint,
    deadline: &Deadline,
    agent: &Agent,
) -> State {
    let vm_uuid = show.map(|s| s.vm_uuid.clone()).filter(|s| !s.is_empty());
    let version = show
        .map(|s| s.agent_version.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| agent.version(deadline));
    State {
        resource_id: show
            .map(|s| s.resource_id.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| t.resource_id()),
        resource_name: t.resource_name.clone(),
        subscription_id: t.subscription_id.clone(),
        resource_group: t.resource_group.clone(),
        tenant_id: t.tenant_id.clone(),
        location: t.location.clone(),
        cloud: t.cloud.clone(),
        tags: t.tags.clone(),
        enrolled_at: state::rfc3339(deadline.clock.unix_now()),
        agent_version: version,
        identity: settings.identity.value.label(),
        fingerprint: Fingerprint {
            vm_uuid,
            ..fp.clone()
        },
    }
}

fn warn_imds_bypass(settings: &Settings) {
    if settings.proxy.lacks_imds_bypass() {
        log::warn!(
            "a proxy is set and NO_PROXY does not list 169.254.169.254; arc-enroll reaches IMDS directly anyway, \
             but other tools (az, curl) would send IMDS requests to the proxy: add 169.254.169.254 to NO_PROXY"
        );
    }
}

/// Used by `token`: the token's claims without the token.
pub fn token_and_claims(
    settings: &Settings,
    deadline: &Deadline,
) -> Result<(AccessToken, Claims, Http), Error> {
    let http = Http::new(settings.proxy.clone());
    warn_imds_bypass(settings);
    let (t, c) = imds::fetch_token(&http, settings, deadline)?;
    Ok((t, c, http))
}
