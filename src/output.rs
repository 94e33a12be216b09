//! The final one-line result on stdout (`--json`: one JSON object), and `--version` text.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ARC_ENROLL_GIT_COMMIT"),
    ", target ",
    env!("ARC_ENROLL_TARGET"),
    ")"
);

static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(on: bool) {
    JSON.store(on, Ordering::SeqCst);
}

pub fn json() -> bool {
    JSON.load(Ordering::SeqCst)
}

/// Write text to stdout. A closed stdout or broken pipe (`arc-enroll user-data | head -1`) ends
/// the process quietly with 141 (128 + SIGPIPE), as a shell tool would, never a panic.
pub fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let res = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    if let Err(e) = res {
        exit_on_write_error(&e);
    }
}

/// The exit for a failed write to stdout: 141 on a broken pipe, else the internal-error code.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    std::process::exit(crate::error::exit::INTERNAL as i32);
}

/// The result line: human text, or with `--json` the object (plus `"ok": true`).
pub fn print_result(human: &str, mut object: serde_json::Value) {
    if json() {
        if let Some(map) = object.as_object_mut() {
            map.insert("ok".into(), true.into());
        }
        stdout(&format!("{object}\n"));
    } else {
        stdout(&format!(
            "arc-enroll: {}\n",
            crate::text::escape_remote_lines(human)
        ));
    }
}

/// The result line of a failed run.
pub fn print_failure(err: &Error) {
    if json() {
        let obj = serde_json::json!({
            "ok": false,
            "exit_code": err.exit_code(),
            "error": err.kind(),
            "message": err.to_string(),
        });
        stdout(&format!("{obj}\n"));
    } else {
        stdout(&format!(
            "arc-enroll: FAILED (exit {}, {}): {}\n",
            err.exit_code(),
            err.kind(),
            crate::text::escape_remote_lines(&err.to_string())
        ));
    }
}
