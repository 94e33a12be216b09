//! Running the Azure Connected Machine agent (`azcmagent`): finding it, running it with a bounded
//! wait, passing it the token (FACTS §1–§2). Its arguments are built in `args`, its answers read
//! in `exit_codes` and `show`.
//!
//! The token reaches the agent through `--config FILE` (key `access-token`, FACTS §1.3), a 0600
//! file in a 0700 directory that is removed when the attempt ends, so the token is never in the
//! process table. The agent's output is passed into our log line by line (secrets scrubbed).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    connect_args, connect_existing_args, parse_config_value, parse_version, Outcome, Show, Target,
    TokenFile, TokenMode,
};
use crate::azure::proxy::{agent_no_proxy, ProxyConfig, ProxyUrl, Route};
use crate::error::Error;
use crate::identity::token::AccessToken;
use crate::retry::Deadline;
use crate::secret::PrivateKey;
use crate::signals;
use crate::timefmt::human;

pub const DEFAULT_AGENT_PATH: &str = "/opt/azcmagent/bin/azcmagent";
/// One `azcmagent connect`: "This might take a few minutes" (FACTS §1.6).
pub const AGENT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `show`, `version`, `config`, `disconnect --force-local-only`: local operations.
pub const AGENT_QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGTERM, how long the agent gets before SIGKILL.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);
/// How many of the agent's last output lines are kept for error messages.
const TAIL_LINES: usize = 15;
/// Longer agent output lines are cut in our log.
const MAX_LINE_CHARS: usize = 400;
/// At most this many agent output lines per run go into our log line by line; past that only a
/// count and the last `TAIL_LINES` lines, so an agent that prints megabytes (debug noise, a
/// progress bar gone wrong) cannot flood /var/log/cloud-init-output.log.
const MAX_LOGGED_LINES: usize = 300;

/// Where the agent is: an explicit path, else `azcmagent` on PATH, else the package's path.
pub fn locate(explicit: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("azcmagent");
            if is_executable(&cand) {
                return Some(cand);
            }
        }
    }
    let p = PathBuf::from(DEFAULT_AGENT_PATH);
    is_executable(&p).then_some(p)
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Variables of our environment the agent must not inherit: GitHub Actions' ID-token request
/// token (`--token-source github`) can mint tokens for the job, and the agent has no use for it.
pub const AGENT_ENV_REMOVED: &[&str] = &[
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
];

/// The agent and the environment it runs with.
pub struct Agent {
    pub path: PathBuf,
    env: Vec<(String, String)>,
    /// Strings never to be logged (proxy passwords, the token of the current attempt).
    redact: Vec<String>,
}

