//! Shared harness for the binary tests: a sandbox per test (sysroot with machine identity files,
//! state dir, fake agent dir, empty config), the real arc-enroll binary, the fakes, and tinyproxy.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use arc_enroll_fakes::imds::{FakeImds, ImdsConfig, Step};

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
pub struct Sandbox {
    pub root: PathBuf,
    pub sysroot: PathBuf,
    pub state_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub azure_dir: PathBuf,
    pub config: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let root = std::env::temp_dir().join(format!(
            "arc-enroll-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let sb = Sandbox {
            sysroot: root.join("sysroot"),
            state_dir: root.join("state"),
            agent_dir: root.join("agent"),
            azure_dir: root.join("azure"),
            config: root.join("config.json"),
            root,
        };
        std::fs::create_dir_all(sb.sysroot.join("etc")).unwrap();
        std::fs::create_dir_all(sb.sysroot.join("sys/class/dmi/id")).unwrap();
        std::fs::create_dir_all(&sb.agent_dir).unwrap();
        std::fs::create_dir_all(&sb.azure_dir).unwrap();
        sb.set_machine(PRODUCT_UUID, MACHINE_ID, "web01");
        std::fs::write(&sb.config, "{}").unwrap();
        sb
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
    pub fn cmd(&self, imds: &str) -> Command {
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
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
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

pub fn run_guarded(mut c: Command, limit: Duration) -> Run {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let child = c.spawn().expect("spawn arc-enroll");
    let out = wait_with_limit(child, limit);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

pub fn wait_with_limit(child: Child, limit: Duration) -> Output {
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

/// Assert a secret does not appear anywhere in a run's output.
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
