//! What this machine enrolled as: the state file (here), the machine fingerprint and the clone
//! verdict (`fingerprint`), and the one-run-at-a-time lock (`lock`).
//!
//! The state file (`<state dir>/state.json`, CONTRACT §5) is written only after a successful
//! enrollment, atomically: a temp file `.state.json.tmp.<pid>` (0600) in the same 0700 directory is
//! written and fsynced, renamed over `state.json`, and the directory is fsynced so the rename itself
//! survives a power cut. A power cut therefore leaves either the old file or the new one, plus at
//! worst a stray temp file, which is never read as state and is cleaned up later. A file that cannot
//! be read or parsed is reported (`Loaded::Corrupt`, with its path and why) and treated as absent.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

mod fingerprint;
mod lock;
pub mod precreated;

pub use fingerprint::{
    clone_verdict, machine_facts, read_fingerprint, same_uuid, CloneVerdict, Fingerprint,
};
pub use lock::{lock, Lock, LOCK_FILE, LOCK_POLL_INTERVAL};

pub const STATE_FILE: &str = "state.json";
/// Schema version written next to the state's fields (`"version": 1`). Files without it (none were
/// ever written) read as version 0; newer versions are read as far as their fields allow.
pub const STATE_VERSION: u32 = 1;
/// Prefix of the temp files `save` writes before renaming; never read as state.
pub const TEMP_PREFIX: &str = ".state.json.tmp.";

pub(super) const DIR_MODE: u32 = 0o700;
/// A state file larger than this is corrupt (a real one is under 2 KiB).
const MAX_STATE_BYTES: u64 = 1 << 20;
pub(super) const FILE_MODE: u32 = 0o600;

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
    /// The machine resource's `vmId` when arc-enroll pre-created it (`--precreate`, FACTS §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    /// How it was enrolled when not by the agent with the token (`precreate`, `private-relay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_via: Option<String>,
}

/// The file as written: the schema version, then the state's own fields.
#[derive(Serialize)]
struct OnDisk<'a> {
    version: u32,
    #[serde(flatten)]
    state: &'a State,
}

#[derive(Deserialize)]
struct OnDiskOwned {
    #[serde(default)]
    version: u32,
    #[serde(flatten)]
    state: State,
}

// One value per run, read once: boxing `State` would only make every caller unbox it.
#[allow(clippy::large_enum_variant)]
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

/// The path of the state file in `state_dir`.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Read the state file. Never fails: what cannot be read or parsed comes back as `Corrupt`, for the
/// caller to report and then treat as absent. Temp files left by a cut-short `save` are never read;
/// those whose writer is gone are removed.
pub fn load(state_dir: &Path) -> Loaded {
    remove_stale_temps(state_dir);
    let path = state_path(state_dir);
    if let Err(e) = check_state_dir(state_dir) {
        return Loaded::Corrupt {
            path,
            reason: e.to_string(),
        };
    }
    let bytes = match crate::fsafe::read_regular(&path, MAX_STATE_BYTES, false) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Absent,
        Err(e) => {
            return Loaded::Corrupt {
                path,
                reason: format!("cannot read it: {e}"),
            }
        }
    };
    match parse(&bytes) {
        Ok(state) => Loaded::Present(state),
        Err(reason) => Loaded::Corrupt { path, reason },
    }
}

