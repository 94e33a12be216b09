//! `--install-agent`: download Microsoft's installer script (FACTS §4.2) through the proxy (https
//! only, redirects included, unless `--allow-insecure-installer`; pinned by
//! `--agent-installer-sha256`), run it with the proxy passed on — or install a local package
//! (`--agent-package`, no network) — and check that `azcmagent` then runs. `connect` calls this only after
//! the token was obtained, so a machine without an identity installs nothing.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{self, Agent};
use crate::azure::arm::describe_failure;
use crate::azure::http::Http;
use crate::azure::proxy::Route;
use crate::config::Settings;
use crate::error::Error;
use crate::retry::Deadline;

/// The script is ~30 KiB; anything near this is not the installer.
const INSTALLER_MAX_BYTES: u64 = 1 << 20;
const INSTALLER_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The installer configures a package repository and installs a package; apt alone may wait
/// 5 minutes for its lock (FACTS §4.2, exit 145).
const INSTALLER_RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const INSTALLER_FILE: &str = "install_linux_azcmagent.sh";

pub use crate::config::PackageKind;

impl PackageKind {
    /// The command that installs `file`: `dpkg -i` for a .deb; for an .rpm `dnf install -y` when
    /// dnf is on PATH (it resolves dependencies), else `rpm -U --replacepkgs`. Found through PATH.
    pub fn command(self, file: &Path) -> (PathBuf, Vec<String>) {
        let f = file.display().to_string();
        match self {
            PackageKind::Deb => (PathBuf::from("dpkg"), vec!["-i".into(), f]),
            PackageKind::Rpm if on_path("dnf") => {
                (PathBuf::from("dnf"), vec!["install".into(), "-y".into(), f])
            }
            PackageKind::Rpm => (
                PathBuf::from("rpm"),
                vec!["-U".into(), "--replacepkgs".into(), f],
            ),
        }
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| agent::is_executable(&d.join(name))))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Install the agent and return it, verified with `azcmagent version`: from `--agent-package`
/// when given (no network), else with Microsoft's installer script.
pub fn install_agent(
    settings: &Settings,
    http: &Http,
    deadline: &Deadline,
) -> Result<Agent, Error> {
    match &settings.agent_package {
        Some(pkg) => install_package(settings, &pkg.value, deadline)?,
        None => run_installer(settings, http, deadline)?,
    }
    installed_agent(settings, deadline)
}

/// `dpkg -i` / `dnf install` / `rpm -U` the local package.
fn install_package(settings: &Settings, pkg: &Path, deadline: &Deadline) -> Result<(), Error> {
    let kind = PackageKind::of(pkg).ok_or_else(|| {
        Error::invalid(
            "agent_package",
            pkg.display().to_string(),
            "settings",
            "must be a .deb or .rpm file",
        )
    })?;
    let (program, args) = kind.command(pkg);
    log::info!(
        "--install-agent: installing the agent from the local package {} with {} (no download)",
        pkg.display(),
        program.display()
    );
    let runner = Agent::new(
        program.clone(),
        &settings.proxy,
        &settings.arm_endpoint.value,
    );
    let out = runner.run(&args, deadline, INSTALLER_RUN_TIMEOUT, &[])?;
    if out.code != Some(0) {
        return Err(Error::Agent {
            detail: format!(
                "`{} {}` failed ({}); its last lines:\n{}",
                program.display(),
                args.join(" "),
                describe_end(&out),
                out.tail_text()
            ),
            advice: "check that the package is the azcmagent package for this distribution and \
                     that its dependencies are installed"
                .into(),
        });
    }
    Ok(())
}

