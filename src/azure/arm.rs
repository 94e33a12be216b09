//! Azure Resource Manager reads: resource-provider registration, the identity's effective
//! permissions on the resource group, and whether a machine resource of the target name exists.
//! A thin client over `crate::azure::http::Http` (proxy per curl rules, system CA store) with the bearer
//! token; 429/5xx are retried like IMDS (FACTS §5.4: backoff with jitter, `Retry-After` a floor),
//! but only a few times: these reads are advice, the agent's own answer is what counts. Every
//! request is counted and paced by the budget ARM reports (`pacing`, FACTS §12): when the
//! subscription's remaining read budget is low the next read waits a little first.
//! 401/403 mean "this token cannot read that", which callers report and then fall back from.
//! The token is never logged: it only goes into the `Authorization` header.

use std::time::Duration;

use serde::Deserialize;

use crate::azure::http::{Failure, Http};
use crate::azure::pacing::{self, Op};
use crate::error::Error;
use crate::retry::{retry, Attempt, Backoff, Deadline, BACKOFF_BASE, BACKOFF_CAP};
use crate::secret::AccessToken;

/// ARM reads answer in well under a second; a proxy may add a few.
pub const ARM_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times one read is tried when ARM throttles (429) or fails (5xx) before we give up on
/// it and fall back to the agent's own answer.
pub const ARM_READ_ATTEMPTS: u32 = 5;

pub const PROVIDERS_API_VERSION: &str = "2021-04-01";
pub const PERMISSIONS_API_VERSION: &str = "2022-04-01";
pub const MACHINES_API_VERSION: &str = "2024-07-10";

/// Resource providers an Arc-enabled server needs (FACTS §8): the first three for the machine and
/// its agent, `Microsoft.AzureArcData` for Arc-enabled SQL Server.
pub const REQUIRED_PROVIDERS: [&str; 3] = [
    "Microsoft.HybridCompute",
    "Microsoft.GuestConfiguration",
    "Microsoft.HybridConnectivity",
];
pub const RECOMMENDED_PROVIDERS: [&str; 1] = ["Microsoft.AzureArcData"];

/// Actions `azcmagent connect` performs with the caller's token (FACTS §8).
pub const NEEDED_ACTIONS: [&str; 3] = [
    "Microsoft.HybridCompute/machines/read",
    "Microsoft.HybridCompute/machines/write",
    "Microsoft.HybridCompute/machines/listAccessDetails/action",
];

/// The roles that grant `NEEDED_ACTIONS` (FACTS §8, NEXUS-HOWTO).
pub const ROLE_ADVICE: &str = "\"Azure Connected Machine Resource Manager\" and \"HybridCompute Machine ListAccessDetails Action\" \
     (or \"Azure Connected Machine Onboarding\")";

/// What one read came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Read<T> {
    Ok(T),
    /// 401/403: the token cannot read this; the detail carries ARM's error code and message.
    Denied(String),
    /// No usable answer (network, persistent 429/5xx, unexpected reply).
    Unavailable(String),
    /// The proxy refused the CONNECT (e.g. 407) or TLS failed (a certificate not trusted): the
    /// agent goes the same way, so it will likely fail the same way. The text says what to do.
    Refused(String),
}

/// One `Microsoft.Authorization/permissions` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
}

/// What matters about an existing machine resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub id: String,
    pub vm_uuid: Option<String>,
    pub status: Option<String>,
}

/// ARM at `base` (e.g. `https://management.azure.com`) with one token.
pub struct Arm<'a> {
    http: &'a Http,
    base: String,
    token: &'a AccessToken,
}

impl<'a> Arm<'a> {
    pub fn new(http: &'a Http, base: &str, token: &'a AccessToken) -> Arm<'a> {
        Arm {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// `registrationState` of a resource provider in the subscription (e.g. `Registered`).
    pub fn provider_state(
        &self,
        subscription: &str,
        namespace: &str,
        deadline: &Deadline,
    ) -> Result<Read<String>, Error> {
        let path = format!(
            "/subscriptions/{subscription}/providers/{namespace}?api-version={PROVIDERS_API_VERSION}"
        );
        Ok(match self.get(&path, deadline)? {
            Read::Ok((200, body)) => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct P {
                    #[serde(default)]
                    registration_state: String,
                }
                match serde_json::from_str::<P>(&body) {
                    Ok(p) => Read::Ok(p.registration_state),
                    Err(e) => Read::Unavailable(format!("unreadable provider answer: {e}")),
                }
            }
            Read::Ok((status, body)) => Read::Unavailable(status_text(status, &body)),
            Read::Denied(d) => Read::Denied(d),
            Read::Unavailable(u) => Read::Unavailable(u),
            Read::Refused(r) => Read::Refused(r),
        })
    }

