//! What this machine enrolled as: the state file, the machine fingerprint, the clone verdict,
//! and the one-run-at-a-time lock. (STUB: interface fixed, implementation in progress.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::retry::Deadline;

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";

/// What identifies this machine. Values are trimmed and lower-cased; `None` when unreadable/empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub product_uuid: Option<String>,
    pub machine_id: Option<String>,
    /// The VM UUID `azcmagent show` reported at enrollment.
    pub vm_uuid: Option<String>,
}

/// Read `/sys/class/dmi/id/product_uuid` and `/etc/machine-id` under `sysroot`.
pub fn read_fingerprint(sysroot: &Path) -> Fingerprint {
    let _ = sysroot;
    todo!()
}

/// The state file's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub resource_id: String,
    pub resource_name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub tenant_id: String,
    pub location: String,
    pub cloud: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// RFC 3339, UTC.
    pub enrolled_at: String,
    pub agent_version: Option<String>,
    /// "system-assigned", or "user-assigned <selector>".
    pub identity: String,
    pub fingerprint: Fingerprint,
}

#[derive(Debug)]
pub enum Loaded {
    Absent,
    Present(State),
    /// Unreadable or not valid state: reported and treated as absent.
    Corrupt {
        path: PathBuf,
        reason: String,
    },
}

pub fn load(state_dir: &Path) -> Loaded {
    let _ = state_dir;
    todo!()
}

/// Write atomically: 0700 dir, temp file 0600, fsync, rename, fsync dir.
pub fn save(state_dir: &Path, state: &State) -> Result<(), Error> {
    let _ = (state_dir, state);
    todo!()
}

/// Remove the state file; true when there was one.
pub fn clear(state_dir: &Path) -> Result<bool, Error> {
    let _ = state_dir;
    todo!()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneVerdict {
    /// Same machine as at enrollment.
    Same,
    /// Another machine: each entry is one piece of evidence, e.g.
    /// "product_uuid is 1234… but was 5678… at enrollment".
    Clone { evidence: Vec<String> },
}

pub fn clone_verdict(
    state: &State,
    now: &Fingerprint,
    agent_vm_uuid: Option<&str>,
) -> CloneVerdict {
    let _ = (state, now, agent_vm_uuid);
    todo!()
}

/// The run lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

/// Take the lock in `state_dir`, waiting (logged, bounded by the deadline) while another run holds it.
pub fn lock(state_dir: &Path, deadline: &Deadline) -> Result<Lock, Error> {
    let _ = (state_dir, deadline);
    todo!()
}

/// Now as RFC 3339 UTC (`2026-11-23T16:19:27Z`), from Unix seconds.
pub fn rfc3339(unix_secs: u64) -> String {
    let _ = unix_secs;
    todo!()
}
