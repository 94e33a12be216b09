//! `check`'s findings for `--precreate` / `--private-relay` (issue 14): the machine write
//! arc-enroll does itself, the Nexus VM and the assignRelay permission on it.

use super::check::{finding, problem, Finding, Status};
use crate::azure::arm::{self, Arm, Read};
use crate::config::Settings;
use crate::enroll::azure_checks::role_advice;
use crate::error::Error;
use crate::identity::token::Claims;
use crate::retry::Deadline;

/// `--precreate` / `--private-relay`: the machine write arc-enroll itself does, the Nexus VM and
/// the assignRelay permission on it.
pub(super) fn precreate_findings(
    arm: &Arm,
    settings: &Settings,
    deadline: &Deadline,
    perms: &Read<Vec<arm::Permission>>,
    scope: &str,
    claims: &Claims,
) -> Result<Vec<Finding>, Error> {
    let mut out = Vec::new();
    let write = "Microsoft.HybridCompute/machines/write";
    if let Read::Ok(p) = perms {
        out.push(if arm::allowed(p, write) {
            finding(
                "machine write",
                Status::Ok,
                format!("arc-enroll may create the machine resource ({write} on {scope})"),
            )
        } else {
            problem(
                "machine write",
                format!("the identity lacks {write} on {scope}, which --precreate needs"),
                role_advice(claims, scope),
            )
        });
    }
    if settings.enroll_path.value != crate::config::EnrollPathKind::PrivateRelay {
        return Ok(out);
    }
    let vm = match crate::enroll::relay::nexus_vm(settings.nexus_vm_id.as_ref(), claims) {
        Ok((vm, from)) => {
            out.push(finding(
                "nexus vm",
                Status::Ok,
                format!("{} (from {from})", vm.path()),
            ));
            vm.path()
        }
        Err(e) => {
            out.push(problem(
                "nexus vm",
                e.to_string(),
                "pass --nexus-vm-id with the Nexus VM's resource id",
            ));
            return Ok(out);
        }
    };
    let action = crate::azure::machines::ASSIGN_RELAY_ACTION;
    out.push(match arm.permissions_at(&vm, deadline)? {
        Read::Ok(p) if arm::allowed(&p, action) => finding(
            "assignRelay permission",
            Status::Ok,
            format!("the identity may {action} on {vm}"),
        ),
        Read::Ok(_) => problem(
            "assignRelay permission",
            format!("the identity lacks {action} on {vm}"),
            format!("grant it a role with {action} (a custom role, or Contributor) at scope {vm}"),
        ),
        Read::Denied(d) => finding(
            "assignRelay permission",
            Status::Skipped,
            format!("the token cannot read its permissions on {vm} ({d})"),
        ),
        Read::Unavailable(u) if u.contains("HTTP 404") => problem(
            "nexus vm",
            format!("{vm} was not found: {u}"),
            "check --nexus-vm-id (az networkcloud virtualmachine show --query id)",
        ),
        Read::Unavailable(u) | Read::Refused(u) => finding(
            "assignRelay permission",
            Status::Skipped,
            format!("ARM did not answer: {u}"),
        ),
    });
    Ok(out)
}
