//! The binary's edges: `--version` text, and output into a broken pipe or a full disk (quiet,
//! non-zero, never a panic). Runs against `ARC_ENROLL_BIN` under `ARC_ENROLL_BIN_RUNNER` too.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{run_guarded, Run, Sandbox};

/// No IMDS is contacted by these commands; a closed loopback port, should one be.
const NO_IMDS: &str = "http://127.0.0.1:9";

/// Run `args` with stdout on a pipe whose read end is already closed (`... | head -0` without the
/// race): every write to stdout fails with EPIPE (Rust ignores SIGPIPE).
fn run_into_closed_pipe(sb: &Sandbox, args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut c = sb.cmd(NO_IMDS);
    c.args(args);
    c.stdout(Stdio::from(writer)).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn arc-enroll");
    let out = common::wait_with_limit(child, Duration::from_secs(60));
    Run {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: Duration::ZERO,
    }
}

fn assert_quiet_failure(run: &Run, what: &str, want: i32) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "{what}: a panic message on stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.code,
        Some(want),
        "{what}: exit code (None: killed by a signal)\n{}",
        run.stderr
    );
}

#[test]
fn broken_pipe_ends_quietly_with_141() {
    let sb = Sandbox::new("epipe");
    for args in [
        &["--help"][..],
        &["--version"],
        &["-V"],
        &["connect", "--help"],
        &["proxy", "https://management.azure.com/"],
        &["--json", "proxy", "https://management.azure.com/"],
        &["status"],
    ] {
        let run = run_into_closed_pipe(&sb, args);
        assert_quiet_failure(&run, &format!("{args:?} | head -0"), 141);
    }
}

#[test]
fn full_disk_on_stdout_fails_without_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full here; skipped");
        return;
    };
    let sb = Sandbox::new("enospc");
    let mut c = sb.cmd(NO_IMDS);
    c.args(["proxy", "https://management.azure.com/"]);
    c.stdout(Stdio::from(full)).stderr(Stdio::piped());
    let out = common::wait_with_limit(c.spawn().unwrap(), Duration::from_secs(60));
    let run = Run {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: Duration::ZERO,
    };
    assert_quiet_failure(&run, "proxy > /dev/full", 1);
}

/// `arc-enroll --version`: `arc-enroll 0.1.0 (commit 0123456789ab, target aarch64-unknown-linux-musl)`.
#[test]
fn version_reports_version_commit_and_target() {
    let sb = Sandbox::new("version");
    let run = sb.run(NO_IMDS, &["--version"], &[]);
    run.expect_code(0);
    let line = run.stdout.trim();
    let prefix = format!("arc-enroll {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix), "{line:?}");
    let rest = line[prefix.len()..]
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, target) = rest
        .split_once(", target ")
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "commit {commit:?} in {line:?}"
    );
    assert!(
        target.split('-').count() >= 3 && target.contains("linux"),
        "target {target:?} in {line:?}"
    );
    match std::env::var("ARC_ENROLL_EXPECT_TARGET") {
        // `make test-release` names the target of the binary it hands over.
        Ok(want) => assert_eq!(target, want, "{line:?}"),
        // The binary cargo built for this run: this machine's architecture.
        Err(_) if std::env::var_os("ARC_ENROLL_BIN").is_none() => {
            assert!(
                target.starts_with(std::env::consts::ARCH),
                "target {target:?} on {}",
                std::env::consts::ARCH
            )
        }
        Err(_) => {}
    }
    // `-V` stays short.
    let short = sb.run(NO_IMDS, &["-V"], &[]);
    short.expect_code(0);
    assert_eq!(
        short.stdout.trim(),
        format!("arc-enroll {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `run_guarded` is the harness's normal path; keep it exercised here for `--help`.
#[test]
fn help_prints_usage_and_exits_zero() {
    let sb = Sandbox::new("help");
    let mut c = sb.cmd(NO_IMDS);
    c.arg("--help");
    let run = run_guarded(c, Duration::from_secs(60));
    run.expect_code(0).out_has("Usage:");
}
