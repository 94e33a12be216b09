//! `connect`: the enrollment as the sequence it logs. `connect` calls the steps in order; each is
//! a function below with the name it has in the log: resolve → lock → decide (already enrolled /
//! clone / enroll) → obtain token → resolve target → Azure pre-checks → prepare agent → attempt
//! (retried) → record → verify.

use std::time::Duration;

use super::attempt::{self, Next};
use super::azure_checks::before_connect;
use super::decision::{decide, Decision};
use super::target::resolve_target;
use super::{EnrollPath, Step};
use crate::agent::{self, Agent, AgentClass, Outcome, Show, Target};
use crate::azure::http::Http;
use crate::azure::proxy::Route;
use crate::config::{MachineFacts, Settings};
use crate::error::Error;
use crate::identity::token::{AccessToken, Claims};
use crate::identity::{self, TokenSource};
use crate::retry::{retry_with, Attempt, Backoff, Deadline};
use crate::state::{self, Fingerprint, State};

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

/// Run `connect`.
pub fn connect(settings: &Settings, deadline: &Deadline) -> Result<Enrolled, Error> {
    settings.log_sources();
    settings.require_federated_target()?;
    let http = connection(settings);
    let _lock = lock(settings, deadline)?;
    let mut run = resolve(settings, deadline, http)?;
    if let Some(done) = decide_what_to_do(&run)? {
        return Ok(done);
    }
    let source = identity::source(settings);
    let path = super::path(settings);
    let mut backoff =
        Backoff::new(AGENT_BACKOFF_BASE, AGENT_BACKOFF_CAP).with_min_attempt(AGENT_MIN_ATTEMPT);
    let out = retry_with(
        "agent connect",
        deadline,
        &mut backoff,
        &mut run,
        |run, n| attempt_once(run, &*source, &*path, n).unwrap_or_else(Attempt::Fail),
        |run, last| {
            if let Some(e) = path.deadline_error(&last) {
                return e;
            }
            attempt::deadline_error(
                settings,
                deadline,
                run.last_class,
                run.target.as_ref(),
                last,
            )
        },
    )?;
    let enrolled = record(&run, &*path, &out)?;
    verify(&run)?;
    Ok(enrolled)
}

/// What the steps learn, carried from one to the next.
struct Run<'a> {
    settings: &'a Settings,
    deadline: &'a Deadline,
    http: Http,
    facts: MachineFacts,
    fingerprint: Fingerprint,
    /// `None` until `--install-agent` installed it.
    agent: Option<Agent>,
    /// Resolved (and checked in Azure) on the first attempt.
    target: Option<Target>,
    /// The agent's proxy and local settings were applied.
    prepared: bool,
    /// How the agent answered the latest attempt, for the error at the deadline.
    last_class: AgentClass,
}

/// The HTTP agents; warns when NO_PROXY would send other tools' IMDS requests to the proxy.
fn connection(settings: &Settings) -> Http {
    let http = Http::new(settings.proxy.clone());
    warn_imds_bypass(settings);
    http
}

/// One run at a time per state directory.
fn lock(settings: &Settings, deadline: &Deadline) -> Result<state::Lock, Error> {
    let state_dir = &settings.state_dir.value;
    let lock = state::lock(state_dir, deadline)?;
    log::info!("holding the run lock in {}", state_dir.display());
    Ok(lock)
}

/// This machine's facts and the agent that will enroll it.
fn resolve<'a>(
    settings: &'a Settings,
    deadline: &'a Deadline,
    http: Http,
) -> Result<Run<'a>, Error> {
    let (facts, fingerprint) = state::machine_facts(&settings.sysroot.value);
    log::info!(
        "this machine: hostname {}, product_uuid {}, machine-id {}",
        facts.hostname.as_deref().unwrap_or("(none)"),
        fingerprint
            .product_uuid
            .as_deref()
            .unwrap_or("(unreadable)"),
        fingerprint.machine_id.as_deref().unwrap_or("(unreadable)")
    );
    Ok(Run {
        agent: find_agent(settings)?,
        settings,
        deadline,
        http,
        facts,
        fingerprint,
        target: None,
        prepared: false,
        last_class: AgentClass::Retry,
    })
}

