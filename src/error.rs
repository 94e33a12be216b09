//! The one error type. Each variant carries what failed, the value that caused it and what to do
//! next; `exit_code()` maps it to the documented exit codes (CONTRACT §4). Errors are printed once,
//! at the top, through `Display`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Exit codes, as documented in the README and CONTRACT §4.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NO_TOKEN: u8 = 3;
    pub const NOT_AUTHORIZED: u8 = 4;
    pub const AGENT: u8 = 5;
    pub const NAME_CONFLICT: u8 = 6;
    pub const DEADLINE: u8 = 7;
    pub const CHECK_FAILED: u8 = 8;
    /// 128 + SIGINT / SIGTERM, as shells report a signalled process.
    pub const SIGINT: u8 = 130;
    pub const SIGTERM: u8 = 143;
}

#[derive(Debug)]
pub enum Error {
    /// A setting has a bad value. Nothing was attempted.
    InvalidSetting {
        setting: String,
        value: String,
        source: String,
        reason: String,
    },
    /// Command-line usage that is not about one setting's value (conflicting options and the like).
    Usage(String),
    /// No managed-identity token: IMDS unreachable, no identity, identity not found, bad reply.
    NoToken { detail: String, advice: String },
    /// The identity lacks roles or the subscription lacks resource providers, still at the deadline.
    NotAuthorized { detail: String, advice: String },
    /// The agent is missing, could not be installed, failed permanently, or a clone was refused.
    Agent { detail: String, advice: String },
    /// Azure refused a request arc-enroll made with these settings (a 400 naming a property):
    /// bad input in effect, found only by asking.
    Rejected { detail: String, advice: String },
    /// Nexus Private Relay could not be assigned (the long-running operation failed, or the VM
    /// is not one).
    Relay { detail: String, advice: String },
    /// Another machine's resource already has this name.
    NameConflict { name: String, detail: String },
    /// The run's deadline came while transient failures were still being retried.
    Deadline {
        timeout: Duration,
        waiting_for: String,
        last: String,
    },
    /// `check` found problems; they were printed above the result line.
    CheckFailed { problems: usize },
    /// SIGTERM or SIGINT arrived; the agent child was stopped and state left unchanged.
    Interrupted { signal: &'static str },
    /// A local file or directory could not be read or written.
    Io {
        what: String,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A bug in arc-enroll.
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidSetting { .. } | Error::Usage(_) | Error::Rejected { .. } => exit::USAGE,
            Error::Relay { .. } => exit::AGENT,
            Error::NoToken { .. } => exit::NO_TOKEN,
            Error::NotAuthorized { .. } => exit::NOT_AUTHORIZED,
            Error::Agent { .. } => exit::AGENT,
            Error::NameConflict { .. } => exit::NAME_CONFLICT,
            Error::Deadline { .. } => exit::DEADLINE,
            Error::CheckFailed { .. } => exit::CHECK_FAILED,
            Error::Interrupted { signal } => {
                if *signal == "SIGINT" {
                    exit::SIGINT
                } else {
                    exit::SIGTERM
                }
            }
            Error::Io { .. } | Error::Internal(_) => exit::INTERNAL,
        }
    }

