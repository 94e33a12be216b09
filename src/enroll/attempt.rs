//! One agent attempt's answer → what the sequence does next, as one pure function
//! (`next_action`), and the error the attempts come to when the deadline ends them.

use crate::agent::{AgentClass, Outcome, Target};
use crate::config::Settings;
use crate::error::Error;
use crate::retry::Deadline;
use crate::timefmt::human;

/// What follows one `azcmagent connect` attempt.
#[derive(Debug)]
pub enum Next {
    /// Connected, or already connected: check it and record it.
    Record,
    /// Not retried: stop with this error.
    Stop(Error),
    /// Transient: a fresh token and another attempt after the backoff; the reason is logged.
    Retry(String),
    /// The agent failed mid-way and may have half-configured itself: disconnect locally, then
    /// retry (the failed attempt may also have created the resource in Azure).
    CleanUpThenRetry(String),
}

/// The next step after an attempt that the agent answered with `class` (see `agent::classify`).
pub fn next_action(class: AgentClass, out: &Outcome, resource_name: &str) -> Next {
    let how = out.describe();
    match class {
        AgentClass::Success | AgentClass::AlreadyConnected => Next::Record,
        AgentClass::NameConflict => Next::Stop(Error::NameConflict {
            name: resource_name.to_string(),
            detail: format!("the agent answered {how}: {}", last_line(out)),
        }),
        AgentClass::Permanent => Next::Stop(Error::Agent {
            detail: format!("azcmagent connect failed with {how}: {}", out.tail_text()),
            advice: "this error is not retried; see /var/opt/azcmagent/log/azcmagent.log and the \
                     AZCM code in Microsoft's troubleshooting guide"
                .into(),
        }),
        AgentClass::RetryAfterCleanup => Next::CleanUpThenRetry(format!("agent {how}")),
        AgentClass::Permission => Next::Retry(format!(
            "agent {how}: the identity is not (yet) allowed to create the machine; a new role \
             assignment can take minutes to propagate"
        )),
        AgentClass::Providers => Next::Retry(format!(
            "agent {how}: resource providers not registered: {}",
            last_line(out)
        )),
        AgentClass::RetryFreshToken => Next::Retry(format!(
            "agent {how}: the token was refused; a fresh one will be used"
        )),
        AgentClass::Retry => Next::Retry(format!("agent {how}: transient: {}", last_line(out))),
    }
}

/// For the log line of an attempt that is not retried silently.
pub fn describe_class(c: AgentClass) -> &'static str {
    match c {
        AgentClass::Success => "connected",
        AgentClass::AlreadyConnected => "already connected",
        AgentClass::NameConflict => "name conflict (not retried)",
        AgentClass::Permanent => "permanent error (not retried)",
        AgentClass::RetryAfterCleanup => "failed mid-way; will clean up locally and retry",
        AgentClass::Permission => "not authorized yet; will retry with a fresh token",
        AgentClass::Providers => "resource providers missing; will retry",
        AgentClass::RetryFreshToken => "token refused; will retry with a fresh token",
        AgentClass::Retry => "transient; will retry",
    }
}

/// Retried classes get their log line from the retry loop (reason, wait, deadline); these get
/// their own.
pub fn logs_itself(c: AgentClass) -> bool {
    matches!(
        c,
        AgentClass::Success
            | AgentClass::AlreadyConnected
            | AgentClass::NameConflict
            | AgentClass::Permanent
            | AgentClass::RetryAfterCleanup
    )
}

fn last_line(out: &Outcome) -> String {
    out.tail
        .last()
        .cloned()
        .unwrap_or_else(|| "no output".into())
}