/// The installed agent; `None` when `--install-agent` will install it after the token.
fn find_agent(settings: &Settings) -> Result<Option<Agent>, Error> {
    let agent_path = agent::locate(settings.azcmagent.as_ref().map(|s| s.value.as_str()));
    match &agent_path {
        Some(p) if agent::is_executable(p) => Ok(Some(Agent::new(
            p.clone(),
            &settings.proxy,
            &settings.arm_endpoint.value,
        ))),
        _ if settings.install_agent.value => {
            log::info!("azcmagent is not installed; it will be installed after the token is obtained (--install-agent)");
            Ok(None)
        }
        _ => Err(Error::Agent {
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
    }
}

/// Already enrolled as this machine (`Some`: nothing to connect), a clone (disconnected
/// locally, then enrolled as itself), or new.
fn decide_what_to_do(run: &Run) -> Result<Option<Enrolled>, Error> {
    let settings = run.settings;
    let loaded = state::load(&settings.state_dir.value);
    let show = agent_status(run)?;
    match decide(
        settings,
        &loaded,
        &run.fingerprint,
        show.as_ref(),
        &run.facts,
    )? {
        Decision::AlreadyDone(state) => repair_settings(run, *state).map(Some),
        Decision::CloneReconnect => disconnect_clone(run).map(|()| None),
        Decision::Enroll => Ok(None),
    }
}

/// What the agent says about itself; `None` when it is not installed or cannot tell.
fn agent_status(run: &Run) -> Result<Option<Show>, Error> {
    let Some(a) = &run.agent else {
        return Ok(None);
    };
    let show = match a.show(run.deadline) {
        Ok(s) => Some(s),
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) => {
            log::warn!(
                "cannot read the agent's status: {e}; continuing as if it were not connected"
            );
            None
        }
    };
    if let Some(s) = &show {
        log::info!("agent status: {}", s.summary());
    }
    Ok(show)
}

/// Drift repair: the agent's local settings are reapplied without reconnecting.
fn repair_settings(run: &Run, state: State) -> Result<Enrolled, Error> {
    let mut action = "already enrolled as this machine; nothing to do";
    if let Some(a) = run.agent.as_ref().filter(|_| run.settings.agent.is_some()) {
        if agent::reconcile::reconcile(a, run.settings, run.deadline)? > 0 {
            action = "already enrolled as this machine; agent settings repaired";
        }
        agent::reconcile::verify(a, run.settings, run.deadline)?;
    }
    Ok(Enrolled { state, action })
}

/// A clone (or `--reconnect-on-change`): forget the parent locally, keep its Azure resource.
fn disconnect_clone(run: &Run) -> Result<(), Error> {
    let a = run.agent.as_ref().expect("a clone verdict needs the agent");
    log::info!("clone: disconnecting the agent locally (--force-local-only); the parent's Azure resource is left alone");
    let out = a.disconnect(None, run.deadline)?;
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
    state::clear(&run.settings.state_dir.value)?;
    log::info!("clone: local agent state and arc-enroll state cleared; enrolling as this machine");
    Ok(())
}

/// One attempt: a fresh token, the target (first time), the agent prepared (first time), the
/// enrollment path, and what the agent's answer means.
fn attempt_once(
    run: &mut Run,
    source: &dyn TokenSource,
    path: &dyn EnrollPath,
    n: u32,
) -> Result<Attempt<Outcome>, Error> {
    let (token, claims) = source.fresh_token(&run.http, run.deadline)?;
    let token = resolve_and_check_target(run, source, token, &claims)?;
    prepare_agent(run)?;
    let (Some(a), Some(t)) = (&run.agent, &run.target) else {
        return Err(Error::Internal(
            "agent or target missing after preparation".into(),
        ));
    };
    let out = match path.attempt(&run.http, a, t, token, n, run.deadline)? {
        Step::Agent(out) => out,
        Step::Retry { reason, class } => {
            run.last_class = class;
            return Ok(Attempt::Retry {
                reason,
                retry_after: None,
            });
        }
    };
    let class = agent::classify(out.code, &out.tail_text());
    run.last_class = class;
    if attempt::logs_itself(class) {
        log::info!(
            "agent connect attempt {n}: {} → {}",
            out.describe(),
            attempt::describe_class(class)
        );
    }
    Ok(match attempt::next_action(class, &out, &t.resource_name) {
        Next::Record => Attempt::Done(out),
        Next::Stop(e) => Attempt::Fail(e),
        Next::Retry(reason) => Attempt::Retry {
            reason,
            retry_after: None,
        },
        Next::CleanUpThenRetry(reason) => {
            log::warn!(
                "the failed attempt may have created {}; if the next attempt fails too, delete it in Azure",
                t.resource_id()
            );
            log::info!("cleaning the agent's half-configured local state before the next attempt");
            let _ = a.disconnect(None, run.deadline)?;
            Attempt::Retry {
                reason,
                retry_after: None,
            }
        }
    })
}

/// On the first attempt: where to enroll, then the Azure side (roles, providers, name). Returns
/// the token to use (a fresh one when the checks had to wait).
fn resolve_and_check_target(
    run: &mut Run,
    source: &dyn TokenSource,
    token: AccessToken,
    claims: &Claims,
) -> Result<AccessToken, Error> {
    if run.target.is_some() {
        return Ok(token);
    }
    let (settings, deadline) = (run.settings, run.deadline);
    if settings.resource_name.value.contains("{instance_id}") && run.facts.instance_id.is_none() {
        run.facts.instance_id = source.instance_id(&run.http, deadline);
    }
    let t = resolve_target(settings, claims, &run.http, deadline, &run.facts)?;
    log::info!(
        "enrolling as {} in subscription {}, resource group {}, location {}, tenant {}",
        t.resource_name,
        t.subscription_id,
        t.resource_group,
        t.location,
        t.tenant_id
    );
    // Azure side first (issue 5): wait for roles/providers, refuse a taken name.
    let checked = before_connect(
        settings, &run.http, source, deadline, &t, &run.facts, &token,
    )?;
    run.target = Some(t);
    Ok(checked.map(|(fresh, _)| fresh).unwrap_or(token))
}

/// On the first attempt: install the agent if asked to, point it at the proxy, apply its
/// local settings.
fn prepare_agent(run: &mut Run) -> Result<(), Error> {
    if run.agent.is_none() {
        run.agent = Some(agent::install::install_agent(
            run.settings,
            &run.http,
            run.deadline,
        )?);
    }
    let a = run.agent.as_ref().expect("set above");
    if !run.prepared {
        reconcile_proxy_url(a, run.settings, run.deadline)?;
        agent::reconcile::apply(a, run.settings, run.deadline)?;
        run.prepared = true;
    }
    Ok(())
}

/// Write the state file, only now that it worked, after checking that an "already connected"
/// agent is connected as this machine.
fn record(run: &Run, path: &dyn EnrollPath, out: &Outcome) -> Result<Enrolled, Error> {
    let (Some(agent), Some(target)) = (&run.agent, &run.target) else {
        return Err(Error::Internal(
            "a successful attempt without agent or target".into(),
        ));
    };
    let already = out.code == Some(67);
    if already {
        log::info!(
            "the agent says it is already connected; checking that it is connected as this machine"
        );
    }
    let show = agent.show(run.deadline).ok();
    if let Some(s) = &show {
        if already && !s.resource_name.eq_ignore_ascii_case(&target.resource_name) {
            return Err(Error::Agent {
                detail: format!(
                    "the agent is already connected as {} ({}), not as {}",
                    s.resource_name, s.resource_id, target.resource_name
                ),
                advice: "run `arc-enroll disconnect` (or `azcmagent disconnect`) first if this machine should be re-enrolled".into(),
            });
        }
    }
    let mut state = new_state(
        run.settings,
        target,
        show.as_ref(),
        &run.fingerprint,
        run.deadline,
        agent,
    );
    path.record(&mut state);
    let state_dir = &run.settings.state_dir.value;
    state::save(state_dir, &state)?;
    // A machine pre-created for this enrollment is now recorded in the state itself.
    state::precreated::clear(state_dir)?;
    log::info!(
        "state written to {}",
        state_dir.join(state::STATE_FILE).display()
    );
    Ok(Enrolled {
        state,
        action: if already {
            "already connected; state recorded"
        } else {
            "enrolled"
        },
    })
}

/// The enrollment stands (state is recorded); settings that did not hold are exit 5, and a
/// re-run repairs them without reconnecting.
fn verify(run: &Run) -> Result<(), Error> {
    match &run.agent {
        Some(a) => agent::reconcile::verify(a, run.settings, run.deadline),
        None => Ok(()),
    }
}

/// Make the agent's proxy.url match the proxy that applies to Azure (left alone when it does).
fn reconcile_proxy_url(a: &Agent, settings: &Settings, deadline: &Deadline) -> Result<(), Error> {
    let Route::Via { proxy, rule } = settings.proxy.route(&settings.arm_endpoint.value) else {
        return Ok(());
    };
    let want = proxy.with_credentials();
    // What the agent reports is compared as parsed URLs too: an agent that prints the password
    // encoded differently (%40 vs @) holds the same proxy.
    let same = |v: &str| {
        v.trim_end_matches('/') == want.trim_end_matches('/')
            || crate::azure::proxy::ProxyUrl::parse(v).is_ok_and(|p| p == proxy)
    };
    match a.config_get("proxy.url", deadline) {
        Ok(v) if v.as_str().map(same).unwrap_or(false) => {
            log::info!("agent proxy.url is already {proxy}; leaving it");
            Ok(())
        }
        other => {
            if let Err(e) = &other {
                log::info!("cannot read the agent's proxy.url ({e}); setting it");
            }
            log::info!("setting the agent's proxy.url to {proxy} ({rule})");
            a.config_set_proxy_url(&proxy, deadline)
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
        enrolled_at: crate::timefmt::rfc3339(deadline.clock.unix_now()),
        agent_version: version,
        identity: settings.identity.value.label(),
        fingerprint: Fingerprint {
            vm_uuid,
            ..fp.clone()
        },
        vm_id: None,
        enrolled_via: None,
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
    let http = connection(settings);
    let (t, c) = identity::source(settings).fresh_token(&http, deadline)?;
    Ok((t, c, http))
}
