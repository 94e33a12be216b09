//! Nexus Private Relay (FACTS §10 step 3–4): after the machine resource is pre-created, the
//! Nexus VM's Arc traffic is assigned to Private Relay with `assignRelay` (`relayType`
//! `Platform`), a long-running operation followed to its end; then the HybridConnectivity
//! `default` endpoint is looked at (informational: the spec promises nothing more).
//!
//! The Nexus VM is `--nexus-vm-id`, else the token's `xms_az_rid`, else its `xms_mirid`, when that
//! claim is a `Microsoft.NetworkCloud/virtualMachines` id (whether Nexus puts the VM there is
//! UNCONFIRMED, FACTS §10); the log says which.

use crate::azure::machines::{Machines, OperationEnd, Refusal, ResourceId, ASSIGN_RELAY_ACTION};
use crate::azure::pacing::{self, Op};
use crate::config::{Settings, Sourced};
use crate::error::Error;
use crate::identity::token::{decode_claims, Claims};
use crate::retry::Deadline;
use crate::secret::AccessToken;

/// FACTS §10: Platform (the default) is Private Relay; Public is the public relay.
pub const RELAY_TYPE: &str = "Platform";
const NETWORKCLOUD: &str = "Microsoft.NetworkCloud";
const VIRTUAL_MACHINES: &str = "virtualMachines";

pub struct Relay {
    setting: Option<Sourced<String>>,
}

/// What one assignRelay came to.
pub enum Assigned {
    Done,
    /// 403: the identity may not (yet) assign the relay; retried with a fresh token.
    Retry {
        reason: String,
        scope: String,
        detail: String,
    },
}

/// The Nexus VM and where its id came from.
pub fn nexus_vm(
    setting: Option<&Sourced<String>>,
    claims: &Claims,
) -> Result<(ResourceId, String), Error> {
    if let Some(s) = setting {
        let vm = ResourceId::parse(s.value.trim())
            .filter(|v| v.is(NETWORKCLOUD, VIRTUAL_MACHINES))
            .ok_or_else(|| {
                Error::invalid(
                    "nexus_vm_id",
                    &s.value,
                    &s.source,
                    "must be a Microsoft.NetworkCloud/virtualMachines resource id",
                )
            })?;
        return Ok((vm, s.source.clone()));
    }
    for (name, v) in [
        ("xms_az_rid", claims.xms_az_rid.as_deref()),
        ("xms_mirid", claims.xms_mirid.as_deref()),
    ] {
        if let Some(vm) = v
            .and_then(ResourceId::parse)
            .filter(|v| v.is(NETWORKCLOUD, VIRTUAL_MACHINES))
        {
            return Ok((vm, format!("the token's {name} claim")));
        }
    }
    Err(Error::Usage(format!(
        "--private-relay needs the Nexus VM's resource id: the token's xms_az_rid ({}) and xms_mirid ({}) are not \
         Microsoft.NetworkCloud/virtualMachines ids; pass --nexus-vm-id /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.NetworkCloud/virtualMachines/<name>",
        claims.xms_az_rid.as_deref().unwrap_or("absent"),
        claims.xms_mirid.as_deref().unwrap_or("absent")
    )))
}

impl Relay {
    pub fn new(settings: &Settings) -> Relay {
        Relay {
            setting: settings.nexus_vm_id.clone(),
        }
    }

