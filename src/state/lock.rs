//! One run at a time per state directory: an advisory `flock` on `<state dir>/lock`.

use std::fs::TryLockError;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{ensure_private_dir, FILE_MODE};
use crate::error::Error;
use crate::retry::Deadline;
use crate::timefmt::human;

pub const LOCK_FILE: &str = "lock";
/// How often a waiting run retries the lock (virtual time).
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The run lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

/// Take the lock in `state_dir`, waiting (logged, bounded by the deadline) while another run holds it.
///
/// An advisory `flock` on `<state dir>/lock`: the kernel drops it when the holder exits, however it
/// exits, so a killed run never leaves the machine locked. The holder's pid is written into the file
/// for whoever looks.
pub fn lock(state_dir: &Path, deadline: &Deadline) -> Result<Lock, Error> {
    ensure_private_dir(state_dir)?;
    let path = state_dir.join(LOCK_FILE);
    // No truncate on open: the file may belong to a live holder whose pid is in it.
    // O_NOFOLLOW: a link planted as the lock is refused, never followed to a file we then write.
    let mut file = crate::fsafe::open_rw_nofollow(&path, FILE_MODE).map_err(|e| {
        Error::io(
            "cannot open the lock file (a symbolic link is refused)",
            &path,
            e,
        )
    })?;
    let mut logged = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let remaining = deadline.remaining();
                if remaining.is_zero() {
                    return Err(Error::Deadline {
                        timeout: deadline.timeout,
                        waiting_for: format!(
                            "another arc-enroll run to release the lock {}",
                            path.display()
                        ),
                        last: "lock still held".into(),
                    });
                }
                if !logged {
                    log::info!(
                        "another arc-enroll run holds {}; waiting for it (deadline in {})",
                        path.display(),
                        human(remaining)
                    );
                    logged = true;
                }
                deadline.clock.sleep(LOCK_POLL_INTERVAL.min(remaining))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io("cannot lock", &path, e));
            }
        }
    }
    if logged {
        log::info!("got the lock {}", path.display());
    }
    // Diagnostics only: a failure here does not matter to anyone.
    let pid = format!("{}\n", std::process::id());
    if let Err(e) = file
        .set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
    {
        log::debug!("cannot write our pid into {}: {e}", path.display());
    }
    Ok(Lock { _file: file })
}