fn parse(bytes: &[u8]) -> Result<State, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("the file is empty (a write was probably cut short)".into());
    }
    match serde_json::from_slice::<OnDiskOwned>(bytes) {
        Ok(d) => {
            if d.version > STATE_VERSION {
                log::warn!(
                    "the state file has schema version {} (this arc-enroll writes {STATE_VERSION}); \
                     reading the fields it knows",
                    d.version
                );
            }
            Ok(d.state)
        }
        Err(e) if e.is_data() => Err(format!("not a valid state file: {e}")),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// Write atomically: 0700 dir, temp file 0600, fsync, rename, fsync dir.
pub fn save(state_dir: &Path, state: &State) -> Result<(), Error> {
    ensure_private_dir(state_dir)?;
    remove_stale_temps(state_dir);
    let path = state_path(state_dir);
    let tmp = state_dir.join(format!("{TEMP_PREFIX}{}", std::process::id()));
    let mut json = serde_json::to_vec_pretty(&OnDisk {
        version: STATE_VERSION,
        state,
    })
    .map_err(|e| Error::Internal(format!("cannot serialize the state: {e}")))?;
    json.push(b'\n');

    let written = write_synced(&tmp, &json)
        .map_err(|e| Error::io("cannot write the temporary state file", &tmp, e))
        .and_then(|()| {
            fs::rename(&tmp, &path).map_err(|e| {
                Error::io(
                    format!("cannot rename {} over the state file", tmp.display()),
                    &path,
                    e,
                )
            })
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(state_dir)
        .map_err(|e| Error::io("cannot flush the state directory to disk", state_dir, e))
}

/// A fresh 0600 file with `bytes`, flushed to disk.
pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // create_new: never reuse a file someone else created (with other permissions) under this name.
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(crate::fsafe::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` (0700) if missing; narrow it to 0700 if it exists with wider permissions: it is
/// ours, and the state names the machine's Azure resource.
pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    check_state_dir(dir)?;
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("cannot create the state directory", dir, e))?;
    // Again now that it exists (a link could have appeared in between).
    check_state_dir(dir)?;
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| Error::io("cannot inspect the state directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "the state directory is not a directory:",
            dir,
            io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
        ));
    }
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io("cannot set mode 0700 on the state directory", dir, e))?;
    }
    Ok(())
}

/// The state directory is not a symbolic link, and neither it nor a directory above it can be
/// changed by a non-root user other than us (sshd StrictModes): whoever could would decide what
/// this machine believes it enrolled as, and could swap the lock for a link.
pub fn check_state_dir(dir: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::invalid(
                "state_dir",
                dir.display().to_string(),
                "the state directory",
                "is a symbolic link, which is refused (it could lead anywhere); \
                 use the real directory as --state-dir",
            ))
        }
        _ => {}
    }
    crate::fsafe::untrusted(dir).map_err(|why| {
        Error::invalid(
            "state_dir",
            dir.display().to_string(),
            "the state directory",
            format!(
                "another user could change it: {why}; make it and its parents owned by root \
                 and not group- or world-writable, or choose another --state-dir"
            ),
        )
    })
}

/// Remove temp files left by a `save` that did not finish (power cut, kill -9): those whose writer
/// process is gone. A live writer's file is left alone, so a reader that does not hold the lock
/// (`status`) never removes a temp file a running enrollment is about to rename; our own is
/// replaced by the next `save`.
fn remove_stale_temps(state_dir: &Path) {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let stale = match pid.parse::<u32>() {
            Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        };
        if !stale {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => log::info!(
                "removed {}, left by a state write that did not finish (it was never used as state)",
                path.display()
            ),
            Err(e) => log::warn!(
                "cannot remove {}, left by a state write that did not finish: {e}",
                path.display()
            ),
        }
    }
}

/// Remove the state file; true when there was one.
pub fn clear(state_dir: &Path) -> Result<bool, Error> {
    let path = state_path(state_dir);
    let existed = match fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("cannot remove the state file", &path, e)),
    };
    remove_stale_temps(state_dir);
    precreated::clear(state_dir)?;
    if existed {
        sync_dir(state_dir)
            .map_err(|e| Error::io("cannot flush the state directory to disk", state_dir, e))?;
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::retry::Clock;
    use crate::retry::Deadline;
    use std::fs::Permissions;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!(
                "arc-enroll-state-test-{}-{n}-{tag}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        /// The state dir inside (not yet created), so `save` creates it.
        fn state_dir(&self) -> PathBuf {
            self.0.join("state")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::set_permissions(
                self.0.join("state/state.json"),
                Permissions::from_mode(0o600),
            );
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample() -> State {
        State {
            resource_id: "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/vm1".into(),
            resource_name: "vm1".into(),
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg".into(),
            tenant_id: "00000000-0000-0000-0000-000000000002".into(),
            location: "westeurope".into(),
            cloud: "AzureCloud".into(),
            tags: BTreeMap::from([("env".to_string(), "test".to_string())]),
            enrolled_at: "2026-11-23T16:19:27Z".into(),
            agent_version: Some("1.58.03228.2572".into()),
            identity: "system-assigned".into(),
            fingerprint: Fingerprint {
                product_uuid: Some("11111111-2222-3333-4444-555555555555".into()),
                machine_id: Some("0123456789abcdef0123456789abcdef".into()),
                vm_uuid: Some("11111111-2222-3333-4444-555555555555".into()),
            },
            vm_id: None,
            enrolled_via: None,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn is_root() -> bool {
        // Root reads files whatever their mode; no libc crate, so ask /proc.
        fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2))
                    == Some("0")
            })
            .unwrap_or(false)
    }

    fn corrupt_reason(l: Loaded, dir: &Path) -> String {
        match l {
            Loaded::Corrupt { path, reason } => {
                assert_eq!(path, dir.join(STATE_FILE));
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let t = TempDir::new("roundtrip");
        let dir = t.state_dir();
        assert!(matches!(load(&dir), Loaded::Absent));
        save(&dir, &sample()).unwrap();
        match load(&dir) {
            Loaded::Present(s) => assert_eq!(s, sample()),
            other => panic!("expected Present, got {other:?}"),
        }
        // Overwrite with a changed state.
        let mut s2 = sample();
        s2.resource_name = "vm2".into();
        save(&dir, &s2).unwrap();
        assert!(matches!(load(&dir), Loaded::Present(s) if s == s2));
        let text = fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
    }

    #[test]
    fn state_file_is_0600_in_a_0700_dir_even_if_the_dir_was_wider() {
        let t = TempDir::new("modes");
        let dir = t.state_dir();
        save(&dir, &sample()).unwrap();
        assert_eq!(mode(&dir), 0o700, "new dir");
        assert_eq!(mode(&dir.join(STATE_FILE)), 0o600, "state file");
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        save(&dir, &sample()).unwrap();
        assert_eq!(mode(&dir), 0o700, "existing wide dir is narrowed");
        assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != STATE_FILE)
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn missing_optional_fields_load_and_unknown_fields_are_ignored() {
        let t = TempDir::new("compat");
        let dir = t.state_dir();
        fs::create_dir_all(&dir).unwrap();
        let mut v = serde_json::to_value(sample()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("tags");
        obj.remove("agent_version");
        obj.insert("version".into(), 7.into());
        obj.insert("added_later".into(), "x".into());
        fs::write(dir.join(STATE_FILE), v.to_string()).unwrap();
        match load(&dir) {
            Loaded::Present(s) => {
                assert!(s.tags.is_empty());
                assert_eq!(s.agent_version, None);
                assert_eq!(s.resource_name, "vm1");
            }
            other => panic!("expected Present, got {other:?}"),
        }
    }

    #[test]
    fn invalid_json_is_corrupt_with_its_position() {
        let t = TempDir::new("badjson");
        let dir = t.state_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), "{\"resource_id\": ").unwrap();
        let r = corrupt_reason(load(&dir), &dir);
        assert!(r.starts_with("not valid JSON"), "{r}");
        assert!(r.contains("line 1 column"), "{r}");
        fs::write(dir.join(STATE_FILE), "{nope}").unwrap();
        let r = corrupt_reason(load(&dir), &dir);
        assert!(r.starts_with("not valid JSON"), "{r}");
    }

    #[test]
    fn missing_field_is_corrupt_and_names_the_field() {
        let t = TempDir::new("missing");
        let dir = t.state_dir();
        fs::create_dir_all(&dir).unwrap();
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("resource_id");
        fs::write(dir.join(STATE_FILE), v.to_string()).unwrap();
        let r = corrupt_reason(load(&dir), &dir);
        assert!(r.contains("not a valid state file"), "{r}");
        assert!(r.contains("resource_id"), "{r}");
        fs::write(dir.join(STATE_FILE), "[1, 2]").unwrap();
        let r = corrupt_reason(load(&dir), &dir);
        assert!(r.contains("not a valid state file"), "{r}");
    }

    #[test]
    fn empty_or_whitespace_file_is_corrupt() {
        let t = TempDir::new("empty");
        let dir = t.state_dir();
        fs::create_dir_all(&dir).unwrap();
        for content in ["", "  \n\t\n"] {
            fs::write(dir.join(STATE_FILE), content).unwrap();
            let r = corrupt_reason(load(&dir), &dir);
            assert!(r.contains("empty"), "{content:?}: {r}");
        }
    }

    #[test]
    fn unreadable_file_is_corrupt_not_a_crash() {
        let t = TempDir::new("unreadable");
        let dir = t.state_dir();
        save(&dir, &sample()).unwrap();
        fs::set_permissions(dir.join(STATE_FILE), Permissions::from_mode(0o000)).unwrap();
        let l = load(&dir);
        if is_root() {
            // Root reads a mode-000 file anyway, so there is nothing to observe; it must still load.
            assert!(matches!(l, Loaded::Present(_)), "{l:?}");
        } else {
            let r = corrupt_reason(l, &dir);
            assert!(r.to_lowercase().contains("permission denied"), "{r}");
        }
        // A directory where the file should be is unreadable for root too.
        let t2 = TempDir::new("isdir");
        let dir2 = t2.state_dir();
        fs::create_dir_all(dir2.join(STATE_FILE)).unwrap();
        let r = corrupt_reason(load(&dir2), &dir2);
        assert!(r.starts_with("cannot read it"), "{r}");
    }

    #[test]
    fn leftover_temp_file_is_never_read_and_is_cleaned() {
        let t = TempDir::new("temp");
        let dir = t.state_dir();
        fs::create_dir_all(&dir).unwrap();
        // A power cut mid-write: a temp file from a dead writer (pid far above pid_max), no state.
        let dead = dir.join(format!("{TEMP_PREFIX}4999999"));
        fs::write(&dead, serde_json::to_vec(&sample()).unwrap()).unwrap();
        assert!(matches!(load(&dir), Loaded::Absent));
        assert!(!dead.exists(), "a dead writer's temp file is removed");

        // A half-written temp next to a good state file: the state file wins.
        save(&dir, &sample()).unwrap();
        fs::write(&dead, "{\"resource_id\": \"/half").unwrap();
        assert!(matches!(load(&dir), Loaded::Present(s) if s == sample()));

        // A live writer's temp file (ours) is left alone by load, replaced by save.
        let live = dir.join(format!("{TEMP_PREFIX}{}", std::process::id()));
        fs::write(&live, "{").unwrap();
        assert!(matches!(load(&dir), Loaded::Present(_)));
        assert!(
            live.exists(),
            "load must not remove a live writer's temp file"
        );
        save(&dir, &sample()).unwrap();
        assert!(!live.exists(), "save removes leftover temp files");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "only state.json");
    }

    #[test]
    fn clear_removes_the_file_and_says_whether_there_was_one() {
        let t = TempDir::new("clear");
        let dir = t.state_dir();
        assert!(!clear(&dir).unwrap(), "no dir at all");
        save(&dir, &sample()).unwrap();
        fs::write(dir.join(format!("{TEMP_PREFIX}4999999")), "{").unwrap();
        assert!(clear(&dir).unwrap());
        assert!(matches!(load(&dir), Loaded::Absent));
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "temp files removed too"
        );
        assert!(!clear(&dir).unwrap());
    }

    #[test]
    fn fingerprint_is_trimmed_lower_cased_and_none_when_missing() {
        let t = TempDir::new("fp");
        let root = &t.0;
        assert_eq!(
            read_fingerprint(root),
            Fingerprint::default(),
            "nothing there"
        );
        fs::create_dir_all(root.join("sys/class/dmi/id")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("sys/class/dmi/id/product_uuid"),
            "EC2A1B3C-0000-4D5E-8F90-ABCDEF012345\n",
        )
        .unwrap();
        fs::write(root.join("etc/machine-id"), "  \n").unwrap();
        let fp = read_fingerprint(root);
        assert_eq!(
            fp.product_uuid.as_deref(),
            Some("ec2a1b3c-0000-4d5e-8f90-abcdef012345")
        );
        assert_eq!(fp.machine_id, None, "whitespace-only is None");
        assert_eq!(fp.vm_uuid, None);
        fs::write(
            root.join("etc/machine-id"),
            "0123456789ABCDEF0123456789abcdef\n",
        )
        .unwrap();
        assert_eq!(
            read_fingerprint(root).machine_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    fn fp(product_uuid: Option<&str>, machine_id: Option<&str>) -> Fingerprint {
        Fingerprint {
            product_uuid: product_uuid.map(String::from),
            machine_id: machine_id.map(String::from),
            vm_uuid: None,
        }
    }

    #[test]
    fn clone_verdict_table() {
        const U1: &str = "11111111-2222-3333-4444-555555555555";
        const U2: &str = "22222222-2222-3333-4444-555555555555";
        const M1: &str = "0123456789abcdef0123456789abcdef";
        const M2: &str = "fedcba9876543210fedcba9876543210";
        // One UUID, the second spelling with its first three groups byte-reversed, as Azure Gen1
        // reports its vmId (FACTS §3).
        const SWAP_A: &str = "00112233-4455-6677-8899-aabbccddeeff";
        const SWAP_B: &str = "33221100-5544-7766-8899-aabbccddeeff";

        let base = sample(); // product_uuid U1, machine_id M1, vm_uuid U1
        let with_then = |p: Option<&str>, m: Option<&str>, v: Option<&str>| {
            let mut s = sample();
            s.fingerprint = fp(p, m);
            s.fingerprint.vm_uuid = v.map(String::from);
            s
        };

        // (case, state, now, agent VM UUID, expected evidence substrings; empty = Same)
        type Case = (
            &'static str,
            State,
            Fingerprint,
            Option<String>,
            Vec<String>,
        );
        let cases: Vec<Case> = vec![
            (
                "same machine",
                base.clone(),
                fp(Some(U1), Some(M1)),
                Some(U1.to_string()),
                vec![],
            ),
            (
                "same, no agent answer",
                base.clone(),
                fp(Some(U1), Some(M1)),
                None,
                vec![],
            ),
            (
                "product_uuid differs",
                base.clone(),
                fp(Some(U2), Some(M1)),
                None,
                vec![format!(
                    "product_uuid is {U2} now but was {U1} at enrollment"
                )],
            ),
            (
                "machine-id differs",
                base.clone(),
                fp(Some(U1), Some(M2)),
                None,
                vec![format!("machine-id is {M2} now but was {M1} at enrollment")],
            ),
            (
                "both differ, agent still reports the parent",
                base.clone(),
                fp(Some(U2), Some(M2)),
                Some(U1.to_string()),
                vec![
                    "product_uuid is 2222".to_string(),
                    "machine-id is fedc".to_string(),
                    format!(
                        "the agent reports VM UUID {U1}, but this machine's product_uuid is {U2}"
                    ),
                ],
            ),
            (
                "agent VM UUID differs from product_uuid",
                base.clone(),
                fp(Some(U1), Some(M1)),
                Some(U2.to_string()),
                vec![format!(
                    "the agent reports VM UUID {U2}, but this machine's product_uuid is {U1}"
                )],
            ),
            (
                "byte-swapped agent VM UUID is the same UUID",
                with_then(Some(SWAP_A), Some(M1), Some(SWAP_B)),
                fp(Some(SWAP_A), Some(M1)),
                Some(SWAP_B.to_string()),
                vec![],
            ),
            (
                "byte-swapped the other way round",
                with_then(Some(SWAP_B), Some(M1), None),
                fp(Some(SWAP_B), Some(M1)),
                Some(SWAP_A.to_string()),
                vec![],
            ),
            (
                "swapping the last groups too is not the same UUID",
                with_then(Some(SWAP_A), Some(M1), None),
                fp(Some(SWAP_A), Some(M1)),
                Some(String::from("33221100-5544-7766-9988-ffeeddccbbaa")),
                vec!["the agent reports VM UUID 33221100-5544-7766-9988-ffeeddccbbaa".to_string()],
            ),
            (
                "unreadable now is not evidence",
                base.clone(),
                fp(None, None),
                None,
                vec![],
            ),
            (
                "nothing recorded at enrollment is not evidence",
                with_then(None, None, None),
                fp(Some(U2), Some(M2)),
                None,
                vec![],
            ),
            (
                "case and whitespace do not matter",
                with_then(Some(&U1.to_uppercase()), Some(M1), None),
                fp(Some(U1), Some(&format!(" {}\n", M1.to_uppercase()))),
                Some(format!(" {} ", U1.to_uppercase())),
                vec![],
            ),
            (
                "empty agent answer is no answer",
                base.clone(),
                fp(Some(U1), Some(M1)),
                Some("  ".to_string()),
                vec![],
            ),
            (
                "product_uuid unreadable: agent compared with what it reported then",
                base.clone(),
                fp(None, Some(M1)),
                Some(U2.to_string()),
                vec![format!(
                    "the agent reports VM UUID {U2} now but reported {U1} at enrollment"
                )],
            ),
            (
                "product_uuid unreadable, agent unchanged",
                base.clone(),
                fp(None, Some(M1)),
                Some(U1.to_string()),
                vec![],
            ),
        ];

        for (case, state, now, agent, want) in cases {
            let got = clone_verdict(&state, &now, agent.as_deref());
            if want.is_empty() {
                assert_eq!(got, CloneVerdict::Same, "{case}");
                continue;
            }
            let CloneVerdict::Clone { evidence } = got else {
                panic!("{case}: expected Clone, got Same");
            };
            assert_eq!(evidence.len(), want.len(), "{case}: {evidence:?}");
            for (e, w) in evidence.iter().zip(&want) {
                assert!(e.contains(w), "{case}: {e:?} should contain {w:?}");
            }
        }
    }

    #[test]
    fn byte_swap_only_applies_to_well_formed_uuids() {
        assert!(same_uuid(
            "00112233-4455-6677-8899-AABBCCDDEEFF",
            "33221100-5544-7766-8899-aabbccddeeff"
        ));
        assert!(!same_uuid("not-a-uuid", "uuid-a-not"));
        assert!(!same_uuid("0011-2233", "1100-3322"));
    }

    #[test]
    fn second_lock_waits_then_hits_the_deadline() {
        let t = TempDir::new("lock-deadline");
        let dir = t.state_dir();
        let clock = Clock::with_scale(100.0);
        let first = lock(&dir, &Deadline::new(clock, Duration::from_secs(10))).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        let pid = fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let clock = Clock::with_scale(100.0);
        let deadline = Deadline::new(clock, Duration::from_secs(3));
        let err = lock(&dir, &deadline).unwrap_err();
        match &err {
            Error::Deadline {
                timeout,
                waiting_for,
                last,
            } => {
                assert_eq!(*timeout, Duration::from_secs(3));
                assert!(
                    waiting_for.contains("another arc-enroll run"),
                    "{waiting_for}"
                );
                assert!(waiting_for.contains(&dir.join(LOCK_FILE).display().to_string()));
                assert_eq!(last, "lock still held");
            }
            other => panic!("expected Deadline, got {other:?}"),
        }
        let waited = clock.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(6),
            "waited {waited:?} of virtual time"
        );
        drop(first);
    }

    #[test]
    fn second_lock_gets_it_once_the_first_is_dropped() {
        let t = TempDir::new("lock-release");
        let dir = t.state_dir();
        let first = lock(
            &dir,
            &Deadline::new(Clock::with_scale(100.0), Duration::from_secs(10)),
        )
        .unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
        });
        let clock = Clock::with_scale(100.0);
        let second = lock(&dir, &Deadline::new(clock, Duration::from_secs(600)));
        releaser.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
        assert!(clock.elapsed() < Duration::from_secs(600));
        // And a third attempt now waits for the second.
        let third = lock(
            &dir,
            &Deadline::new(Clock::with_scale(100.0), Duration::from_millis(500)),
        );
        assert!(matches!(third, Err(Error::Deadline { .. })), "{third:?}");
    }
}