/// The error when the deadline ends the attempts: what the last answer means for the user.
pub fn deadline_error(
    settings: &Settings,
    deadline: &Deadline,
    class: AgentClass,
    target: Option<&Target>,
    last: String,
) -> Error {
    let scope = target
        .map(|t| {
            format!(
                "/subscriptions/{}/resourceGroups/{}",
                t.subscription_id, t.resource_group
            )
        })
        .unwrap_or_else(|| "the target resource group".into());
    match class {
        AgentClass::Permission => Error::NotAuthorized {
            detail: format!(
                "{} still could not create the machine when the deadline ({}) came: {last}",
                settings.identity.value.describe(),
                human(deadline.timeout)
            ),
            advice: format!(
                "assign the roles \"Azure Connected Machine Resource Manager\" and \"HybridCompute Machine \
                 ListAccessDetails Action\" (or \"Azure Connected Machine Onboarding\") to the identity at scope \
                 {scope}, e.g. `az role assignment create --assignee <principal id> --role \"Azure Connected \
                 Machine Resource Manager\" --scope {scope}`, then run arc-enroll again"
            ),
        },
        AgentClass::Providers => Error::NotAuthorized {
            detail: format!("resource providers are still not registered at the deadline: {last}"),
            advice: "register them once per subscription: `az provider register --namespace Microsoft.HybridCompute`, \
                     Microsoft.GuestConfiguration, Microsoft.HybridConnectivity (and Microsoft.AzureArcData), then run \
                     arc-enroll again"
                .into(),
        },
        _ => Error::Deadline {
            timeout: deadline.timeout,
            waiting_for: "retrying azcmagent connect".into(),
            last,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::classify;

    fn outcome(code: Option<i32>, tail: &[&str]) -> Outcome {
        Outcome {
            code,
            signal: code.is_none().then_some(9),
            tail: tail.iter().map(|s| s.to_string()).collect(),
            elapsed: Duration::from_secs(1),
        }
    }

    /// (agent exit code, last output line) → the kind of next step and a fragment of its text.
    #[test]
    fn each_agent_answer_maps_to_its_next_step() {
        let table: &[(Option<i32>, &str, &str, &str)] = &[
            (Some(0), "Connected machine to Azure", "record", ""),
            (Some(67), "already connected", "record", ""),
            (Some(44), "resource name taken", "stop", "name conflict"),
            (Some(42), "ReservedResourceName", "stop", "not retried"),
            (Some(99), "boom", "stop", "exit 99 (AZCM0099): boom"),
            (Some(62), "failed mid-way", "cleanup", "agent exit 62"),
            (Some(81), "failed mid-way", "cleanup", "agent exit 81"),
            (
                Some(42),
                "AuthorizationFailed",
                "retry",
                "not (yet) allowed",
            ),
            (
                Some(42),
                "MissingSubscriptionRegistration",
                "retry",
                "providers not registered: MissingSubscriptionRegistration",
            ),
            (Some(12), "token expired", "retry", "token was refused"),
            (Some(41), "token invalid", "retry", "token was refused"),
            (
                Some(4),
                "network unreachable",
                "retry",
                "transient: network unreachable",
            ),
            (None, "killed", "retry", "killed by signal 9: transient"),
        ];
        for &(code, line, kind, fragment) in table {
            let out = outcome(code, &[line]);
            let next = next_action(classify(code, line), &out, "web-01");
            let (got, text) = match &next {
                Next::Record => ("record", String::new()),
                Next::Stop(e) => ("stop", e.to_string()),
                Next::Retry(r) => ("retry", r.clone()),
                Next::CleanUpThenRetry(r) => ("cleanup", r.clone()),
            };
            assert_eq!(got, kind, "exit {code:?} {line:?}: {next:?}");
            assert!(
                text.contains(fragment),
                "exit {code:?} {line:?}: {text:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn a_name_conflict_names_the_resource_and_exits_6() {
        let out = outcome(Some(44), &["conflict"]);
        let Next::Stop(e) = next_action(AgentClass::NameConflict, &out, "web-01") else {
            panic!("a name conflict must stop");
        };
        assert_eq!(e.exit_code(), 6);
        assert!(e.to_string().contains("\"web-01\""), "{e}");
    }

    #[test]
    fn only_retried_classes_leave_their_log_line_to_the_retry_loop() {
        for c in [
            AgentClass::Permission,
            AgentClass::Providers,
            AgentClass::RetryFreshToken,
            AgentClass::Retry,
        ] {
            assert!(!logs_itself(c), "{c:?}");
        }
        for c in [
            AgentClass::Success,
            AgentClass::AlreadyConnected,
            AgentClass::NameConflict,
            AgentClass::Permanent,
            AgentClass::RetryAfterCleanup,
        ] {
            assert!(logs_itself(c), "{c:?}");
        }
    }
}
