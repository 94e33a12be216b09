//! The record of a machine resource this machine pre-created but has not connected yet
//! (`<state dir>/precreated.json`, 0600): written right after the PUT, removed once the state file
//! records the enrollment. A later run that finds the resource in Azure, not connected, knows it
//! is its own and replaces it (the one-time key was never stored, so it cannot be reused), and
//! says so; without the record an unconnected resource is someone else's. No secret is in it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ensure_private_dir, sync_dir, write_synced};
use crate::error::Error;

pub const PRECREATED_FILE: &str = "precreated.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Precreated {
    pub resource_id: String,
    pub vm_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// This machine's product_uuid when it created it (a clone's record is not its own).
    #[serde(default)]
    pub product_uuid: Option<String>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(PRECREATED_FILE)
}

/// The record, if there is a readable one (an unreadable one is reported and ignored).
pub fn load(state_dir: &Path) -> Option<Precreated> {
    let p = path(state_dir);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("cannot read {}: {e}; ignoring it", p.display());
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            log::warn!("{} is not a valid record ({e}); ignoring it", p.display());
            None
        }
    }
}

/// Write the record atomically (same rules as the state file).
pub fn save(state_dir: &Path, record: &Precreated) -> Result<(), Error> {
    ensure_private_dir(state_dir)?;
    let p = path(state_dir);
    let tmp = state_dir.join(format!(".{PRECREATED_FILE}.tmp.{}", std::process::id()));
    let mut json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Internal(format!("cannot serialize the pre-created record: {e}")))?;
    json.push(b'\n');
    write_synced(&tmp, &json)
        .and_then(|()| fs::rename(&tmp, &p))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("cannot write the pre-created machine record", &p, e)
        })?;
    sync_dir(state_dir).map_err(|e| Error::io("cannot flush the state directory", state_dir, e))
}

/// Remove the record; fine when there is none.
pub fn clear(state_dir: &Path) -> Result<(), Error> {
    match fs::remove_file(path(state_dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            "cannot remove the pre-created machine record",
            path(state_dir),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_privately_and_clears() {
        use std::os::unix::fs::PermissionsExt;
        // A parent of our own under the sticky temp dir, the state dir inside (as `state`'s tests).
        let parent =
            std::env::temp_dir().join(format!("arc-enroll-precreated-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        fs::create_dir_all(&parent).unwrap();
        let dir = parent.join("state");
        assert_eq!(load(&dir), None);
        let r = Precreated {
            resource_id:
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.HybridCompute/machines/m"
                    .into(),
            vm_id: "v".into(),
            created_at: "2026-12-01T10:00:00Z".into(),
            product_uuid: Some("u".into()),
        };
        save(&dir, &r).unwrap();
        assert_eq!(load(&dir), Some(r));
        let mode = fs::metadata(path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        clear(&dir).unwrap();
        clear(&dir).unwrap();
        assert_eq!(load(&dir), None);
        fs::write(path(&dir), "{not json").unwrap();
        assert_eq!(load(&dir), None, "a bad record is ignored");
        let _ = fs::remove_dir_all(&parent);
    }
}
