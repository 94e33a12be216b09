//! The enrollment path "pre-create the machine, then `azcmagent connect existing`" (FACTS §10):
//! arc-enroll creates the `Microsoft.HybridCompute/machines` resource itself with a one-time
//! RSA-2048 public key and a new vmId, using the token; the agent only gets the private key (in a
//! 0600 `--config` file) and never sees the token. With `--private-relay` the Nexus VM's traffic is
//! assigned to Private Relay between the two (`relay`).
//!
//! A re-run converges: the machine is looked up first, so one VM never gets two resources. A
//! resource this machine pre-created and never connected (recorded in `state::precreated`) is
//! replaced (its key was never stored, so it cannot be reused), and the log names it; so is this
//! machine's own earlier resource (same vmUuid) that its agent no longer holds. Any other
//! resource of that name is a name conflict. Within one run the created machine and its key are
//! kept across attempts, so a retry does not create another.

use std::path::PathBuf;
use std::sync::Mutex;

use super::keypair;
use super::relay::{self, Relay};
use super::{EnrollPath, Step};
use crate::agent::{Agent, AgentClass, Target};
use crate::azure::http::Http;
use crate::azure::machines::{
    machine_body, machine_path, Machines, PrecreatedMachine, Refusal, ResourceId,
};
use crate::config::{EnrollPathKind, Settings};
use crate::error::Error;
use crate::retry::Deadline;
use crate::secret::{AccessToken, PrivateKey};
use crate::state::precreated::{self, Precreated};
use crate::state::{self, State};

pub struct Precreate {
    arm_endpoint: String,
    state_dir: PathBuf,
    product_uuid: Option<String>,
    key_on_command_line: bool,
    kind: EnrollPathKind,
    relay: Option<Relay>,
    progress: Mutex<Progress>,
}

/// What this run has done so far (kept across attempts).
#[derive(Default)]
struct Progress {
    created: Option<Created>,
    relay_assigned: bool,
    /// The last attempt ended in this path's own retry (not the agent's): its deadline error.
    waiting: Option<Waiting>,
}

/// This run's machine resource and the private half of its key.
struct Created {
    key: PrivateKey,
    vm_id: String,
    machine_id: String,
}

/// What a path-level retry was waiting for, for the error at the deadline.
enum Waiting {
    /// 403 on a machine read/write: the identity lacks (or does not yet have) the Arc roles.
    MachineWrite { scope: String, detail: String },
    /// 403 on assignRelay.
    Relay { scope: String, detail: String },
}

/// One step's answer inside an attempt.
enum Next<T> {
    Go(T),
    Retry {
        reason: String,
        class: AgentClass,
        waiting: Option<Waiting>,
    },
}

impl Precreate {
    pub fn new(settings: &Settings) -> Precreate {
        let (_, fingerprint) = state::machine_facts(&settings.sysroot.value);
        let kind = settings.enroll_path.value;
        Precreate {
            arm_endpoint: settings.arm_endpoint.value.clone(),
            state_dir: settings.state_dir.value.clone(),
            product_uuid: fingerprint.product_uuid,
            key_on_command_line: settings.key_on_command_line.value,
            kind,
            relay: (kind == EnrollPathKind::PrivateRelay).then(|| Relay::new(settings)),
            progress: Mutex::new(Progress::default()),
        }
    }

    /// This run's machine: created now, or the one an earlier attempt of this run created.
    fn ensure_machine(
        &self,
        arm: &Machines,
        t: &Target,
        deadline: &Deadline,
    ) -> Result<Next<Created>, Error> {
        let path = machine_path(&t.subscription_id, &t.resource_group, &t.resource_name);
        let id = t.resource_id();
        let pending = precreated::load(&self.state_dir);
        if let Some(p) = pending
            .as_ref()
            .filter(|p| !p.resource_id.eq_ignore_ascii_case(&id))
        {
            if let Next::Retry {
                reason,
                class,
                waiting,
            } = self.remove_orphan(arm, p, deadline)?
            {
                return Ok(Next::Retry {
                    reason,
                    class,
                    waiting,
                });
            }
        }
        let existing = match arm.get(&path, deadline)? {
            Ok(m) => m,
            Err(r) => return self.refused("reading the machine resource", &id, r),
        };
        if let Some(m) = existing {
            let why = self.replace_or_conflict(&m, pending.as_ref(), t)?;
            log::warn!("{why}; deleting it and pre-creating it again with a new key");
            if let Err(r) = arm.delete(&path, deadline)? {
                return self.refused("deleting the machine resource", &id, r);
            }
            log::info!("deleted {id}");
        }
        let pair = keypair::generate().map_err(Error::Internal)?;
        let vm_id = keypair::new_vm_id().map_err(Error::Internal)?;
        log::info!(
            "generated a one-time RSA-{} key pair in {} ms (the private key stays in memory and reaches \
             the agent only through a 0600 file) and vmId {vm_id}",
            keypair::KEY_BITS,
            pair.took.as_millis()
        );
        let body = machine_body(&t.location, &pair.public, &vm_id, &t.tags);
        log::info!(
            "creating the machine resource {id} (PUT, api-version {})",
            crate::azure::machines::MACHINES_WRITE_API_VERSION
        );
        let made = match arm.create(&path, &body, deadline)? {
            Ok(m) => m,
            Err(r) => return self.refused("creating the machine resource", &id, r),
        };
        let machine_id = if made.id.is_empty() {
            id.clone()
        } else {
            made.id
        };
        precreated::save(
            &self.state_dir,
            &Precreated {
                resource_id: machine_id.clone(),
                vm_id: vm_id.clone(),
                created_at: crate::timefmt::rfc3339(deadline.clock.unix_now()),
                product_uuid: self.product_uuid.clone(),
            },
        )?;
        log::info!(
            "created {machine_id} (vmId {vm_id}); recorded in {} until the agent connects",
            precreated::path(&self.state_dir).display()
        );
        Ok(Next::Go(Created {
            key: pair.private,
            vm_id,
            machine_id,
        }))
    }