    /// The caller's effective permissions on the resource group.
    pub fn permissions(
        &self,
        subscription: &str,
        resource_group: &str,
        deadline: &Deadline,
    ) -> Result<Read<Vec<Permission>>, Error> {
        self.permissions_at(
            &format!("/subscriptions/{subscription}/resourceGroups/{resource_group}"),
            deadline,
        )
    }

    /// The caller's effective permissions at any scope (a resource group, or one resource).
    pub fn permissions_at(
        &self,
        scope: &str,
        deadline: &Deadline,
    ) -> Result<Read<Vec<Permission>>, Error> {
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/permissions?api-version={PERMISSIONS_API_VERSION}"
        );
        Ok(match self.get(&path, deadline)? {
            Read::Ok((200, body)) => {
                #[derive(Deserialize)]
                struct List {
                    #[serde(default)]
                    value: Vec<Permission>,
                }
                match serde_json::from_str::<List>(&body) {
                    Ok(l) => Read::Ok(l.value),
                    Err(e) => Read::Unavailable(format!("unreadable permissions answer: {e}")),
                }
            }
            // Includes 404: a resource group that does not exist yet grants nothing.
            Read::Ok((status, body)) => Read::Unavailable(status_text(status, &body)),
            Read::Denied(d) => Read::Denied(d),
            Read::Unavailable(u) => Read::Unavailable(u),
            Read::Refused(r) => Read::Refused(r),
        })
    }

    /// The machine resource of that name: `Ok(None)` when there is none (404).
    pub fn machine(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        deadline: &Deadline,
    ) -> Result<Read<Option<Machine>>, Error> {
        let path = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.HybridCompute/machines/{name}?api-version={MACHINES_API_VERSION}"
        );
        Ok(match self.get(&path, deadline)? {
            Read::Ok((200, body)) => match parse_machine(&body) {
                Some(m) => Read::Ok(Some(m)),
                None => Read::Unavailable("unreadable machine resource".into()),
            },
            Read::Ok((404, _)) => Read::Ok(None),
            Read::Ok((status, body)) => Read::Unavailable(status_text(status, &body)),
            Read::Denied(d) => Read::Denied(d),
            Read::Unavailable(u) => Read::Unavailable(u),
            Read::Refused(r) => Read::Refused(r),
        })
    }

    /// GET `path`, retrying 408/429/5xx a few times. `Read::Ok((status, body))` for 2xx and 404.
    fn get(&self, path: &str, deadline: &Deadline) -> Result<Read<(u16, String)>, Error> {
        let url = format!("{}{path}", self.base);
        let what = path.split('?').next().unwrap_or(path);
        let auth = format!("Bearer {}", self.token.expose());
        let headers = [
            ("Authorization", auth.as_str()),
            ("Accept", "application/json"),
        ];
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let mut last = String::new();
        let result = retry(
            &format!("ARM GET {what}"),
            deadline,
            &mut backoff,
            |n| {
                let timeout = deadline
                    .clock
                    .io_timeout(deadline.bounded(ARM_REQUEST_TIMEOUT));
                let answer =
                    match pacing::metered(Op::Read, &format!("ARM GET {what}"), deadline, || {
                        self.http.request("GET", &url, &headers, None, timeout)
                    }) {
                        Ok(answer) => answer,
                        Err(e) => return Attempt::Fail(e),
                    };
                match answer {
                    Ok(r) => match classify(r.status) {
                        Class::Answer => Attempt::Done(Read::Ok((r.status, r.body))),
                        Class::Denied => {
                            Attempt::Done(Read::Denied(status_text(r.status, &r.body)))
                        }
                        Class::Transient => {
                            last = status_text(r.status, &r.body);
                            if n >= ARM_READ_ATTEMPTS {
                                Attempt::Done(Read::Unavailable(format!(
                                    "{last} (after {n} attempts)"
                                )))
                            } else {
                                Attempt::Retry {
                                    reason: last.clone(),
                                    retry_after: r.retry_after,
                                }
                            }
                        }
                        Class::Other => Attempt::Done(Read::Ok((r.status, r.body))),
                    },
                    Err(f) => Attempt::Done(match refusal_advice(&f) {
                        Some(advice) => {
                            Read::Refused(format!("{}; {advice}", describe_failure(&f)))
                        }
                        None => Read::Unavailable(describe_failure(&f)),
                    }),
                }
            },
            |last| Error::Deadline {
                timeout: deadline.timeout,
                waiting_for: format!("reading {what} from ARM"),
                last,
            },
        );
        match result {
            Ok(r) => Ok(r),
            Err(e @ Error::Interrupted { .. }) => Err(e),
            Err(e) => Ok(Read::Unavailable(e.to_string())),
        }
    }
}