fn describe_end(out: &agent::Outcome) -> String {
    match (out.code, out.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// Download Microsoft's installer script (https only unless overridden; pinned by
/// `--agent-installer-sha256` when given) and run it.
fn run_installer(settings: &Settings, http: &Http, deadline: &Deadline) -> Result<(), Error> {
    let url = &settings.agent_installer_url.value;
    if !url.to_ascii_lowercase().starts_with("https://") {
        log::warn!(
            "--install-agent: the installer URL {url} is plain http (allowed by {}): anyone on the \
             network path can change the script that runs as root{}",
            settings.allow_insecure_installer.source,
            if settings.agent_installer_sha256.is_some() {
                "; its SHA-256 is checked before it runs"
            } else {
                "; pin it with --agent-installer-sha256"
            }
        );
    }
    let how = match settings.proxy.route(url) {
        Route::Direct { rule } => format!("direct ({rule})"),
        Route::Via { proxy, rule } => format!("via {proxy} ({rule})"),
    };
    log::info!("--install-agent: downloading the agent installer from {url} {how}");
    let timeout = deadline
        .clock
        .real(deadline.bounded(INSTALLER_DOWNLOAD_TIMEOUT));
    let fail = |detail: String| Error::Agent {
        detail,
        advice: format!(
            "check that {url} is reachable through the proxy (`arc-enroll check`), or install \
             azcmagent in the image"
        ),
    };
    let (status, script) = http
        .download(url, timeout, INSTALLER_MAX_BYTES)
        .map_err(|f| {
            fail(format!(
                "cannot download the installer from {url}: {}",
                describe_failure(&f)
            ))
        })?;
    if status != 200 {
        return Err(fail(format!(
            "downloading the installer from {url} answered HTTP {status}"
        )));
    }
    let actual = sha256_hex(&script);
    if let Some(want) = &settings.agent_installer_sha256 {
        if want.value != actual {
            return Err(Error::Agent {
                detail: format!(
                    "the installer downloaded from {url} has SHA-256 {actual}, not the expected {} \
                     (from {}); it was not run",
                    want.value, want.source
                ),
                advice: "if Microsoft published a new installer, check it and update \
                         --agent-installer-sha256; otherwise something on the path changed it"
                    .into(),
            });
        }
        log::info!("--install-agent: the installer's SHA-256 {actual} is the expected one");
    } else {
        log::info!(
            "--install-agent: the installer's SHA-256 is {actual} (pin it with --agent-installer-sha256)"
        );
    }
    if !script.starts_with(b"#!") {
        return Err(fail(format!(
            "{url} did not return a shell script ({} bytes starting {:?}); a proxy login page?",
            script.len(),
            String::from_utf8_lossy(&script[..script.len().min(40)])
        )));
    }
    let dir = PrivateDir::create()?;
    let path = dir.0.join(INSTALLER_FILE);
    write_private(&path, &script)?;
    log::info!(
        "--install-agent: saved the installer ({} bytes) to {}",
        script.len(),
        path.display()
    );

    // The agent's environment (proxy for Azure, NO_PROXY with IMDS and loopback) is also right for
    // the installer: it downloads through curl/wget, which read these variables.
    let runner = Agent::new(
        PathBuf::from("bash"),
        &settings.proxy,
        &settings.arm_endpoint.value,
    );
    // The installer writes its failure code to --output (FACTS §4.2: the process exit code is
    // always 1; the AZCMnnnn code only appears there and in its output).
    let result_file = dir.0.join("install-result.json");
    let mut args = vec![
        path.display().to_string(),
        "--output".into(),
        result_file.display().to_string(),
    ];
    if let Route::Via { proxy, .. } = settings.proxy.route(&settings.arm_endpoint.value) {
        if proxy.password().is_some_and(|p| !p.is_empty()) {
            // On the command line the password would be in the process table; the installer's
            // downloads get the proxy from the environment, and connect sets proxy.url itself.
            log::info!(
                "--install-agent: the proxy has a password, so it is passed in the environment only; \
                 the agent's proxy.url is set before connecting"
            );
        } else {
            args.push("--proxy".into());
            args.push(proxy.with_credentials());
        }
    }
    log::info!("--install-agent: running the installer (its output follows, prefixed azcmagent:)");
    let out = runner.run(&args, deadline, INSTALLER_RUN_TIMEOUT, &[])?;
    let result = std::fs::read_to_string(&result_file).unwrap_or_default();
    drop(dir);
    if out.code != Some(0) {
        let code = installer_code(&result, &out.tail);
        let (what, advice) = match code.as_deref().and_then(installer_code_meaning) {
            Some((meaning, advice)) => (
                format!(" with {}: {meaning}", code.as_deref().unwrap_or_default()),
                advice.to_string(),
            ),
            None => (
                code.as_deref()
                    .map(|c| format!(" with {c}"))
                    .unwrap_or_default(),
                "see the installer's AZCMnnnn code in its output; it needs systemctl, a supported \
                 distribution and outbound access to packages.microsoft.com, and refuses Azure VMs \
                 unless MSFT_ARC_TEST=true"
                    .into(),
            ),
        };
        return Err(Error::Agent {
            detail: format!(
                "the agent installer from {url} failed ({}){what}; its last lines:\n{}",
                describe_end(&out),
                out.tail_text()
            ),
            advice,
        });
    }
    Ok(())
}

/// The installer's AZCMnnnn code: from its `--output` JSON (`{"error":{"code":"AZCM0145"}}`),
/// else the last one in its output.
fn installer_code(result_json: &str, tail: &[String]) -> Option<String> {
    let from_json = serde_json::from_str::<serde_json::Value>(result_json)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .filter(|c| is_azcm_code(c));
    from_json.or_else(|| {
        tail.iter().rev().find_map(|l| {
            l.match_indices("AZCM")
                .map(|(i, _)| &l[i..])
                .filter_map(|s| s.get(..8))
                .find(|c| is_azcm_code(c))
                .map(str::to_string)
        })
    })
}

fn is_azcm_code(c: &str) -> bool {
    c.len() == 8 && c.starts_with("AZCM") && c[4..].bytes().all(|b| b.is_ascii_digit())
}

/// What the installer's codes mean (FACTS §4.2, §13: the installer's 2026-07 table) and what to do.
pub fn installer_code_meaning(code: &str) -> Option<(&'static str, &'static str)> {
    Some(match code {
        "AZCM0130" => (
            "systemctl is missing: the agent needs systemd",
            "install the agent on a systemd-based image (the agent runs as systemd services)",
        ),
        "AZCM0131" | "AZCM0133" => (
            "the distribution could not be detected or is not supported by the agent",
            "check the agent's supported operating systems; install it in the image from a package if yours is supported",
        ),
        "AZCM0132" => (
            "this CPU architecture is not supported (the agent supports x86_64 and aarch64)",
            "use an x86_64 or aarch64 image",
        ),
        "AZCM0141" => (
            "the installer refuses to install on an Azure VM (it found IMDS at 169.254.169.254)",
            "an Azure VM is managed by Azure itself, not through Arc; for tests set MSFT_ARC_TEST=true in systemd's environment (systemctl set-environment MSFT_ARC_TEST=true)",
        ),
        "AZCM0143" => (
            "installing the azcmagent package failed",
            "see the package manager's messages in the installer's output above",
        ),
        "AZCM0145" => (
            "the apt/dpkg lock was held for more than 5 minutes (another install or unattended-upgrades is running)",
            "wait for the other package operation to finish (or install the agent in the image), then run arc-enroll again",
        ),
        "AZCM0146" => (
            "the packages.microsoft.com repository configuration could not be downloaded",
            "allow packages.microsoft.com through the proxy/firewall (`arc-enroll check`), then run arc-enroll again",
        ),
        "AZCM0147" => (
            "the requested agent version (--desiredversion) was not found in the repository",
            "ask for a version that packages.microsoft.com has, or leave the version out for the latest",
        ),
        "AZCM0150" => (
            "the agent installation failed",
            "see the installer's output above",
        ),
        "AZCM0157" => (
            "curl was not permitted to write its download (a permission problem in the temporary directory)",
            "run as root with a writable TMPDIR (check noexec/permissions of /tmp), then run arc-enroll again",
        ),
        _ => return None,
    })
}

/// The agent the installation put in place, checked with `azcmagent version`.
fn installed_agent(settings: &Settings, deadline: &Deadline) -> Result<Agent, Error> {
    let located = agent::locate(settings.azcmagent.as_ref().map(|s| s.value.as_str()))
        .filter(|p| agent::is_executable(p));
    let Some(p) = located else {
        return Err(Error::Agent {
            detail: format!(
                "the installation succeeded but azcmagent is still not found (PATH, {}{})",
                agent::DEFAULT_AGENT_PATH,
                settings
                    .azcmagent
                    .as_ref()
                    .map(|s| format!(", --azcmagent {}", s.value))
                    .unwrap_or_default()
            ),
            advice: "check the installer's output above".into(),
        });
    };
    let agent = Agent::new(p.clone(), &settings.proxy, &settings.arm_endpoint.value);
    match agent.version(deadline) {
        Some(v) => {
            log::info!(
                "--install-agent: azcmagent {v} installed at {}",
                p.display()
            );
            Ok(agent)
        }
        None => Err(Error::Agent {
            detail: format!(
                "the installation succeeded but `{} version` does not run",
                p.display()
            ),
            advice: "check the installer's output above and /var/opt/azcmagent/log/azcmagent.log"
                .into(),
        }),
    }
}

/// A 0700 temp directory, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> Result<PrivateDir, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("arc-enroll-install-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("cannot create the installer directory", &dir, e))?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot write the installer", path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("cannot write the installer", path, e))
}