    /// A resource of our name exists: ours to replace (the reason, for the log), or a conflict.
    fn replace_or_conflict(
        &self,
        m: &PrecreatedMachine,
        pending: Option<&Precreated>,
        t: &Target,
    ) -> Result<String, Error> {
        let ours_pending = pending.is_some_and(|p| {
            p.resource_id.eq_ignore_ascii_case(&m.id)
                && m.vm_id
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(&p.vm_id))
                && match (&p.product_uuid, &self.product_uuid) {
                    (Some(a), Some(b)) => state::same_uuid(a, b),
                    _ => true,
                }
        });
        if ours_pending && !m.connected() {
            let p = pending.expect("checked");
            return Ok(format!(
                "the machine resource {} (vmId {}) was pre-created by an earlier run on this machine at {} and never \
                 connected; its one-time key was never stored, so it is replaced",
                m.id, p.vm_id, p.created_at
            ));
        }
        let this_vm = match (&m.vm_uuid, &self.product_uuid) {
            (Some(a), Some(b)) => state::same_uuid(a, b),
            _ => false,
        };
        if this_vm {
            return Ok(format!(
                "the machine resource {} is this machine's (vmUuid {}, status {}) from an earlier enrollment \
                 that its agent no longer holds",
                m.id,
                m.vm_uuid.as_deref().unwrap_or(""),
                m.status.as_deref().unwrap_or("none")
            ));
        }
        let detail = match (&m.vm_uuid, m.status.as_deref()) {
            (None, None) => format!(
                "{} exists, no agent has connected it, and this machine did not create it (no record in {}): \
                 another machine's pre-created resource, or this machine's with its state removed — delete it \
                 in Azure if it is stale",
                m.id,
                precreated::path(&self.state_dir).display()
            ),
            (u, s) => format!(
                "{} belongs to the machine with vmUuid {} (status {})",
                m.id,
                u.as_deref().unwrap_or("unknown"),
                s.unwrap_or("none")
            ),
        };
        Err(Error::NameConflict {
            name: t.resource_name.clone(),
            detail,
        })
    }

    /// A machine this machine pre-created under another name (the name template changed) and
    /// never connected: deleted, so one VM never has two resources.
    fn remove_orphan(
        &self,
        arm: &Machines,
        p: &Precreated,
        deadline: &Deadline,
    ) -> Result<Next<()>, Error> {
        let Some(path) = ResourceId::parse(&p.resource_id)
            .filter(|r| r.is("Microsoft.HybridCompute", "machines"))
            .map(|r| r.path())
        else {
            precreated::clear(&self.state_dir)?;
            return Ok(Next::Go(()));
        };
        match arm.get(&path, deadline)? {
            Ok(Some(m))
                if !m.connected()
                    && m.vm_id
                        .as_deref()
                        .is_some_and(|v| v.eq_ignore_ascii_case(&p.vm_id)) =>
            {
                log::warn!(
                    "the machine resource {} was pre-created by an earlier run on this machine (under another name) \
                     and never connected; deleting it so this VM has one resource",
                    m.id
                );
                if let Err(r) = arm.delete(&path, deadline)? {
                    return self.refused(
                        "deleting the earlier pre-created machine",
                        &p.resource_id,
                        r,
                    );
                }
            }
            Ok(_) => {}
            Err(r) => log::warn!(
                "cannot read the earlier pre-created machine {}: {}; leaving it",
                p.resource_id,
                r.detail()
            ),
        }
        precreated::clear(&self.state_dir)?;
        Ok(Next::Go(()))
    }

    /// ARM's refusal of a machine read/write: retry (roles, providers, throttling), or stop.
    fn refused<T>(&self, what: &str, id: &str, r: Refusal) -> Result<Next<T>, Error> {
        match r {
            Refusal::Forbidden { detail, .. } => Ok(Next::Retry {
                reason: format!(
                    "{what} {id}: {detail}: the identity is not (yet) allowed; a new role assignment can take minutes to propagate"
                ),
                class: AgentClass::Permission,
                waiting: Some(Waiting::MachineWrite {
                    scope: id.split("/providers/").next().unwrap_or(id).to_string(),
                    detail,
                }),
            }),
            Refusal::Conflict(d) if d.to_ascii_lowercase().contains("missingsubscriptionregistration") => {
                Ok(Next::Retry {
                    reason: format!("{what} {id}: {d}"),
                    class: AgentClass::Providers,
                    waiting: None,
                })
            }
            Refusal::BadRequest { property, detail } => Err(Error::Rejected {
                detail: format!("{what} {id} was refused: {detail}"),
                advice: match property {
                    Some(p) => format!("ARM named the property {p}; check the settings that feed it (location, resource name, tags) and report it if they are right"),
                    None => "check the resource name, location and tags".into(),
                },
            }),
            Refusal::NotFound(d) => Err(Error::Rejected {
                detail: format!("{what} {id}: {d}"),
                advice: "check that the resource group exists in that subscription".into(),
            }),
            Refusal::Conflict(d) => Err(Error::NameConflict {
                name: id.rsplit('/').next().unwrap_or(id).to_string(),
                detail: d,
            }),
            Refusal::Other(d) => Ok(Next::Retry {
                reason: format!("{what} {id}: {d}"),
                class: AgentClass::Retry,
                waiting: None,
            }),
        }
    }
}

