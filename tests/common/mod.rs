//! Shared harness for the binary tests: a sandbox per test (sysroot with machine identity files,
//! state dir, fake agent dir, empty config), the real arc-enroll binary, the fakes, and tinyproxy.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub mod scan;

pub use arc_enroll_fakes::imds::{FakeImds, ImdsConfig, Step};
pub use arc_enroll_fakes::secrets::{
    ACCESS_TOKEN, EXCHANGED_TOKEN, FEDERATED_ASSERTION, PRIVATE_KEY, PROXY_PASSWORD,
};
pub use scan::{Finding, Scanner, Secret};

/// The binary under test: `ARC_ENROLL_BIN` (e.g. the aarch64 build run under qemu-user), else
/// the one cargo built for this test run.
pub fn bin() -> PathBuf {
    std::env::var_os("ARC_ENROLL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_arc-enroll")))
}

/// A command for the binary under test, wrapped in `ARC_ENROLL_BIN_RUNNER` when that is set (e.g.
/// `qemu-aarch64` for the aarch64 build: `make test-release`). Tests that run the binary without a
/// [`Sandbox`] must start it through this, not `Command::new(bin())`, to work under emulation.
pub fn bin_command() -> Command {
    match std::env::var_os("ARC_ENROLL_BIN_RUNNER") {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(bin());
            c
        }
        None => Command::new(bin()),
    }
}

/// The directory of this test run's profile (`target/debug`), where the fakes are built.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> -> target/debug
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Build the fakes' binaries (`fake-azcmagent`, ...) into [`target_dir`] once per test binary, so a
/// plain `cargo test` on a fresh clone works: `cargo build --workspace --bins` with the cargo that
/// runs the tests and the same target dir and profile. After `make test`'s own `cargo build
/// --workspace` this is a no-op (same packages, same features); after an edit to a fake it
/// rebuilds it, so no test runs a stale fake.
pub fn ensure_fakes_built() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = target_dir();
        let profile_dir = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_string();
        let target_root = dir.parent().expect("target dir has a parent");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut c = Command::new(cargo);
        c.args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_root);
        match profile_dir.as_str() {
            "debug" => {}
            "release" => {
                c.arg("--release");
            }
            other => {
                c.args(["--profile", other]);
            }
        }
        let st = c.status().expect("run cargo to build the fakes");
        assert!(
            st.success(),
            "`cargo build --workspace --bins` for the fakes failed: {st}"
        );
        dir
    })
}

