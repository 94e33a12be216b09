//! What this machine is: its fingerprint (`product_uuid`, `machine-id`), its facts for the
//! resource-name template, and the clone verdict (FACTS §3): a machine cloned from an enrolled
//! golden image carries our state file and the agent's identity, so what the machine is now is
//! compared with what it was at enrollment.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::State;
use crate::config::MachineFacts;

/// What identifies this machine. Values are trimmed and lower-cased; `None` when unreadable/empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub product_uuid: Option<String>,
    pub machine_id: Option<String>,
    /// The VM UUID `azcmagent show` reported at enrollment.
    pub vm_uuid: Option<String>,
}

/// Read `/sys/class/dmi/id/product_uuid` and `/etc/machine-id` under `sysroot`.
///
/// Kernels before 4.15 print `product_uuid` in upper case (FACTS §3), so values are lower-cased to
/// keep comparisons stable across kernel upgrades. `product_uuid` is readable by root only.
pub fn read_fingerprint(sysroot: &Path) -> Fingerprint {
    let read = |rel: &str| -> Option<String> {
        let path = sysroot.join(rel);
        // No link inside a mounted image is followed; bounded; not UTF-8 reads as unreadable.
        match crate::fsafe::read_inside(sysroot, Path::new(rel), 4096) {
            Ok(s) => normalize(&s),
            Err(e) => {
                log::debug!("cannot read {}: {e}", path.display());
                None
            }
        }
    };
    Fingerprint {
        product_uuid: read("sys/class/dmi/id/product_uuid"),
        machine_id: read("etc/machine-id"),
        vm_uuid: None,
    }
}

/// The machine's identity facts under `sysroot` (for resource-name templates) with its
/// fingerprint (for the clone verdict): both come from the same files.
pub fn machine_facts(sysroot: &Path) -> (MachineFacts, Fingerprint) {
    let fp = read_fingerprint(sysroot);
    let facts = MachineFacts {
        hostname: crate::config::read_hostname(sysroot),
        product_uuid: fp.product_uuid.clone(),
        machine_id: fp.machine_id.clone(),
        instance_id: None,
    };
    (facts, fp)
}

/// Trimmed and lower-cased; `None` when nothing is left.
pub(super) fn normalize(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_ascii_lowercase())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneVerdict {
    /// Same machine as at enrollment.
    Same,
    /// Another machine: each entry is one piece of evidence, e.g.
    /// "product_uuid is 1234… but was 5678… at enrollment".
    Clone { evidence: Vec<String> },
}

/// Is this the machine that enrolled? Pure: compares `now` (see `read_fingerprint`) and the VM UUID
/// the agent reports now with what the state recorded. A value that cannot be read now is not
/// evidence either way; only two known values that differ are.
pub fn clone_verdict(
    state: &State,
    now: &Fingerprint,
    agent_vm_uuid: Option<&str>,
) -> CloneVerdict {
    let then = &state.fingerprint;
    let known = |v: &Option<String>| v.as_deref().and_then(normalize);
    let mut evidence = Vec::new();

    for (name, was, is) in [
        ("product_uuid", &then.product_uuid, &now.product_uuid),
        ("machine-id", &then.machine_id, &now.machine_id),
    ] {
        if let (Some(was), Some(is)) = (known(was), known(is)) {
            if was != is {
                evidence.push(format!("{name} is {is} now but was {was} at enrollment"));
            }
        }
    }

    let agent = agent_vm_uuid.and_then(normalize);
    if let Some(agent) = &agent {
        if let Some(here) = known(&now.product_uuid) {
            if !same_uuid(agent, &here) {
                evidence.push(format!(
                    "the agent reports VM UUID {agent}, but this machine's product_uuid is {here}"
                ));
            }
        } else if let Some(was) = known(&then.vm_uuid) {
            // product_uuid unreadable now: the agent's view is the only one we have.
            if !same_uuid(agent, &was) {
                evidence.push(format!(
                    "the agent reports VM UUID {agent} now but reported {was} at enrollment"
                ));
            }
        }
    }

    if evidence.is_empty() {
        CloneVerdict::Same
    } else {
        CloneVerdict::Clone { evidence }
    }
}

/// Two spellings of one UUID: equal ignoring case, or equal once the first three groups are
/// byte-reversed — Azure Gen1 VMs report their vmId as a byte-swapped SMBIOS UUID (FACTS §3).
pub fn same_uuid(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    a == b || byte_swapped(&a).is_some_and(|s| s == b)
}

/// `00112233-4455-6677-8899-aabbccddeeff` -> `33221100-5544-7766-8899-aabbccddeeff`, for a
/// well-formed UUID only.
fn byte_swapped(uuid: &str) -> Option<String> {
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != 5
        || groups
            .iter()
            .zip(lens)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    let reverse = |g: &str| -> String {
        let pairs: Vec<&str> = (0..g.len()).step_by(2).map(|i| &g[i..i + 2]).collect();
        pairs.into_iter().rev().collect()
    };
    Some(format!(
        "{}-{}-{}-{}-{}",
        reverse(groups[0]),
        reverse(groups[1]),
        reverse(groups[2]),
        groups[3],
        groups[4]
    ))
}
