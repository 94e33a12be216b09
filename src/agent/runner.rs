//! Running the Azure Connected Machine agent (`azcmagent`): finding it, running it with a bounded
//! wait, passing it the token (FACTS §1–§2). Its arguments are built in `args`, its answers read
//! in `exit_codes` and `show`.
//!
//! The token reaches the agent through `--config FILE` (key `access-token`, FACTS §1.3), a 0600
//! file in a 0700 directory that is removed when the attempt ends, so the token is never in the
//! process table. The agent's output is passed into our log line by line (secrets scrubbed).

use std::io::Read;
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

use super::child::{die_with_us, last_line, pump, read_capped, wait_bounded, MAX_LOGGED_LINES};

pub const DEFAULT_AGENT_PATH: &str = "/opt/azcmagent/bin/azcmagent";
/// One `azcmagent connect`: "This might take a few minutes" (FACTS §1.6).
pub const AGENT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `show`, `version`, `config`, `disconnect --force-local-only`: local operations.
pub const AGENT_QUICK_TIMEOUT: Duration = Duration::from_secs(60);

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