enum Class {
    Answer,
    Denied,
    Transient,
    Other,
}

fn classify(status: u16) -> Class {
    match status {
        200..=299 | 404 => Class::Answer,
        401 | 403 => Class::Denied,
        408 | 429 | 500..=599 => Class::Transient,
        _ => Class::Other,
    }
}

/// A transport failure in words, with the fix where there is an obvious one.
pub fn describe_failure(f: &Failure) -> String {
    match f {
        Failure::Tls(m) => format!("TLS failed: {m}"),
        // ureq 3 hands some rustls errors back wrapped in io::Error; they are still TLS failures.
        Failure::Other(m) if is_tls_text(m) => {
            if m.contains("UnknownIssuer") {
                format!(
                    "TLS failed: the server's certificate is not trusted (UnknownIssuer: its issuer is not \
                     in {}; {m})",
                    crate::azure::http::TrustStore::current().describe()
                )
            } else {
                format!("TLS failed: {m}")
            }
        }
        Failure::Proxy(m) => {
            format!("the proxy refused or failed the CONNECT ({m}); allow the host at the proxy")
        }
        // The advice goes with the finding (check) or the warning (connect), once.
        Failure::ProxyStatus { code, .. } => crate::azure::http::proxy_status_text(*code),
        other => other.to_string(),
    }
}

/// For a proxy refusal or a TLS failure: what to do (the agent would hit the same wall).
fn refusal_advice(f: &Failure) -> Option<String> {
    if is_tls_failure(f) {
        return Some(format!(
            "if a proxy inspects TLS, {}",
            crate::azure::http::TrustStore::current().add_ca_advice()
        ));
    }
    match f {
        Failure::ProxyStatus { advice, .. } if !advice.is_empty() => Some(advice.clone()),
        _ => None,
    }
}

/// True when a transport failure is a TLS (certificate) failure.
pub fn is_tls_failure(f: &Failure) -> bool {
    match f {
        Failure::Tls(_) => true,
        Failure::Other(m) => is_tls_text(m),
        _ => false,
    }
}

fn is_tls_text(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("peer certificate") || m.contains("certificate") && m.contains("invalid")
}