    /// Assign the relay for `machine_id`, follow the operation, then look at the endpoint.
    pub fn assign(
        &self,
        arm: &Machines,
        token: &AccessToken,
        machine_id: &str,
        deadline: &Deadline,
    ) -> Result<Assigned, Error> {
        let claims = decode_claims(token).unwrap_or_default();
        let (vm, from) = nexus_vm(self.setting.as_ref(), &claims)?;
        let vm_id = vm.path();
        log::info!(
            "assigning the Nexus VM {vm_id} (from {from}) to Private Relay (assignRelay, relayType {RELAY_TYPE}) for {machine_id}"
        );
        let end = match arm.assign_relay(&vm, machine_id, RELAY_TYPE, deadline)? {
            Ok(end) => end,
            Err(Refusal::Forbidden { detail, .. }) => {
                return Ok(Assigned::Retry {
                    reason: format!(
                        "assignRelay on {vm_id}: {detail}: the identity needs {ASSIGN_RELAY_ACTION} on the VM; \
                         a new role assignment can take minutes to propagate"
                    ),
                    scope: vm_id,
                    detail,
                })
            }
            Err(Refusal::NotFound(d)) => {
                return Err(Error::Relay {
                    detail: format!("the Nexus VM {vm_id} (from {from}) was not found: {d}"),
                    advice: "pass the VM's resource id with --nexus-vm-id (az networkcloud virtualmachine show --query id)".into(),
                })
            }
            Err(Refusal::BadRequest { detail, .. }) => {
                return Err(Error::Rejected {
                    detail: format!("assignRelay on {vm_id} was refused: {detail}"),
                    advice: "check that the VM runs Nexus runtime 4.7.0 / management bundle 2510.1 or later (NetworkCloud API 2025-07-01-preview+)".into(),
                })
            }
            Err(r) => {
                return Err(Error::Relay {
                    detail: format!("assignRelay on {vm_id}: {}", r.detail()),
                    advice: "run arc-enroll again; if it persists, check the Nexus cluster's health".into(),
                })
            }
        };
        match end {
            OperationEnd::Succeeded => {
                log::info!("Private Relay assigned for {machine_id}");
            }
            OperationEnd::Failed { status, error } => {
                return Err(Error::Relay {
                    detail: format!("the assignRelay operation on {vm_id} ended {status}: {error}"),
                    advice: format!(
                        "the machine resource {machine_id} exists but is not connected; run arc-enroll again \
                         (it replaces it), or check the Nexus VM's relay in the portal"
                    ),
                });
            }
        }
        if let Some(b) = pacing::budget_low(Op::Read) {
            // Under pressure only what is needed (issue 17): this read only confirms.
            log::info!(
                "ARM's read budget is low ({} left); not confirming the HybridConnectivity endpoint, connecting",
                b.remaining
            );
            return Ok(Assigned::Done);
        }
        match arm.relay_endpoint(machine_id, deadline)? {
            Ok(true) => log::info!("the machine's HybridConnectivity endpoint 'default' exists"),
            Ok(false) => log::info!(
                "the machine's HybridConnectivity endpoint 'default' is not there yet; connecting anyway"
            ),
            Err(r) => log::info!(
                "cannot read the machine's HybridConnectivity endpoint ({}); connecting anyway",
                r.detail()
            ),
        }
        Ok(Assigned::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str =
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/nx/providers/Microsoft.NetworkCloud/virtualMachines/vm1";

    #[test]
    fn the_nexus_vm_comes_from_the_setting_then_the_claims() {
        let mut c = Claims::default();
        let s = Sourced::new(VM.to_string(), "flag --nexus-vm-id");
        let (vm, from) = nexus_vm(Some(&s), &c).unwrap();
        assert_eq!(
            (vm.name.as_str(), from.as_str()),
            ("vm1", "flag --nexus-vm-id")
        );
        assert!(nexus_vm(None, &c).is_err(), "no claim, no setting");
        c.xms_mirid = Some(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u".into(),
        );
        let e = nexus_vm(None, &c).unwrap_err();
        assert!(e.to_string().contains("--nexus-vm-id"), "{e}");
        assert_eq!(e.exit_code(), 2);
        c.xms_az_rid = Some(VM.into());
        assert_eq!(
            nexus_vm(None, &c).unwrap().1,
            "the token's xms_az_rid claim"
        );
        c.xms_az_rid = None;
        c.xms_mirid = Some(VM.to_lowercase());
        assert_eq!(nexus_vm(None, &c).unwrap().1, "the token's xms_mirid claim");
        let bad = Sourced::new(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v"
                .to_string(),
            "flag",
        );
        assert_eq!(nexus_vm(Some(&bad), &c).unwrap_err().exit_code(), 2);
    }
}
