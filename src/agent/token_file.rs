//! The secret file for one agent run (`--config`, key `access-token`, FACTS §1.3, or
//! `private-key` for `connect existing`, FACTS §10): 0600 in a fresh
//! 0700 directory on a tmpfs, removed when the attempt ends, so the token is never in the process
//! table; and the clean-up of directories left by runs that died.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::identity::token::AccessToken;

/// The token file for one agent run: 0600 in a fresh 0700 directory; both removed on drop.
pub struct TokenFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TokenFile {
    pub fn write(token: &AccessToken) -> Result<TokenFile, Error> {
        TokenFile::write_entry("access-token", token.expose())
    }

    /// A `{key: value}` JSON file for the agent's `--config` (keys are its option names): the
    /// token, or a pre-created machine's private key (`private-key`, FACTS §10).
    pub fn write_entry(key: &str, value: &str) -> Result<TokenFile, Error> {
        let dir = token_base().join(format!(
            "{TOKEN_DIR_PREFIX}{}-{}",
            std::process::id(),
            nonce()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::io(
                    "cannot create the private directory for the token file",
                    &dir,
                    e,
                )
            })?;
        let path = dir.join("connect.json");
        let file = TokenFile { dir, path };
        // Built from zeroed parts: no intermediate JSON value keeps a copy of the secret.
        let quoted = zeroize::Zeroizing::new(serde_json::to_string(value).unwrap_or_default());
        let body = zeroize::Zeroizing::new(format!(
            "{{{}:{}}}",
            serde_json::Value::from(key),
            quoted.as_str()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file.path)
            .map_err(|e| Error::io("cannot create the token file", &file.path, e))?;
        std::io::Write::write_all(&mut f, body.as_bytes())
            .map_err(|e| Error::io("cannot write the token file", &file.path, e))?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Token directories are `<base>/arc-enroll-<pid>-<nonce>`.
const TOKEN_DIR_PREFIX: &str = "arc-enroll-";

/// Where token directories are made: `ARC_ENROLL_RUNTIME_DIR` when set (tests), else `/run` (a
/// tmpfs), else `/dev/shm`, else the temp dir.
pub fn token_base() -> PathBuf {
    if let Some(d) = std::env::var_os("ARC_ENROLL_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    ["/run", "/dev/shm"]
        .iter()
        .map(PathBuf::from)
        .find(|p| writable_dir(p))
        .unwrap_or_else(std::env::temp_dir)
}

/// Remove the token directories of runs that died without removing theirs (SIGKILL, power cut
/// on a persistent /run): a token in them stays valid for up to 24 hours. Only directories that
/// match our naming exactly, are ours (uid, mode 0700, not a link) and whose pid is gone, or now
/// belongs to a process that started after the directory was made (pid reuse), are removed.
/// Called at the start of every command that may write one.
pub fn remove_stale_token_dirs() {
    let base = token_base();
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(token_dir_pid) else {
            continue;
        };
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        if !m.is_dir() || m.uid() != crate::fsafe::euid() || m.mode() & 0o777 != 0o700 {
            continue;
        }
        if pid == std::process::id() || !stale(pid, m.mtime()) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => log::info!(
                "removed {}: a token directory left by arc-enroll run {pid}, which is gone",
                path.display()
            ),
            Err(e) => log::warn!(
                "cannot remove {}, a token directory left by arc-enroll run {pid}: {e}",
                path.display()
            ),
        }
    }
}

/// `arc-enroll-<pid>-<nonce>` (both decimal) -> pid.
fn token_dir_pid(name: &str) -> Option<u32> {
    let (pid, nonce) = name.strip_prefix(TOKEN_DIR_PREFIX)?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(nonce) && nonce.parse::<u64>().is_ok())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Is run `pid`, which made its directory at `made` (Unix seconds), gone? Gone when there is no
/// such process, or the process with that pid started after the directory was made.
fn stale(pid: u32, made: i64) -> bool {
    match process_start_unix(pid) {
        None => !Path::new(&format!("/proc/{pid}")).exists(),
        // A second of slack: the start time is in clock ticks, the mtime in seconds.
        Some(start) => start > made + 1,
    }
}

/// When process `pid` started, in Unix seconds (`/proc/<pid>/stat` field 22 and `btime`).
fn process_start_unix(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: i64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + ticks / clock_ticks())
}

fn clock_ticks() -> i64 {
    extern "C" {
        // long sysconf(int): `long` is pointer-sized on Linux.
        fn sysconf(name: i32) -> isize;
    }
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as i64
    } else {
        100
    }
}

fn writable_dir(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .map(|m| m.is_dir() && (m.uid() == current_uid() || m.mode() & 0o002 != 0))
        .unwrap_or(false)
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_dirs_are_recognised_exactly_and_pid_reuse_is_seen() {
        assert_eq!(token_dir_pid("arc-enroll-123-456"), Some(123));
        for bad in [
            "arc-enroll-123",
            "arc-enroll--456",
            "arc-enroll-12a-456",
            "arc-enroll-123-456-7",
            "arc-enroll-123-",
            "xarc-enroll-1-2",
            "arc-enroll-99999999999-1",
        ] {
            assert_eq!(token_dir_pid(bad), None, "{bad}");
        }
        let me = std::process::id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(!stale(me, now), "a live run's directory is kept");
        assert!(
            stale(me, 1_000),
            "made long before this pid's process started: pid reused"
        );
        assert!(stale(u32::MAX - 1, now), "no such process");
    }

    #[test]
    fn token_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let t = AccessToken::new("tok.en.value".into()).unwrap();
        let f = TokenFile::write(&t).unwrap();
        let p = f.path().to_path_buf();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!((mode, dmode), (0o600, 0o700));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["access-token"], "tok.en.value");
        drop(f);
        assert!(!p.exists() && !p.parent().unwrap().exists());
    }
}