impl Agent {
    /// The agent's environment: NO_PROXY extended with IMDS and loopback (so its local service
    /// calls stay local, CONTRACT §3), and the proxy for Azure when one applies.
    pub fn new(path: PathBuf, proxy: &ProxyConfig, arm_endpoint: &str) -> Agent {
        let no_proxy = agent_no_proxy(proxy.no_proxy.as_ref().map(|(v, _)| v.as_str()));
        let mut env = vec![
            ("NO_PROXY".to_string(), no_proxy.clone()),
            ("no_proxy".to_string(), no_proxy),
        ];
        let mut redact = Vec::new();
        if let Route::Via { proxy: p, .. } = proxy.route(arm_endpoint) {
            let url = p.with_credentials();
            env.push(("HTTPS_PROXY".into(), url.clone()));
            env.push(("https_proxy".into(), url));
            // Decoded and percent-encoded: the agent may echo the URL as it was given.
            redact.extend(p.password_forms());
        }
        Agent { path, env, redact }
    }

    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Run the agent with `args`, waiting at most `cap` (and never past the deadline). On SIGTERM/
    /// SIGINT the agent's process group is stopped and `Interrupted` returned.
    pub fn run(
        &self,
        args: &[String],
        deadline: &Deadline,
        cap: Duration,
        extra_redact: &[&str],
    ) -> Result<Outcome, Error> {
        let shown: Vec<String> = args.iter().map(|a| self.scrub(a, extra_redact)).collect();
        log::info!("running {} {}", self.path.display(), shown.join(" "));
        let started = Instant::now();
        let mut child = self.spawn(args)?;
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        let logged = Arc::new(AtomicUsize::new(0));
        let mut redact: Vec<String> = self.redact.clone();
        redact.extend(
            extra_redact
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string()),
        );
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let tail = tail.clone();
            let redact = redact.clone();
            let logged = logged.clone();
            std::thread::spawn(move || pump(stream, &tail, &redact, &logged))
        })
        .collect();

        // The agent's own time-out is the deadline's: a hung agent is a deadline failure.
        let limit = deadline.clock.real(deadline.bounded(cap));
        // Name only the subcommand: the arguments may hold the token (--token-on-command-line).
        let what = args.first().map(String::as_str).unwrap_or("");
        let status = wait_bounded(&mut child, limit, deadline, what, || {
            let last = tail.lock().map(|t| t.join(" | ")).unwrap_or_default();
            if last.is_empty() {
                "no output".into()
            } else {
                last
            }
        })?;
        for r in readers {
            let _ = r.join();
        }
        let tail = tail.lock().map(|t| t.clone()).unwrap_or_default();
        let lines = logged.load(Ordering::Relaxed);
        if lines > MAX_LOGGED_LINES {
            log::info!(
                "azcmagent: ({} more lines of output not shown; its last {} lines were:)",
                lines - MAX_LOGGED_LINES,
                tail.len()
            );
            for l in &tail {
                log::info!("azcmagent: {l}");
            }
        }
        Ok(Outcome {
            code: status.code(),
            signal: status.signal(),
            tail,
            elapsed: started.elapsed(),
        })
    }

    fn scrub(&self, s: &str, extra: &[&str]) -> String {
        let mut s = s.to_string();
        for r in self
            .redact
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            if !r.is_empty() {
                s = s.replace(r, "***");
            }
        }
        s
    }

    /// `azcmagent connect` with a token. The token file (if used) is removed before returning.
    pub fn connect(
        &self,
        target: &Target,
        token: &AccessToken,
        mode: TokenMode,
        deadline: &Deadline,
    ) -> Result<Outcome, Error> {
        let mut args = connect_args(target);
        self.with_token(&mut args, token, mode, |args| {
            self.run(args, deadline, AGENT_ATTEMPT_TIMEOUT, &[token.expose()])
        })
    }

    /// `azcmagent connect existing` with the one-time private key: in a 0600 `--config` file
    /// (key `private-key`), or on argv with `--key-on-command-line`. The file is removed, and the
    /// key scrubbed from anything logged, before returning.
    pub fn connect_existing(
        &self,
        target: &Target,
        key: &PrivateKey,
        vm_id: &str,
        on_command_line: bool,
        deadline: &Deadline,
    ) -> Result<Outcome, Error> {
        let mut args = connect_existing_args(target, vm_id);
        if on_command_line {
            args.push("--private-key".into());
            args.push(key.expose().to_string());
            let out = self.run(&args, deadline, AGENT_ATTEMPT_TIMEOUT, &[key.expose()]);
            args.iter_mut().for_each(zeroize::Zeroize::zeroize);
            return out;
        }
        let file = TokenFile::write_entry("private-key", key.expose())?;
        args.push("--config".into());
        args.push(file.path().display().to_string());
        self.run(&args, deadline, AGENT_ATTEMPT_TIMEOUT, &[key.expose()])
    }

    /// `azcmagent disconnect`: `--force-local-only`, or with a token (deletes the Azure resource).
    pub fn disconnect(
        &self,
        token: Option<(&AccessToken, TokenMode)>,
        deadline: &Deadline,
    ) -> Result<Outcome, Error> {
        match token {
            None => self.run(
                &["disconnect".into(), "--force-local-only".into()],
                deadline,
                AGENT_QUICK_TIMEOUT,
                &[],
            ),
            Some((t, mode)) => {
                let mut args = vec!["disconnect".to_string()];
                self.with_token(&mut args, t, mode, |args| {
                    self.run(args, deadline, AGENT_ATTEMPT_TIMEOUT, &[t.expose()])
                })
            }
        }
    }

    fn with_token<T>(
        &self,
        args: &mut Vec<String>,
        token: &AccessToken,
        mode: TokenMode,
        f: impl FnOnce(&[String]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match mode {
            TokenMode::CommandLine => {
                args.push("--access-token".into());
                args.push(token.expose().to_string());
                f(args)
            }
            TokenMode::ConfigFile => {
                let file = TokenFile::write(token)?;
                args.push("--config".into());
                args.push(file.path().display().to_string());
                f(args)
                // `file` is dropped here: the directory and the token are removed.
            }
        }
    }

    /// `azcmagent show -j`, parsed. Keys are read case-insensitively.
    pub fn show(&self, deadline: &Deadline) -> Result<Show, Error> {
        let out = self.run_quiet(&["show", "-j"], deadline)?;
        if out.0 != Some(0) {
            return Err(Error::Agent {
                detail: format!(
                    "`azcmagent show -j` failed (exit {:?}): {}",
                    out.0,
                    last_line(&out.1)
                ),
                advice:
                    "check the agent's services (himdsd) and /var/opt/azcmagent/log/azcmagent.log"
                        .into(),
            });
        }
        Show::parse(&out.1).map_err(|e| Error::Agent {
            detail: format!("cannot read `azcmagent show -j` output: {e}"),
            advice: "this agent version may print another format; please report it".into(),
        })
    }

    /// The agent's version (`azcmagent version`), e.g. `1.61.03319.2737`.
    pub fn version(&self, deadline: &Deadline) -> Option<String> {
        let (code, out) = self.run_quiet(&["version"], deadline).ok()?;
        if code != Some(0) {
            return None;
        }
        parse_version(&out)
    }

    /// `azcmagent config get PROP -j`: the value as JSON (string or list); Err with the agent's words.
    pub fn config_get(&self, prop: &str, deadline: &Deadline) -> Result<Value, String> {
        let (code, out) = self
            .run_quiet(&["config", "get", prop, "-j"], deadline)
            .map_err(|e| e.to_string())?;
        if code != Some(0) {
            return Err(last_line(&out));
        }
        Ok(parse_config_value(&out, prop))
    }

    /// `azcmagent config set PROP VALUE`.
    pub fn config_set(&self, prop: &str, value: &str, deadline: &Deadline) -> Result<(), String> {
        let shown = self.scrub(value, &[]);
        self.config_set_shown(prop, value, &shown, deadline)
    }

    /// `azcmagent config set proxy.url URL`. The agent takes proxy.url only on its command line
    /// (FACTS §2.3: `--config` files carry command-line options, and PROP VALUE are positional),
    /// so a password is in the process list while this short command runs: said once, as a
    /// warning. Our log shows the parsed URL with the password masked.
    pub fn config_set_proxy_url(
        &self,
        proxy: &ProxyUrl,
        deadline: &Deadline,
    ) -> Result<(), String> {
        if proxy.password().is_some_and(|p| !p.is_empty()) {
            log::warn!(
                "the proxy URL has a password, and azcmagent accepts proxy.url only on its command \
                 line: local users can see it in the process list while `azcmagent config set \
                 proxy.url` runs (well under a second); prefer a proxy that authorizes this machine \
                 without a password in the URL"
            );
        }
        self.config_set_shown(
            "proxy.url",
            &proxy.with_credentials(),
            &proxy.to_string(),
            deadline,
        )
    }

    fn config_set_shown(
        &self,
        prop: &str,
        value: &str,
        shown: &str,
        deadline: &Deadline,
    ) -> Result<(), String> {
        log::info!("running {} config set {prop} {shown}", self.path.display());
        let what = format!("config set {prop} {shown}");
        let (code, out) = self
            .run_quiet_as(&["config", "set", prop, value], &what, deadline)
            .map_err(|e| e.to_string())?;
        if code != Some(0) {
            return Err(last_line(&out));
        }
        Ok(())
    }

    /// `azcmagent config clear PROP`: back to the agent's default (an empty list for lists).
    pub fn config_clear(&self, prop: &str, deadline: &Deadline) -> Result<(), String> {
        log::info!("running {} config clear {prop}", self.path.display());
        let (code, out) = self
            .run_quiet(&["config", "clear", prop], deadline)
            .map_err(|e| e.to_string())?;
        if code != Some(0) {
            return Err(last_line(&out));
        }
        Ok(())
    }

    /// Run a quick, local command; its output is captured, not logged line by line.
    fn run_quiet(
        &self,
        args: &[&str],
        deadline: &Deadline,
    ) -> Result<(Option<i32>, String), Error> {
        let what = self.scrub(&args.join(" "), &[]);
        self.run_quiet_as(args, &what, deadline)
    }

    /// `run_quiet` naming the command as `what` in errors. Nothing but the output readers runs
    /// between spawn and wait: the argv may hold a secret (proxy.url) for that long.
    fn run_quiet_as(
        &self,
        args: &[&str],
        what: &str,
        deadline: &Deadline,
    ) -> Result<(Option<i32>, String), Error> {
        let limit = deadline
            .clock
            .io_timeout(deadline.bounded(AGENT_QUICK_TIMEOUT));
        let mut child = self.spawn(args)?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let t_out = std::thread::spawn(move || read_capped(stdout.as_mut()));
        let t_err = std::thread::spawn(move || read_capped(stderr.as_mut()));
        let status = wait_bounded(&mut child, limit, deadline, what, || "no answer".into())?;
        let mut out = t_out.join().unwrap_or_default();
        out.push_str(&t_err.join().unwrap_or_default());
        Ok((status.code(), self.scrub(&out, &[])))
    }
}