/// The fake agent (`tests/fakes`), built on first use by [`ensure_fakes_built`].
pub fn fake_agent_bin() -> PathBuf {
    let p = ensure_fakes_built().join("fake-azcmagent");
    assert!(
        p.exists(),
        "{} is missing after building the fakes",
        p.display()
    );
    p
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const PRODUCT_UUID: &str = "4c4c4544-0051-3010-8052-b4c04f4e4b32";
pub const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

/// One test's world: files under a fresh temp dir.
///
/// Every run of the binary through [`Sandbox::run`], [`Sandbox::cmd`] + [`run_guarded`], and the
/// sandbox's end ([`Drop`]) are checked by the secret scanner: see [`Guard`].
pub struct Sandbox {
    pub root: PathBuf,
    pub sysroot: PathBuf,
    pub state_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub azure_dir: PathBuf,
    pub config: PathBuf,
    guard: Arc<Mutex<Guard>>,
}

impl Sandbox {
    /// A fake ARM over TLS that shares this sandbox's fake-Azure dir (its CA in `<root>/arm`),
    /// configured by `tweak`.
    pub fn fake_arm(
        &self,
        tweak: impl FnOnce(&mut arc_enroll_fakes::arm::ArmConfig),
    ) -> arc_enroll_fakes::arm::FakeArm {
        let mut cfg = arc_enroll_fakes::arm::ArmConfig {
            azure_dir: Some(self.azure_dir.clone()),
            ca_dir: Some(self.root.join("arm")),
            ..Default::default()
        };
        tweak(&mut cfg);
        arc_enroll_fakes::arm::FakeArm::start(cfg)
    }

    pub fn new(name: &str) -> Sandbox {
        let root = std::env::temp_dir().join(format!(
            "arc-enroll-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let guard = Arc::new(Mutex::new(Guard::new(&root)));
        register_guard(&guard);
        let sb = Sandbox {
            sysroot: root.join("sysroot"),
            state_dir: root.join("state"),
            agent_dir: root.join("agent"),
            azure_dir: root.join("azure"),
            config: root.join("config.json"),
            root,
            guard,
        };
        std::fs::create_dir_all(sb.sysroot.join("etc")).unwrap();
        std::fs::create_dir_all(sb.sysroot.join("sys/class/dmi/id")).unwrap();
        std::fs::create_dir_all(&sb.agent_dir).unwrap();
        std::fs::create_dir_all(&sb.azure_dir).unwrap();
        sb.set_machine(PRODUCT_UUID, MACHINE_ID, "web01");
        std::fs::write(&sb.config, "{}").unwrap();
        // The product's one designed door for the token: the 0600 `--config` file the agent
        // reads (the fake agent records what it read as `agent-config:<command>`).
        sb.allow(ACCESS_TOKEN, "agent-config:");
        // The agent has no way to take proxy.url but its argv (`azcmagent config set proxy.url
        // URL`: positional, so its `--config` file cannot carry it; FACTS §2.3, §13): the one
        // documented place a proxy password appears, warned about in the log (issue 12 item 3).
        sb.allow(PROXY_PASSWORD, "agent-argv:config set");
        // The agent's environment (HTTPS_PROXY, so its own calls use the proxy; /proc/PID/environ
        // is readable by root only) and the agent's own config, where azcmagent keeps proxy.url.
        sb.allow(PROXY_PASSWORD, "agent-env:");
        sb.allow(PROXY_PASSWORD, "file:agent/agent.json");
        sb
    }

    /// Register a secret the scanner must not find anywhere (beyond what the fakes issued and the
    /// proxy passwords the harness sees in the run's arguments, environment and config file).
    pub fn secret(&self, kind: &str, value: &str) -> &Sandbox {
        assert!(
            value.len() >= scan::MIN_SECRET,
            "a secret of {} bytes cannot be searched without false positives: use {} or more",
            value.len(),
            scan::MIN_SECRET
        );
        self.guard().registered.push(Secret::new(kind, value));
        self
    }

    /// Allow secrets of `kind` (or `"*"`: any) in the channels starting with `channel`: `stdout`,
    /// `stderr`, `file:<path under the sandbox root>` (`file:/run/arc-enroll-...` for token
    /// directories), `agent-argv:<command>`, `agent-env:<command>`, `agent-config:<command>`.
    /// Say why at the call site: this is the only way a secret may reach a channel.
    pub fn allow(&self, kind: &str, channel: &str) -> &Sandbox {
        self.guard()
            .allowed
            .push((kind.to_string(), channel.to_string()));
        self
    }

    /// Withdraw every allowance for `kind` in `channel` (exactly as given to [`Sandbox::allow`]).
    pub fn disallow(&self, kind: &str, channel: &str) -> &Sandbox {
        self.guard()
            .allowed
            .retain(|(k, c)| !(k == kind && c == channel));
        self
    }

    /// A file the test writes as an input: not a "file left behind" (unless changed later).
    pub fn input(&self, path: &Path) -> &Sandbox {
        self.guard().absorb_file(path);
        self
    }

    /// What the scanner finds now in the files left behind and the agent's records (not
    /// allowed ones), without failing; marks them seen.
    pub fn leaks(&self) -> Vec<Finding> {
        self.guard().check(None, &[])
    }

    /// Every secret the scanner knows for this sandbox (fakes, registry file, registered, seen).
    pub fn known_secrets(&self) -> Vec<Secret> {
        self.guard().secrets()
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This machine's identity files.
    pub fn set_machine(&self, product_uuid: &str, machine_id: &str, hostname: &str) {
        std::fs::write(
            self.sysroot.join("sys/class/dmi/id/product_uuid"),
            format!("{product_uuid}\n"),
        )
        .unwrap();
        std::fs::write(
            self.sysroot.join("etc/machine-id"),
            format!("{machine_id}\n"),
        )
        .unwrap();
        std::fs::write(self.sysroot.join("etc/hostname"), format!("{hostname}\n")).unwrap();
    }

    /// The fake agent's behaviour knobs (`behaviour.json`).
    pub fn agent_behaviour(&self, v: serde_json::Value) {
        std::fs::write(self.agent_dir.join("behaviour.json"), v.to_string()).unwrap();
    }

    /// The tokens the fake agent received (its recorded `--config` file or `--access-token`).
    pub fn tokens_seen(&self) -> Vec<String> {
        let mut t = Vec::new();
        for c in self.agent_calls() {
            if let Some(tok) = c["config_file"]["content"]["access-token"].as_str() {
                t.push(tok.to_string());
            }
            let argv: Vec<String> = c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            if let Some(i) = argv.iter().position(|a| a == "--access-token") {
                t.push(argv[i + 1].clone());
            }
        }
        t
    }

    /// Every recorded fake-agent call.
    pub fn agent_calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.agent_dir.join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The recorded agent calls whose first argument is `sub` (e.g. "connect").
    pub fn agent_calls_of(&self, sub: &str) -> Vec<serde_json::Value> {
        self.agent_calls()
            .into_iter()
            .filter(|c| {
                c["argv"]
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|v| v.as_str())
                    == Some(sub)
            })
            .collect()
    }

    pub fn state(&self) -> Option<serde_json::Value> {
        std::fs::read_to_string(self.state_dir.join("state.json"))
            .ok()
            .map(|s| serde_json::from_str(&s).unwrap())
    }

    /// The command for the real binary, wired to this sandbox and `imds`, with a clean environment.
    /// Files as they are now are the test's inputs (see [`Guard`]).
    pub fn cmd(&self, imds: &str) -> Command {
        self.guard().before_run();
        let mut c = bin_command();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ARC_ENROLL_CONFIG", &self.config)
            .env("ARC_ENROLL_SYSROOT", &self.sysroot)
            .env("ARC_ENROLL_STATE_DIR", &self.state_dir)
            .env("ARC_ENROLL_IMDS_ENDPOINT", imds)
            // ARM on a closed loopback port unless a test starts the fake ARM: no DNS query for
            // management.azure.com ever leaves this machine.
            .env("ARC_ENROLL_ARM_ENDPOINT", "https://127.0.0.1:9")
            .env("ARC_ENROLL_AZCMAGENT", fake_agent_bin())
            .env("FAKE_AZCMAGENT_DIR", &self.agent_dir)
            .env("FAKE_AZCMAGENT_SYSROOT", &self.sysroot)
            .env("FAKE_AZURE_DIR", &self.azure_dir)
            .env(
                arc_enroll_fakes::secrets::FILE_ENV,
                self.guard().registry_file.clone(),
            )
            .stdin(Stdio::null());
        c
    }

    /// Run to completion with a generous wall-clock guard (the binary has its own deadline).
    pub fn run(&self, imds: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd(imds);
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_guarded(c, Duration::from_secs(120))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // Files and agent calls left by runs the test started itself (`cmd` + `spawn`).
            let leaks = self.guard().check(None, &[]);
            fail_on(&leaks, "at the end of the test");
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The secret scanner's glue: every secret in play, every channel, the allow-list.

/// One sandbox's scanning state. Secrets: every one the in-process fakes issued
/// (`arc_enroll_fakes::secrets::issued`), every one out-of-process fakes wrote to the sandbox's
/// registry file (`.harness/secrets.jsonl`, named by `FAKE_SECRETS_FILE` in every run's
/// environment), every one the test registered ([`Sandbox::secret`]) and every proxy password
/// in a run's arguments, environment or the sandbox config file. Channels, after every run: its
/// stdout and stderr; every file under the sandbox root that is new or changed since the run
/// was set up (files as they were when [`Sandbox::cmd`] was called are the test's inputs), except
/// `.harness/` and the fake agent's own records `agent/calls.jsonl` (scanned per field instead:
/// argv, whole environment, the `--config` content it read) and `agent/behaviour.json`; the
/// token directories (`/run`, `/dev/shm`, `$TMPDIR`: `arc-enroll-<pid>-*`) of the run and of
/// every arc-enroll process that called the fake agent.
pub struct Guard {
    root: PathBuf,
    registry_file: PathBuf,
    registered: Vec<Secret>,
    allowed: Vec<(String, String)>,
    /// Last known content hash of every file: unchanged files are not scanned again.
    known: HashMap<PathBuf, u64>,
    calls_seen: usize,
    pids: Vec<u32>,
    /// A command was set up with `cmd` and not yet checked (the test may have run it itself).
    pending: bool,
}

impl Guard {
    fn new(root: &Path) -> Guard {
        Guard {
            root: root.to_path_buf(),
            registry_file: root.join(".harness/secrets.jsonl"),
            registered: Vec::new(),
            allowed: Vec::new(),
            known: HashMap::new(),
            calls_seen: 0,
            pids: Vec::new(),
            pending: false,
        }
    }

    fn secrets(&self) -> Vec<Secret> {
        let mut out: Vec<Secret> = arc_enroll_fakes::secrets::issued()
            .into_iter()
            .map(|i| Secret::new(&i.kind, &i.value))
            .collect();
        out.extend(self.own_secrets());
        out
    }

    /// The secrets of this sandbox only: its registry file and what the test registered.
    fn own_secrets(&self) -> Vec<Secret> {
        let mut out: Vec<Secret> = arc_enroll_fakes::secrets::read_file(&self.registry_file)
            .into_iter()
            .map(|i| Secret::new(&i.kind, &i.value))
            .collect();
        out.extend(self.registered.iter().cloned());
        out
    }

    fn is_allowed(&self, f: &Finding) -> bool {
        self.allowed
            .iter()
            .any(|(k, c)| (k == "*" || *k == f.kind) && f.channel.starts_with(c.as_str()))
    }

    fn skipped(&self, p: &Path) -> bool {
        let rel = p.strip_prefix(&self.root).unwrap_or(p);
        rel.starts_with(".harness")
            || rel == Path::new("agent/calls.jsonl")
            || rel == Path::new("agent/behaviour.json")
    }

    fn absorb_file(&mut self, p: &Path) {
        if let Ok(b) = std::fs::read(p) {
            self.known.insert(p.to_path_buf(), hash(&b));
        }
    }

    /// Before a run: a command set up earlier and run by the test itself is checked first, then
    /// every file as it is now is an input.
    fn before_run(&mut self) {
        if self.pending {
            self.pending = false;
            let leaks = self.check_now(None, &[], false);
            fail_on(&leaks, "after a run the test started itself");
        }
        for f in walk(&self.root) {
            if !self.skipped(&f) {
                self.absorb_file(&f);
            }
        }
        self.pending = true;
    }

    /// Scan everything new since the last check (a finished `run` too, when given) and return
    /// what is not allowed.
    fn check(&mut self, run: Option<(&Run, u32, &str)>, extra: &[Secret]) -> Vec<Finding> {
        self.pending = false;
        self.check_now(run, extra, true)
    }

    /// `token_dirs`: also the token directories of finished runs (not before a run: a SIGKILLed
    /// run's directory is the next run's to remove).
    fn check_now(
        &mut self,
        run: Option<(&Run, u32, &str)>,
        extra: &[Secret],
        token_dirs: bool,
    ) -> Vec<Finding> {
        let mut secrets = self.own_secrets();
        for e in extra {
            if !secrets.contains(e) && e.value.len() >= scan::MIN_SECRET {
                self.registered.push(e.clone());
                secrets.push(e.clone());
            }
        }
        let local = Scanner::new(&secrets);
        let scanner = Scanning(&local);
        let mut found = Vec::new();
        if let Some((r, pid, what)) = run {
            found.extend(scanner.scan(&format!("stdout of {what}"), r.stdout.as_bytes()));
            found.extend(scanner.scan(&format!("stderr of {what}"), r.stderr.as_bytes()));
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
        for f in walk(&self.root) {
            if self.skipped(&f) {
                continue;
            }
            let Ok(b) = std::fs::read(&f) else { continue };
            // Executables a test copied in (the fake agent as an "installed" agent, a fake package
            // manager) are megabytes of machine code no run writes a secret into; scanning them
            // in a debug build takes minutes.
            if b.starts_with(b"\x7fELF") {
                continue;
            }
            let h = hash(&b);
            if self.known.get(&f) == Some(&h) {
                continue;
            }
            self.known.insert(f.clone(), h);
            let rel = f.strip_prefix(&self.root).unwrap_or(&f);
            found.extend(scanner.scan(&format!("file:{}", rel.display()), &b));
        }
        let calls = read(&self.root.join("agent/calls.jsonl"));
        let lines: Vec<&str> = calls.lines().filter(|l| !l.trim().is_empty()).collect();
        for l in lines.iter().skip(self.calls_seen) {
            let Ok(c) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            let argv: Vec<&str> = c["argv"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let sub = argv
                .iter()
                .find(|a| !a.starts_with('-'))
                .copied()
                .unwrap_or("-")
                .to_string();
            let sub = match argv.first() {
                Some(&"config") => format!("config {}", argv.get(1).unwrap_or(&"")),
                _ => sub,
            };
            found.extend(scanner.scan(&format!("agent-argv:{sub}"), argv.join(" ").as_bytes()));
            let env: String = c["environ"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}\n", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            found.extend(scanner.scan(&format!("agent-env:{sub}"), env.as_bytes()));
            if !c["config_file"]["content"].is_null() {
                let content = c["config_file"]["content"].to_string();
                found.extend(scanner.scan(&format!("agent-config:{sub}"), content.as_bytes()));
            }
            if let Some(pp) = c["ppid"].as_u64() {
                if !self.pids.contains(&(pp as u32)) {
                    self.pids.push(pp as u32);
                }
            }
        }
        self.calls_seen = lines.len();
        // Token directories of this sandbox's arc-enroll processes that are gone by now; what is
        // found is reported, then removed (no token stays on the test machine).
        for pid in self.pids.clone() {
            if !token_dirs {
                break;
            }
            if Path::new(&format!("/proc/{pid}")).exists() && run.map(|r| r.1) != Some(pid) {
                continue;
            }
            for base in [
                PathBuf::from("/run"),
                PathBuf::from("/dev/shm"),
                std::env::temp_dir(),
            ] {
                let prefix = format!("arc-enroll-{pid}-");
                let Ok(rd) = std::fs::read_dir(&base) else {
                    continue;
                };
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        for f in walk(&e.path()) {
                            let b = std::fs::read(&f).unwrap_or_default();
                            let h = hash(&b);
                            if self.known.get(&f) == Some(&h) {
                                continue;
                            }
                            self.known.insert(f.clone(), h);
                            found.extend(scanner.scan(&format!("file:{}", f.display()), &b));
                        }
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        found.retain(|f| !self.is_allowed(f));
        found
    }
}

/// The process-wide scanner plus a sandbox's own.
struct Scanning<'a>(&'a Scanner);

impl Scanning<'_> {
    fn scan(&self, channel: &str, text: &[u8]) -> Vec<Finding> {
        scan_with(Some(self.0), channel, text)
    }
}

static GUARDS: Mutex<Vec<(PathBuf, Weak<Mutex<Guard>>)>> = Mutex::new(Vec::new());

fn register_guard(g: &Arc<Mutex<Guard>>) {
    let file = g.lock().unwrap().registry_file.clone();
    let mut l = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
    l.retain(|(_, w)| w.strong_count() > 0);
    l.push((file, Arc::downgrade(g)));
}

/// The sandbox a command was made by ([`Sandbox::cmd`] puts its registry file in the env).
fn guard_of(c: &Command) -> Option<Arc<Mutex<Guard>>> {
    let file = c.get_envs().find_map(|(k, v)| {
        (k == arc_enroll_fakes::secrets::FILE_ENV)
            .then(|| v.map(PathBuf::from))
            .flatten()
    })?;
    let l = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
    l.iter()
        .find(|(f, _)| *f == file)
        .and_then(|(_, w)| w.upgrade())
}

/// Proxy passwords in a command's arguments and environment, and in a file's text:
/// `scheme://user:password@host` (percent-decoded).
pub fn proxy_passwords(texts: &[String]) -> Vec<Secret> {
    let mut out = Vec::new();
    for t in texts {
        let mut rest = t.as_str();
        while let Some(i) = rest.find("://") {
            rest = &rest[i + 3..];
            let end = rest
                .find(|c: char| c == '/' || c == '"' || c.is_whitespace())
                .unwrap_or(rest.len());
            let auth = &rest[..end];
            if let Some(at) = auth.rfind('@') {
                if let Some((_, pw)) = auth[..at].split_once(':') {
                    let raw = pw.as_bytes();
                    let mut dec = Vec::new();
                    let mut i = 0;
                    while i < raw.len() {
                        if raw[i] == b'%' && i + 2 < raw.len() {
                            if let Ok(b) = u8::from_str_radix(&pw[i + 1..i + 3], 16) {
                                dec.push(b);
                                i += 3;
                                continue;
                            }
                        }
                        dec.push(raw[i]);
                        i += 1;
                    }
                    let dec = String::from_utf8_lossy(&dec).into_owned();
                    if dec.len() >= scan::MIN_SECRET {
                        out.push(Secret::new(PROXY_PASSWORD, &dec));
                    }
                }
            }
        }
    }
    out
}

fn fail_on(leaks: &[Finding], when: &str) {
    if !leaks.is_empty() {
        let list: Vec<String> = leaks.iter().map(|f| format!("  - {f}")).collect();
        panic!(
            "secret scanner: {} leak(s) {when} (allow a designed channel with Sandbox::allow):\n{}",
            leaks.len(),
            list.join("\n")
        );
    }
}

fn hash(b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Every regular file under `dir`, symlinks not followed.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Scan with the process-wide scanner (every secret the in-process fakes issued, built once and
/// grown as they issue more) and, when given, a scanner of the sandbox's own secrets.
fn scan_with(local: Option<&Scanner>, channel: &str, text: &[u8]) -> Vec<Finding> {
    static GLOBAL: std::sync::OnceLock<Mutex<(usize, Scanner)>> = std::sync::OnceLock::new();
    let mut g = GLOBAL
        .get_or_init(|| Mutex::new((0, Scanner::default())))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let issued = arc_enroll_fakes::secrets::issued();
    for i in &issued[g.0..] {
        g.1.add(&Secret::new(&i.kind, &i.value));
    }
    g.0 = issued.len();
    let mut found = g.1.scan(channel, text);
    drop(g);
    if let Some(l) = local {
        for f in l.scan(channel, text) {
            if !found
                .iter()
                .any(|x| x.kind == f.kind && x.encoding == f.encoding)
            {
                found.push(f);
            }
        }
    }
    found
}

/// A finished run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn log_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "log lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    pub fn out_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Run to completion (killed after `limit`), then the secret scanner checks the run: with the
/// sandbox that made the command (see [`Guard`]), else stdout and stderr for every secret the
/// in-process fakes issued. A leak fails the test.
pub fn run_guarded(mut c: Command, limit: Duration) -> Run {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = describe(&c);
    let mut texts: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    texts.extend(
        c.get_envs()
            .filter_map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned())),
    );
    let guard = guard_of(&c);
    if let Some(g) = &guard {
        texts.push(read(&g.lock().unwrap().root.join("config.json")));
    }
    let start = Instant::now();
    let child = c.spawn().expect("spawn arc-enroll");
    let pid = child.id();
    let out = wait_for(child, limit);
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    };
    let leaks = match &guard {
        Some(g) => g
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(Some((&run, pid, &what)), &proxy_passwords(&texts)),
        None => scan_output(&run.stdout, &run.stderr, &what),
    };
    fail_on(&leaks, &format!("in `{what}` (exit {:?})", run.code));
    run
}

fn describe(c: &Command) -> String {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let level: Vec<String> = c
        .get_envs()
        .filter(|(k, _)| *k == "RUST_LOG")
        .filter_map(|(_, v)| v.map(|v| format!("RUST_LOG={}", v.to_string_lossy())))
        .collect();
    let mut s = level.join(" ");
    if !s.is_empty() {
        s.push(' ');
    }
    s.push_str("arc-enroll ");
    s.push_str(&args.join(" "));
    s
}

fn scan_output(stdout: &str, stderr: &str, what: &str) -> Vec<Finding> {
    let mut f = scan_with(None, &format!("stdout of {what}"), stdout.as_bytes());
    f.extend(scan_with(
        None,
        &format!("stderr of {what}"),
        stderr.as_bytes(),
    ));
    f
}

/// Wait for a child (killed after `limit`); its stdout and stderr are checked for every secret
/// the in-process fakes issued (files and agent records: at the sandbox's next run or its end).
pub fn wait_with_limit(child: Child, limit: Duration) -> Output {
    let out = wait_for(child, limit);
    let leaks = scan_output(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
        "a child the test waited for",
    );
    fail_on(&leaks, "in a run's output");
    out
}

fn wait_for(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if d2.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::SeqCst);
    out
}

/// A real HTTP proxy (tinyproxy) on a free loopback port that only lets traffic to 127.0.0.1
/// through and logs every request, CONNECT included. Stopped on drop.
pub struct Tinyproxy {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
    dir: PathBuf,
}

impl Tinyproxy {
    pub fn binary() -> Option<PathBuf> {
        ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// `basic_auth`: Some((user, password)) to require proxy authentication.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Tinyproxy {
        let bin =
            Tinyproxy::binary().expect("tinyproxy is not installed: `make setup-test` installs it");
        let dir = std::env::temp_dir().join(format!(
            "arc-enroll-tinyproxy-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let filter = dir.join("filter");
        std::fs::write(&filter, "^127\\.0\\.0\\.1$\n^localhost$\n").unwrap();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\n\
             Allow 127.0.0.1\nFilter \"{}\"\nFilterDefaultDeny Yes\nFilterExtended On\nDisableViaHeader Yes\n",
            log.display(),
            filter.display()
        );
        if let Some((u, p)) = basic_auth {
            if p.len() >= scan::MIN_SECRET {
                arc_enroll_fakes::secrets::register(PROXY_PASSWORD, p);
            }
            conf.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .args(["-d", "-c"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tinyproxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tinyproxy {
            port,
            log,
            child,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Assert a secret does not appear anywhere in a run's output (the whole secret, verbatim; every
/// run is also checked for fragments and encodings of every known secret by the scanner).
pub fn assert_no_secret(run: &Run, secret: &str, what: &str) {
    assert!(!secret.is_empty());
    assert!(
        !run.stderr.contains(secret),
        "{what} leaked into the log:\n{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains(secret),
        "{what} leaked into stdout:\n{}",
        run.stdout
    );
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
