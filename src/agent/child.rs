//! The agent as a child process: it dies with us (PR_SET_PDEATHSIG), its wait is bounded by the
//! deadline and interruptible, its output is read capped and passed to our log line by line.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::retry::Deadline;
use crate::signals;
use crate::timefmt::human;

/// After SIGTERM, how long the agent gets before SIGKILL.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);
/// How many of the agent's last output lines are kept for error messages.
const TAIL_LINES: usize = 15;
/// Longer agent output lines are cut in our log.
const MAX_LINE_CHARS: usize = 400;
/// At most this many agent output lines per run go into our log line by line; past that only a
/// count and the last `TAIL_LINES` lines, so an agent that prints megabytes (debug noise, a
/// progress bar gone wrong) cannot flood /var/log/cloud-init-output.log.
pub(super) const MAX_LOGGED_LINES: usize = 300;

extern "C" {
    fn prctl(option: i32, arg2: usize, arg3: usize, arg4: usize, arg5: usize) -> i32;
    fn getppid() -> i32;
}
const PR_SET_PDEATHSIG: i32 = 1;

/// The agent gets SIGKILL from the kernel when we die, however we die (a SIGKILLed run used to
/// leave it running with the token): PR_SET_PDEATHSIG, set in the child between fork and exec.
/// The signal follows the thread that spawned the child, so agents are spawned (and waited for)
/// on the main thread only. If we died before the child set it, the child exits at once.
pub(super) fn die_with_us(cmd: &mut Command) {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, signals::SIGKILL as usize, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if getppid() != parent {
                return Err(std::io::Error::other(
                    "arc-enroll exited before the agent started",
                ));
            }
            Ok(())
        });
    }
}

/// Wait for the child at most `limit` (real time). On SIGTERM/SIGINT or at the limit, its
/// process group is stopped (SIGTERM, then SIGKILL after a grace period) and an error returned.
pub(super) fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
    deadline: &Deadline,
    what: &str,
    last: impl FnOnce() -> String,
) -> Result<std::process::ExitStatus, Error> {
    let started = Instant::now();
    let pid = child.id();
    loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Error::Internal(format!("waiting for the agent: {e}")))?
        {
            return Ok(st);
        }
        if let Some(sig) = signals::received() {
            log::warn!("{sig} received: stopping the agent (pid {pid})");
            stop(child, pid);
            return Err(Error::Interrupted { signal: sig });
        }
        if started.elapsed() >= limit {
            log::warn!(
                "`azcmagent {what}` did not finish in time (deadline in {}); stopping it (pid {pid})",
                human(deadline.remaining())
            );
            stop(child, pid);
            return Err(Error::Deadline {
                timeout: deadline.timeout,
                waiting_for: format!("waiting for `azcmagent {what}`"),
                last: last(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) fn read_capped<R: Read>(r: Option<&mut R>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.take(1 << 20).read_to_end(&mut buf);
        // Drain the rest so the child never blocks on a full pipe.
        let _ = std::io::copy(r, &mut std::io::sink());
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub(super) fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// Log each output line as `azcmagent: ...` and keep the last few for error messages.
pub(super) fn pump(
    stream: Box<dyn Read + Send>,
    tail: &Mutex<Vec<String>>,
    redact: &[String],
    logged: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut line = String::from_utf8_lossy(&buf).trim_end().to_string();
        // Progress bars redraw with \r; keep the last state.
        if let Some(i) = line.rfind('\r') {
            line = line[i + 1..].to_string();
        }
        // Colour codes and other controls from the agent stay text in our log.
        line = crate::text::escape_remote(&line).into_owned();
        for r in redact {
            line = line.replace(r.as_str(), "***");
        }
        if line.trim().is_empty() {
            continue;
        }
        if line.chars().count() > MAX_LINE_CHARS {
            line = format!(
                "{}… (cut)",
                line.chars().take(MAX_LINE_CHARS).collect::<String>()
            );
        }
        let n = logged.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= MAX_LOGGED_LINES {
            log::info!("azcmagent: {}", line.trim_start());
        } else if n == MAX_LOGGED_LINES + 1 {
            log::info!(
                "azcmagent: (more than {MAX_LOGGED_LINES} lines of output; the rest is not logged line by line)"
            );
        }
        if let Ok(mut t) = tail.lock() {
            t.push(line.trim().to_string());
            if t.len() > TAIL_LINES {
                t.remove(0);
            }
        }
    }
}

/// SIGTERM the agent's process group, then SIGKILL after the grace period.
fn stop(child: &mut std::process::Child, pid: u32) {
    signals::kill_group(pid, signals::SIGTERM);
    let until = Instant::now() + AGENT_STOP_GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signals::kill_group(pid, signals::SIGKILL);
    let _ = child.wait();
}
