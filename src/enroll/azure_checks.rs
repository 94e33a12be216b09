//! The Azure-side checks `connect` runs once the target is known, before the agent (issue 5):
//! permissions still propagating and providers not registered are waited for, a name taken by
//! another machine fails before the agent runs. `check` reports the same facts without waiting.

use std::time::Duration;

use crate::agent::Target;
use crate::azure::arm::{self, Arm, Read};
use crate::azure::http::Http;
use crate::azure::pacing::{self, Op};
use crate::config::{EnrollPathKind, MachineFacts, Settings};
use crate::error::Error;
use crate::identity::token::{AccessToken, Claims};
use crate::identity::TokenSource;
use crate::retry::{retry_with, Attempt, Backoff, Deadline};
use crate::timefmt::human;

/// Between polls for a role assignment or provider registration: both take minutes (FACTS §8).
pub const AZURE_POLL_BASE: Duration = Duration::from_secs(5);
pub const AZURE_POLL_CAP: Duration = Duration::from_secs(60);
/// A poll (fresh token + up to four ARM reads) needs at least this long: one begun with less left
/// before the deadline could only time out and be mistaken for "cannot read, let the agent
/// decide" after every earlier poll had found something missing.
pub const AZURE_POLL_MIN_ATTEMPT: Duration = Duration::from_secs(15);

/// What the polls have learnt so far.
#[derive(Default)]
struct Poll {
    /// The token fetched for the latest poll (role changes show in new tokens only).
    fresh: Option<(AccessToken, Claims)>,
    /// The latest poll found roles missing (else it was providers, read only alongside missing
    /// roles).
    missing_roles: bool,
    /// Notes already logged once.
    noted: Vec<&'static str>,
}

/// Log `msg` the first time `key` comes up.
fn note(noted: &mut Vec<&'static str>, key: &'static str, msg: String) {
    if !noted.contains(&key) {
        noted.push(key);
        log::info!("{msg}");
    }
}

/// The Azure-side checks `connect` runs once the target is known, before the agent: wait while
/// roles are missing (they may still be propagating) or required providers are unregistered,
/// then fail with exactly what to assign or register; fail at once when another machine's
/// resource has the name. Where the token cannot read something, say so and leave the answer to
/// the agent. Returns a fresh token when it had to wait (role changes show in new tokens only).
pub fn before_connect(
    settings: &Settings,
    http: &Http,
    source: &dyn TokenSource,
    deadline: &Deadline,
    target: &Target,
    facts: &MachineFacts,
    token: &AccessToken,
) -> Result<Option<(AccessToken, Claims)>, Error> {
    let checks = Checks {
        settings,
        http,
        source,
        deadline,
        target,
        token,
        scope: scope(&target.subscription_id, &target.resource_group),
    };
    let mut backoff =
        Backoff::new(AZURE_POLL_BASE, AZURE_POLL_CAP).with_min_attempt(AZURE_POLL_MIN_ATTEMPT);
    log::info!(
        "checking in Azure before running the agent: the identity's permissions on {} (and the resource providers if roles are missing){}",
        checks.scope,
        if settings.enroll_path.value == EnrollPathKind::AgentToken {
            format!(", and whether {} is taken", target.resource_name)
        } else {
            String::new()
        }
    );
    let mut poll = Poll::default();
    let reachable = retry_with(
        "Azure permission check",
        deadline,
        &mut backoff,
        &mut poll,
        |poll, n| checks.poll_once(poll, n).unwrap_or_else(Attempt::Fail),
        |poll, last| checks.at_deadline(poll, last),
    )?;
    if let (true, Some(b)) = (reachable, pacing::budget_low(Op::Read)) {
        // Under pressure only what is needed (issue 17): the agent reports a taken name itself
        // (AZCM0044, exit 6), so this read is the one left out.
        log::info!(
            "ARM's read budget is low ({} left); not checking whether {} is taken, the agent will report a conflict",
            b.remaining,
            target.resource_name
        );
    } else if reachable && settings.enroll_path.value != EnrollPathKind::AgentToken {
        // Pre-created paths read the machine themselves right before the PUT (reuse, replace
        // or conflict: enroll/precreate.rs), so a read here would only ask the same question.
        log::debug!(
            "not checking here whether {} is taken: the pre-created path reads it before creating it",
            target.resource_name
        );
    } else if reachable {
        let tok = poll.fresh.as_ref().map(|(t, _)| t).unwrap_or(token);
        checks.name_free(tok, facts)?;
    }
    Ok(poll.fresh)
}