    /// A short machine-readable name for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidSetting { .. } => "invalid_setting",
            Error::Usage(_) => "usage",
            Error::Rejected { .. } => "rejected",
            Error::Relay { .. } => "relay",
            Error::NoToken { .. } => "no_token",
            Error::NotAuthorized { .. } => "not_authorized",
            Error::Agent { .. } => "agent",
            Error::NameConflict { .. } => "name_conflict",
            Error::Deadline { .. } => "deadline",
            Error::CheckFailed { .. } => "check_failed",
            Error::Interrupted { .. } => "interrupted",
            Error::Io { .. } => "io",
            Error::Internal(_) => "internal",
        }
    }

    pub fn invalid(
        setting: impl Into<String>,
        value: impl Into<String>,
        source: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidSetting {
            setting: setting.into(),
            value: value.into(),
            source: source.into(),
            reason: reason.into(),
        }
    }

    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, error: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: path.into(),
            error,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidSetting {
                setting,
                value,
                source,
                reason,
            } => write!(
                f,
                "invalid setting {setting}={value:?} (from {source}): {reason}; fix it and run again (nothing was attempted)"
            ),
            Error::Usage(msg) => write!(f, "{msg} (nothing was attempted; see --help)"),
            Error::NoToken { detail, advice } => {
                write!(f, "no managed-identity token: {detail}; {advice}")
            }
            Error::NotAuthorized { detail, advice } => {
                write!(f, "not authorized: {detail}; {advice}")
            }
            Error::Agent { detail, advice } => write!(f, "agent problem: {detail}; {advice}"),
            Error::Rejected { detail, advice } => {
                write!(f, "Azure rejected the request: {detail}; {advice}")
            }
            Error::Relay { detail, advice } => {
                write!(f, "Private Relay not assigned: {detail}; {advice}")
            }
            Error::NameConflict { name, detail } => write!(
                f,
                "name conflict: a different machine's Arc resource is already named {name:?} ({detail}); \
                 give this machine a unique name, e.g. --resource-name '{{hostname}}-{{vm_uuid8}}', \
                 or delete the stale resource in Azure"
            ),
            Error::Deadline {
                timeout,
                waiting_for,
                last,
            } => write!(
                f,
                "deadline of {} reached while {waiting_for}; last result: {last}; \
                 run again later or raise --timeout",
                crate::timefmt::human(*timeout)
            ),
            Error::CheckFailed { problems } => write!(
                f,
                "check found {problems} problem{} (listed above); fix them and run `arc-enroll check` again",
                if *problems == 1 { "" } else { "s" }
            ),
            Error::Interrupted { signal } => write!(
                f,
                "interrupted by {signal}: the agent was stopped, the token file removed and state left unchanged; \
                 run arc-enroll again to finish"
            ),
            Error::Io { what, path, error } => write!(
                f,
                "{what} {}: {error}; check that the path exists, is writable by root and the disk is not full",
                path.display()
            ),
            Error::Internal(msg) => write!(
                f,
                "internal error (a bug in arc-enroll): {msg}; please report it with this log"
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_documented_exit_code() {
        let cases: Vec<(Error, u8)> = vec![
            (Error::invalid("tenant_id", "x", "flag", "not a GUID"), 2),
            (Error::Usage("two identity selectors".into()), 2),
            (
                Error::NoToken {
                    detail: "d".into(),
                    advice: "a".into(),
                },
                3,
            ),
            (
                Error::NotAuthorized {
                    detail: "d".into(),
                    advice: "a".into(),
                },
                4,
            ),
            (
                Error::Agent {
                    detail: "d".into(),
                    advice: "a".into(),
                },
                5,
            ),
            (
                Error::NameConflict {
                    name: "n".into(),
                    detail: "d".into(),
                },
                6,
            ),
            (
                Error::Deadline {
                    timeout: Duration::from_secs(1),
                    waiting_for: "w".into(),
                    last: "l".into(),
                },
                7,
            ),
            (Error::CheckFailed { problems: 2 }, 8),
            (Error::Interrupted { signal: "SIGTERM" }, 143),
            (Error::Interrupted { signal: "SIGINT" }, 130),
            (Error::Internal("x".into()), 1),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit_code(), code, "{err}");
        }
    }

    #[test]
    fn invalid_setting_names_setting_value_and_source() {
        let msg = Error::invalid(
            "--tenant-id",
            "abc",
            "environment ARC_ENROLL_TENANT_ID",
            "not a GUID",
        )
        .to_string();
        assert!(msg.contains("--tenant-id"), "{msg}");
        assert!(msg.contains("\"abc\""), "{msg}");
        assert!(msg.contains("ARC_ENROLL_TENANT_ID"), "{msg}");
    }
}