/// `HTTP 409: Code: message`: an answer's status and ARM's error, for one log line.
pub fn status_text(status: u16, body: &str) -> String {
    format!(
        "HTTP {status}{}",
        arm_error(body)
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

/// `code: message` from ARM's error body `{"error":{"code":..,"message":..}}`.
pub fn arm_error(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    let code = crate::text::escape_remote(e.get("code").and_then(|c| c.as_str()).unwrap_or(""));
    let msg = crate::text::escape_remote(e.get("message").and_then(|c| c.as_str()).unwrap_or(""));
    match (code.is_empty(), msg.is_empty()) {
        (true, true) => None,
        (false, true) => Some(code.into_owned()),
        (true, false) => Some(msg.into_owned()),
        (false, false) => Some(format!("{code}: {msg}")),
    }
}

fn parse_machine(body: &str) -> Option<Machine> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let props = v.get("properties");
    let s = |x: Option<&serde_json::Value>| {
        x.and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Some(Machine {
        id: s(v.get("id")).unwrap_or_default(),
        vm_uuid: s(props.and_then(|p| p.get("vmUuid"))),
        status: s(props.and_then(|p| p.get("status"))),
    })
}

/// ARM's action pattern match: case-insensitive, `*` matches any run of characters (`/` too).
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let a: Vec<char> = action.to_ascii_lowercase().chars().collect();
    // Iterative glob with backtracking to the last star.
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < a.len() {
        if i < p.len() && p[i] != '*' && p[i] == a[j] {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// An action is allowed when some permission entry grants it and does not exclude it again in its
/// own `notActions` (effective permissions are the union of each role's actions minus its own
/// notActions).
pub fn allowed(perms: &[Permission], action: &str) -> bool {
    perms.iter().any(|p| {
        p.actions.iter().any(|a| action_matches(a, action))
            && !p.not_actions.iter().any(|n| action_matches(n, action))
    })
}

/// Which of `NEEDED_ACTIONS` the permissions do not grant.
pub fn missing_actions(perms: &[Permission]) -> Vec<&'static str> {
    NEEDED_ACTIONS
        .iter()
        .copied()
        .filter(|a| !allowed(perms, a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(actions: &[&str], not_actions: &[&str]) -> Permission {
        Permission {
            actions: actions.iter().map(|s| s.to_string()).collect(),
            not_actions: not_actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn wildcard_patterns_match_like_arm() {
        let w = "Microsoft.HybridCompute/machines/write";
        let l = "Microsoft.HybridCompute/machines/listAccessDetails/action";
        let cases: &[(&str, &str, bool)] = &[
            ("*", w, true),
            ("Microsoft.HybridCompute/*", w, true),
            ("Microsoft.HybridCompute/*", l, true),
            ("Microsoft.HybridCompute/machines/*", w, true),
            ("Microsoft.HybridCompute/machines/*", l, true),
            ("microsoft.hybridcompute/MACHINES/write", w, true),
            ("Microsoft.HybridCompute/machines/write", w, true),
            ("Microsoft.HybridCompute/machines/read", w, false),
            (
                "Microsoft.HybridCompute/*/read",
                "Microsoft.HybridCompute/machines/read",
                true,
            ),
            ("Microsoft.HybridCompute/*/read", w, false),
            ("*/read", "Microsoft.HybridCompute/machines/read", true),
            ("*/read", w, false),
            ("Microsoft.Compute/*", w, false),
            ("Microsoft.HybridCompute/machines/extensions/*", w, false),
            ("Microsoft.HybridCompute/machines", w, false),
            ("", w, false),
        ];
        for (pattern, action, want) in cases {
            assert_eq!(
                action_matches(pattern, action),
                *want,
                "pattern {pattern:?} vs action {action:?}"
            );
        }
    }

    #[test]
    fn not_actions_subtract_within_their_own_entry_only() {
        let w = "Microsoft.HybridCompute/machines/write";
        let cases: Vec<(&str, Vec<Permission>, bool)> = vec![
            ("no permissions", vec![], false),
            ("owner", vec![perm(&["*"], &[])], true),
            (
                "contributor-like without hybrid compute writes",
                vec![perm(&["*"], &["Microsoft.HybridCompute/*/write"])],
                false,
            ),
            ("reader", vec![perm(&["*/read"], &[])], false),
            (
                "excluded in one role, granted by another",
                vec![
                    perm(&["*"], &["Microsoft.HybridCompute/*"]),
                    perm(&["Microsoft.HybridCompute/machines/*"], &[]),
                ],
                true,
            ),
            (
                "onboarding role",
                vec![perm(
                    &[
                        "Microsoft.HybridCompute/machines/read",
                        "Microsoft.HybridCompute/machines/write",
                        "Microsoft.HybridCompute/privateLinkScopes/read",
                    ],
                    &[],
                )],
                true,
            ),
        ];
        for (name, perms, want) in cases {
            assert_eq!(allowed(&perms, w), want, "{name}");
        }
    }

    #[test]
    fn missing_actions_names_what_each_role_set_lacks() {
        let onboarding = vec![perm(
            &[
                "Microsoft.HybridCompute/machines/read",
                "Microsoft.HybridCompute/machines/write",
            ],
            &[],
        )];
        assert_eq!(
            missing_actions(&onboarding),
            vec!["Microsoft.HybridCompute/machines/listAccessDetails/action"]
        );
        let manager_and_list = vec![
            perm(
                &[
                    "Microsoft.HybridCompute/machines/read",
                    "Microsoft.HybridCompute/machines/write",
                    "Microsoft.HybridCompute/machines/delete",
                    "Microsoft.HybridCompute/*/read",
                ],
                &[],
            ),
            perm(
                &["Microsoft.HybridCompute/machines/listAccessDetails/action"],
                &[],
            ),
        ];
        assert!(missing_actions(&manager_and_list).is_empty());
        assert_eq!(missing_actions(&[]).len(), 3);
    }

    #[test]
    fn reads_arm_error_bodies() {
        let body = r#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' does not have authorization"}}"#;
        assert_eq!(
            arm_error(body).as_deref(),
            Some("AuthorizationFailed: The client 'x' does not have authorization")
        );
        assert_eq!(arm_error("not json"), None);
        assert_eq!(arm_error("{}"), None);
    }

    #[test]
    fn reads_machine_resources() {
        let m = parse_machine(
            r#"{"id":"/subscriptions/s/resourceGroups/g/providers/Microsoft.HybridCompute/machines/web01","name":"web01","properties":{"vmUuid":"ABC","status":"Connected"}}"#,
        )
        .unwrap();
        assert_eq!(m.vm_uuid.as_deref(), Some("ABC"));
        assert_eq!(m.status.as_deref(), Some("Connected"));
        let none = parse_machine(r#"{"id":"x","properties":{}}"#).unwrap();
        assert_eq!(none.vm_uuid, None);
    }

    #[test]
    fn arm_error_text_is_escaped() {
        let body = r#"{"error":{"code":"Bad\nERROR x","message":"m\u001b[31m\u2028y"}}"#;
        assert_eq!(
            arm_error(body).as_deref(),
            Some("Bad\\nERROR x: m\\u{001b}[31m\\u{2028}y")
        );
    }
}