/// What every poll needs.
struct Checks<'a> {
    settings: &'a Settings,
    http: &'a Http,
    source: &'a dyn TokenSource,
    deadline: &'a Deadline,
    target: &'a Target,
    token: &'a AccessToken,
    scope: String,
}

impl Checks<'_> {
    /// One poll: permissions, then (roles missing) providers. `Done(false)` when ARM cannot be
    /// read at all.
    fn poll_once(&self, poll: &mut Poll, n: u32) -> Result<Attempt<bool>, Error> {
        let (sub, rg, scope, deadline) = (
            &self.target.subscription_id,
            &self.target.resource_group,
            &self.scope,
            self.deadline,
        );
        if n > 1 {
            // Roles granted since the last poll only show in a new token (NEXUS-HOWTO).
            poll.fresh = Some(self.source.fresh_token(self.http, deadline)?);
        }
        let tok = poll.fresh.as_ref().map(|(t, _)| t).unwrap_or(self.token);
        let arm = Arm::new(self.http, &self.settings.arm_endpoint.value, tok);
        let noted = &mut poll.noted;
        let mut waiting = Vec::new();
        poll.missing_roles = false;
        match arm.permissions(sub, rg, deadline)? {
            Read::Ok(perms) => {
                let missing = arm::missing_actions(&perms);
                if !missing.is_empty() {
                    poll.missing_roles = true;
                    waiting.push(format!(
                        "the identity lacks {} on {scope} (a new role assignment can take minutes to propagate)",
                        missing.join(", ")
                    ));
                }
            }
            Read::Denied(d) => note(
                noted,
                "perm-denied",
                format!("the token cannot read its permissions on {scope} ({d}); relying on the agent's own answer"),
            ),
            Read::Unavailable(u) => {
                note(
                    noted,
                    "arm-unavailable",
                    format!("cannot check permissions in Azure ({u}); skipping the Azure-side checks, the agent will tell"),
                );
                return Ok(Attempt::Done(false));
            }
            Read::Refused(r) => {
                if !noted.contains(&"arm-refused") {
                    noted.push("arm-refused");
                    log::warn!(
                        "cannot check permissions in Azure ({r}); skipping the Azure-side checks. \
                         `azcmagent connect` reaches Azure the same way (the same proxy, a CA store \
                         of its own), so it will likely fail next with a network or certificate error"
                    );
                }
                return Ok(Attempt::Done(false));
            }
        }
        // Frugal (issue 17: a fleet shares the subscription's ARM budget): providers are read only
        // when the roles are missing too, i.e. when this run is going to wait anyway and should
        // name everything missing at once. On the happy path the agent's own write tells whether
        // Microsoft.HybridCompute is registered (AZCM0042 names the namespace); `check` reads
        // every provider.
        let providers: &[&str] = if poll.missing_roles {
            &arm::REQUIRED_PROVIDERS
        } else {
            &[]
        };
        for ns in providers {
            match arm.provider_state(sub, ns, deadline)? {
                Read::Ok(s) if s.eq_ignore_ascii_case("Registered") => {}
                Read::Ok(s) => {
                    waiting.push(format!("resource provider {ns} is {s} in subscription {sub}"))
                }
                Read::Denied(d) => note(
                    noted,
                    "prov-denied",
                    format!("the token cannot read provider registrations ({d}); relying on the agent's own answer"),
                ),
                Read::Unavailable(u) | Read::Refused(u) => note(
                    noted,
                    "prov-unavailable",
                    format!("cannot read provider registrations ({u}); relying on the agent's own answer"),
                ),
            }
        }
        if waiting.is_empty() {
            if n > 1 {
                log::info!("Azure permission check: everything needed is in place now");
            }
            return Ok(Attempt::Done(true));
        }
        let until = deadline.clock.unix_now() + deadline.remaining().as_secs();
        Ok(Attempt::Retry {
            reason: format!(
                "not ready: {}; polling until {} at the latest",
                waiting.join("; "),
                crate::timefmt::rfc3339(until)
            ),
            retry_after: None,
        })
    }

    /// Still missing at the deadline: exactly what to assign or register.
    fn at_deadline(&self, poll: &Poll, last: String) -> Error {
        let timeout = human(self.deadline.timeout);
        if poll.missing_roles {
            let claims = poll
                .fresh
                .as_ref()
                .map(|(_, c)| c.clone())
                .or_else(|| crate::identity::token::decode_claims(self.token).ok())
                .unwrap_or_default();
            Error::NotAuthorized {
                detail: format!(
                    "{} still lacks permissions when the deadline ({timeout}) came: {last}",
                    self.settings.identity.value.describe(),
                ),
                advice: format!(
                    "{}, then run arc-enroll again",
                    role_advice(&claims, &self.scope)
                ),
            }
        } else {
            let sub = &self.target.subscription_id;
            Error::NotAuthorized {
                detail: format!(
                    "resource providers are still not registered at the deadline ({timeout}): {last}"
                ),
                advice: format!(
                    "register them once per subscription: {}, then run arc-enroll again",
                    arm::REQUIRED_PROVIDERS
                        .iter()
                        .map(|ns| format!(
                            "`az provider register --namespace {ns} --subscription {sub}`"
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }

    /// Fails when another machine's resource already has the name.
    fn name_free(&self, token: &AccessToken, facts: &MachineFacts) -> Result<(), Error> {
        let (t, scope) = (self.target, &self.scope);
        let arm = Arm::new(self.http, &self.settings.arm_endpoint.value, token);
        match arm.machine(&t.subscription_id, &t.resource_group, &t.resource_name, self.deadline)? {
            Read::Ok(None) => log::info!(
                "no machine named {} in {scope} yet; the agent will create it",
                t.resource_name
            ),
            Read::Ok(Some(m)) => match conflict(&m, facts.product_uuid.as_deref()) {
                Ownership::Ours => log::info!(
                    "{} already exists and is this machine (same vmUuid); the agent will reconnect it",
                    m.id
                ),
                Ownership::Other(detail) => {
                    return Err(Error::NameConflict {
                        name: t.resource_name.clone(),
                        detail: format!("found before running the agent: {detail}"),
                    })
                }
                Ownership::Unknown(detail) => {
                    log::warn!("{detail}; leaving the answer to the agent")
                }
            },
            Read::Denied(d) => log::info!(
                "the token cannot read machines in {scope} ({d}); the agent will report a name conflict if there is one"
            ),
            Read::Unavailable(u) | Read::Refused(u) => log::info!(
                "cannot check whether {} is taken ({u}); the agent will tell",
                t.resource_name
            ),
        }
        Ok(())
    }
}

pub fn scope(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

pub fn role_advice(claims: &Claims, scope: &str) -> String {
    let who = claims.oid.as_deref().unwrap_or("<principal id>");
    format!(
        "assign the roles {} to the identity (object id {who}) at scope {scope}, e.g. \
         `az role assignment create --assignee {who} --role \"Azure Connected Machine Resource Manager\" --scope {scope}`; \
         a new assignment can take minutes to show",
        arm::ROLE_ADVICE
    )
}

pub enum Ownership {
    Ours,
    Other(String),
    Unknown(String),
}

/// Whose is an existing machine resource: its `vmUuid` against this machine's `product_uuid`.
pub fn conflict(m: &arm::Machine, product_uuid: Option<&str>) -> Ownership {
    match (m.vm_uuid.as_deref(), product_uuid) {
        (Some(theirs), Some(ours)) if crate::state::same_uuid(theirs, ours) => Ownership::Ours,
        (Some(theirs), Some(ours)) => Ownership::Other(format!(
            "{} exists with vmUuid {theirs}, but this machine's product_uuid is {ours}",
            m.id
        )),
        (None, _) => Ownership::Unknown(format!(
            "{} exists but has no vmUuid, so whose it is cannot be told",
            m.id
        )),
        (Some(theirs), None) => Ownership::Unknown(format!(
            "{} exists (vmUuid {theirs}) but this machine's product_uuid is unreadable",
            m.id
        )),
    }
}