impl EnrollPath for Precreate {
    fn attempt(
        &self,
        http: &Http,
        agent: &Agent,
        target: &Target,
        token: AccessToken,
        n: u32,
        deadline: &Deadline,
    ) -> Result<Step, Error> {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.waiting = None;
        let arm = Machines::new(http, &self.arm_endpoint, &token);
        if p.created.is_none() {
            match self.ensure_machine(&arm, target, deadline)? {
                Next::Go(c) => p.created = Some(c),
                Next::Retry {
                    reason,
                    class,
                    waiting,
                } => {
                    p.waiting = waiting;
                    return Ok(Step::Retry { reason, class });
                }
            }
        }
        let machine_id = p
            .created
            .as_ref()
            .map(|c| c.machine_id.clone())
            .unwrap_or_default();
        if let (Some(relay), false) = (&self.relay, p.relay_assigned) {
            match relay.assign(&arm, &token, &machine_id, deadline)? {
                relay::Assigned::Done => p.relay_assigned = true,
                relay::Assigned::Retry {
                    reason,
                    scope,
                    detail,
                } => {
                    p.waiting = Some(Waiting::Relay { scope, detail });
                    return Ok(Step::Retry {
                        reason,
                        class: AgentClass::Permission,
                    });
                }
            }
        }
        drop(arm);
        drop(token);
        let c = p.created.as_ref().expect("created above");
        log::info!(
            "agent connect attempt {n}: running azcmagent connect existing for {} (vmId {}) with the one-time key{}",
            c.machine_id,
            c.vm_id,
            if self.key_on_command_line {
                " on the command line (--key-on-command-line)"
            } else {
                " in a 0600 file"
            }
        );
        agent
            .connect_existing(target, &c.key, &c.vm_id, self.key_on_command_line, deadline)
            .map(Step::Agent)
    }

    fn record(&self, state: &mut State) {
        let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &p.created {
            state.vm_id = Some(c.vm_id.clone());
            state.resource_id = c.machine_id.clone();
        }
        state.enrolled_via = Some(
            match self.kind {
                EnrollPathKind::PrivateRelay => "private-relay",
                _ => "precreate",
            }
            .into(),
        );
    }

    fn deadline_error(&self, last: &str) -> Option<Error> {
        let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        match p.waiting.as_ref()? {
            Waiting::MachineWrite { scope, detail } => Some(Error::NotAuthorized {
                detail: format!("the identity still could not create the machine resource when the deadline came: {detail} (last: {last})"),
                advice: format!(
                    "assign {} to the identity at scope {scope} (it needs Microsoft.HybridCompute/machines/write), then run arc-enroll again",
                    crate::azure::arm::ROLE_ADVICE
                ),
            }),
            Waiting::Relay { scope, detail } => Some(Error::NotAuthorized {
                detail: format!(
                    "the identity still may not assign the Nexus VM's relay when the deadline came: {detail}"
                ),
                advice: format!(
                    "grant {} on {scope} (a custom role with that action, or Contributor on the VM), then run arc-enroll again",
                    crate::azure::machines::ASSIGN_RELAY_ACTION
                ),
            }),
        }
    }
}
