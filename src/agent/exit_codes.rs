//! What the agent's exit codes mean for us (FACTS §1.5), and how one run ended.

use std::time::Duration;

/// What an agent exit code means for us (FACTS §1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentClass {
    Success,
    /// The token was refused or expired: get a fresh one and try again.
    RetryFreshToken,
    /// Roles still propagating (or missing): fresh token, retry until the deadline, then exit 4.
    Permission,
    /// Resource providers not registered: retry until the deadline, then exit 4.
    Providers,
    /// Transient (network, agent services starting): retry.
    Retry,
    /// Failed after possibly creating partial state: clean locally, then retry.
    RetryAfterCleanup,
    AlreadyConnected,
    NameConflict,
    Permanent,
}

/// Classify an agent exit (code, or None when killed by a signal) with its output.
pub fn classify(code: Option<i32>, output: &str) -> AgentClass {
    let out = output.to_ascii_lowercase();
    match code {
        None => AgentClass::Retry,
        Some(0) => AgentClass::Success,
        Some(12) | Some(41) => AgentClass::RetryFreshToken,
        Some(42) => {
            if out.contains("isn't registered to use namespace")
                || out.contains("is not registered to use namespace")
                || out.contains("missingsubscriptionregistration")
            {
                AgentClass::Providers
            } else if out.contains("status code=429")
                || out.contains("toomanyrequests")
                || out.contains("subscriptionrequeststhrottled")
            {
                // ARM throttled the agent's own write (FACTS §12; the agent's wording follows its
                // 403 form `... Status Code=403`, UNCONFIRMED for 429): not a role problem.
                AgentClass::Retry
            } else if out.contains("reservedresourcename")
                || out.contains("invalidresourcename")
                || out.contains("httpstatuscode:400")
            {
                AgentClass::Permanent
            } else {
                // "Exit 42 is usually RBAC still propagating" (FACTS §1.5).
                AgentClass::Permission
            }
        }
        Some(44) => AgentClass::NameConflict,
        Some(67) => AgentClass::AlreadyConnected,
        Some(62) | Some(81) => AgentClass::RetryAfterCleanup,
        Some(1) | Some(2) | Some(4) | Some(6) | Some(26) | Some(45) | Some(61) | Some(64)
        | Some(65) | Some(66) | Some(70) | Some(75) | Some(82) | Some(83) | Some(105) => {
            AgentClass::Retry
        }
        Some(_) => AgentClass::Permanent,
    }
}

/// What the agent printed for a code, for messages: `AZCM0042`.
pub fn azcm(code: i32) -> String {
    format!("AZCM{code:04}")
}

/// How one agent run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The last lines of its output (stdout and stderr), secrets scrubbed.
    pub tail: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c} ({})", azcm(c)),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended".into(),
        }
    }

    pub fn tail_text(&self) -> String {
        self.tail.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let rbac = "The client 'x' with object id 'y' does not have authorization to perform action 'Microsoft.HybridCompute/machines/write'";
        let cases: &[(Option<i32>, &str, AgentClass)] = &[
            (Some(0), "", AgentClass::Success),
            (Some(12), "", AgentClass::RetryFreshToken),
            (Some(41), "", AgentClass::RetryFreshToken),
            (Some(42), rbac, AgentClass::Permission),
            (Some(42), "", AgentClass::Permission),
            (
                Some(42),
                "The subscription isn't registered to use namespace 'Microsoft.HybridCompute'",
                AgentClass::Providers,
            ),
            (
                Some(42),
                "Code: ReservedResourceName httpStatusCode:400",
                AgentClass::Permanent,
            ),
            (
                Some(42),
                "Failed to AzcmagentConnect ARM resource: {\"error\":{\"code\":\"SubscriptionRequestsThrottled\",\"message\":\"Number of 'write' requests for subscription 's' actor 'o' exceeded.\"}} Status Code=429",
                AgentClass::Retry,
            ),
            (
                Some(42),
                "Code=\"TooManyRequests\" Status Code=429",
                AgentClass::Retry,
            ),
            (Some(44), "", AgentClass::NameConflict),
            (Some(67), "", AgentClass::AlreadyConnected),
            (Some(62), "", AgentClass::RetryAfterCleanup),
            (Some(81), "", AgentClass::RetryAfterCleanup),
            (Some(26), "", AgentClass::Retry),
            (Some(1), "", AgentClass::Retry),
            (Some(64), "", AgentClass::Retry),
            (None, "", AgentClass::Retry),
            (Some(16), "", AgentClass::Permanent),
            (Some(18), "", AgentClass::Permanent),
            (Some(20), "", AgentClass::Permanent),
            (Some(23), "", AgentClass::Permanent),
            (Some(68), "", AgentClass::Permanent),
            (Some(102), "", AgentClass::Permanent),
        ];
        for (code, out, want) in cases {
            assert_eq!(&classify(*code, out), want, "exit {code:?} {out}");
        }
    }
}