impl Agent {
    /// Start the agent in its own process group (so a stop reaches whatever it starts), with
    /// our environment additions, no stdin and piped output.
    fn spawn<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<std::process::Child, Error> {
        // It runs as root with the token: nobody but root (or us) may be able to swap it.
        if let Err(why) = crate::fsafe::untrusted(&self.path) {
            return Err(Error::Agent {
                detail: format!(
                    "refusing to run {}: another user could change it: {why}",
                    self.path.display()
                ),
                advice: "make the agent and its directories owned by root and not group- or \
                         world-writable (the package installs it so), or pass --azcmagent PATH"
                    .into(),
            });
        }
        let mut cmd = Command::new(&self.path);
        for name in AGENT_ENV_REMOVED {
            cmd.env_remove(name);
        }
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_us(&mut cmd);
        cmd.spawn().map_err(|e| Error::Agent {
            detail: format!("cannot start {}: {e}", self.path.display()),
            advice: "check --azcmagent (or install the agent: --install-agent)".into(),
        })
    }
}

extern "C" {
    fn prctl(option: i32, arg2: usize, arg3: usize, arg4: usize, arg5: usize) -> i32;
    fn getppid() -> i32;
}
const PR_SET_PDEATHSIG: i32 = 1;

/// The agent gets SIGKILL from the kernel when we die, however we die (a SIGKILLed run used to
/// leave it running with the token): PR_SET_PDEATHSIG, set in the child between fork and exec.
/// The signal follows the thread that spawned the child, so agents are spawned (and waited for)
/// on the main thread only. If we died before the child set it, the child exits at once.
fn die_with_us(cmd: &mut Command) {
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
fn wait_bounded(
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

fn read_capped<R: Read>(r: Option<&mut R>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.take(1 << 20).read_to_end(&mut buf);
        // Drain the rest so the child never blocks on a full pipe.
        let _ = std::io::copy(r, &mut std::io::sink());
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// Log each output line as `azcmagent: ...` and keep the last few for error messages.
fn pump(
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
