//! ARM writes for pre-created machines and Nexus Private Relay (FACTS §10): the HybridCompute
//! machine resource (GET, PUT with the public key and a vmId, DELETE), the NetworkCloud
//! `assignRelay` action and its long-running operation, and the HybridConnectivity endpoint.
//! Transient answers (408, 429, 5xx, no answer) are retried a few times with backoff, `Retry-After`
//! a floor, every wait logged and bounded by the deadline; anything else is returned typed for the
//! caller to decide. Long-running operations are followed through `Location` only on the ARM
//! endpoint's own origin over https (the bearer token goes nowhere else). The token is only ever
//! in the `Authorization` header.

use std::time::Duration;

use serde_json::{json, Value};

use crate::azure::arm::{arm_error, describe_failure, status_text, ARM_REQUEST_TIMEOUT};
use crate::azure::http::{Http, Reply};
use crate::azure::pacing::{self, Op};
use crate::error::Error;
use crate::retry::{retry, Attempt, Backoff, Deadline, BACKOFF_BASE, BACKOFF_CAP};
use crate::secret::AccessToken;
use crate::timefmt::human;

/// The HybridCompute api-version of the documented flow (FACTS §10 step 2).
pub const MACHINES_WRITE_API_VERSION: &str = "2025-02-19-preview";
/// NetworkCloud GA api-version with `assignRelay` (2025-07-01-preview is the minimum).
pub const NETWORKCLOUD_API_VERSION: &str = "2025-09-01";
pub const HYBRIDCONNECTIVITY_API_VERSION: &str = "2023-03-15";
pub const ASSIGN_RELAY_ACTION: &str = "Microsoft.NetworkCloud/virtualMachines/assignRelay/action";
/// How many times one request is sent when ARM fails (408, 5xx, no answer) before the caller hears
/// of it; a throttled one (429) is retried per `Retry-After` until the deadline instead.
pub const ARM_WRITE_ATTEMPTS: u32 = 6;
/// Poll a long-running operation this often when it gives no `Retry-After` (ARM's default hint).
pub const LRO_DEFAULT_POLL: Duration = Duration::from_secs(10);
/// Never poll faster than this, whatever `Retry-After` says.
pub const LRO_MIN_POLL: Duration = Duration::from_secs(1);

/// A machine resource as the pre-created flow needs to see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrecreatedMachine {
    pub id: String,
    pub vm_id: Option<String>,
    pub vm_uuid: Option<String>,
    /// None until an agent connects (FACTS §10).
    pub status: Option<String>,
    pub client_public_key: Option<String>,
}

impl PrecreatedMachine {
    pub fn connected(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Connected"))
    }
}

/// An ARM answer that is not the one asked for, typed for the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// 401/403: the identity may not do `action` at `scope` (or the token was refused).
    Forbidden {
        status: u16,
        detail: String,
    },
    /// 400: the request was refused; `property` is what ARM named (`VmId`, ...), if it did.
    BadRequest {
        property: Option<String>,
        detail: String,
    },
    NotFound(String),
    Conflict(String),
    /// Anything else, or transient answers that kept coming.
    Other(String),
}

impl Refusal {
    pub fn detail(&self) -> &str {
        match self {
            Refusal::Forbidden { detail, .. }
            | Refusal::BadRequest { detail, .. }
            | Refusal::NotFound(detail)
            | Refusal::Conflict(detail)
            | Refusal::Other(detail) => detail,
        }
    }
}

/// How a long-running operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationEnd {
    Succeeded,
    /// `Failed`/`Canceled` (or an error answer on the poll URL), with ARM's error text.
    Failed {
        status: String,
        error: String,
    },
}

/// The parts of an ARM resource id `/subscriptions/S/resourceGroups/G/providers/NS/TYPE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl ResourceId {
    /// Parse a top-level resource id; `None` when it is not one.
    pub fn parse(id: &str) -> Option<ResourceId> {
        let seg: Vec<&str> = id.strip_prefix('/')?.split('/').collect();
        let ok = seg.len() == 8
            && seg[0].eq_ignore_ascii_case("subscriptions")
            && seg[2].eq_ignore_ascii_case("resourceGroups")
            && seg[4].eq_ignore_ascii_case("providers")
            && seg.iter().all(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
            });
        ok.then(|| ResourceId {
            subscription: seg[1].to_string(),
            resource_group: seg[3].to_string(),
            namespace: seg[5].to_string(),
            kind: seg[6].to_string(),
            name: seg[7].to_string(),
        })
    }

    pub fn is(&self, namespace: &str, kind: &str) -> bool {
        self.namespace.eq_ignore_ascii_case(namespace) && self.kind.eq_ignore_ascii_case(kind)
    }

    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}/{}",
            self.subscription, self.resource_group, self.namespace, self.kind, self.name
        )
    }
}

/// `Microsoft.HybridCompute/machines/{name}` in a resource group.
pub fn machine_path(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.HybridCompute/machines/{name}")
}

/// The PUT body of FACTS §10 step 2: the Arc resource's own identity is always SystemAssigned.
pub fn machine_body(
    location: &str,
    public_key: &str,
    vm_id: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> Value {
    let mut body = json!({
        "location": location,
        "identity": {"type": "SystemAssigned"},
        "properties": {"osName": "linux", "clientPublicKey": public_key, "vmId": vm_id},
    });
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    body
}

/// What ARM named in a 400 (`... Missing or invalid properties: VmId`), if anything.
pub fn refused_property(detail: &str) -> Option<String> {
    let (_, rest) = detail.split_once("properties:")?;
    let p = rest
        .trim()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ',' || c == ' '))
        .next()?
        .trim()
        .trim_end_matches(',');
    (!p.is_empty()).then(|| p.to_string())
}

fn refusal(reply: &Reply) -> Refusal {
    let detail = status_text(reply.status, &reply.body);
    match reply.status {
        400 => Refusal::BadRequest {
            property: refused_property(&detail),
            detail,
        },
        401 | 403 => Refusal::Forbidden {
            status: reply.status,
            detail,
        },
        404 => Refusal::NotFound(detail),
        409 => Refusal::Conflict(detail),
        _ => Refusal::Other(detail),
    }
}

/// Parse a machine resource body.
pub fn parse_machine(body: &str) -> Option<PrecreatedMachine> {
    let v: Value = serde_json::from_str(body).ok()?;
    let p = v.get("properties");
    let s = |x: Option<&Value>| {
        x.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Some(PrecreatedMachine {
        id: s(v.get("id"))?,
        vm_id: s(p.and_then(|p| p.get("vmId"))),
        vm_uuid: s(p.and_then(|p| p.get("vmUuid"))),
        status: s(p.and_then(|p| p.get("status"))),
        client_public_key: s(p.and_then(|p| p.get("clientPublicKey"))),
    })
}

/// The status of a long-running operation's poll answer (`OperationStatusResult`).
pub fn operation_end(body: &str) -> Option<OperationEnd> {
    let v: Value = serde_json::from_str(body).ok()?;
    let status = v.get("status").and_then(Value::as_str)?;
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Some(OperationEnd::Succeeded),
        "failed" | "canceled" | "cancelled" => {
            let e = v.get("error");
            let code = e
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let msg = e
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let error = match (code.is_empty(), msg.is_empty()) {
                (true, true) => "no error details".to_string(),
                (false, true) => code.to_string(),
                (true, false) => msg.to_string(),
                (false, false) => format!("{code}: {msg}"),
            };
            Some(OperationEnd::Failed {
                status: status.to_string(),
                error,
            })
        }
        _ => None,
    }
}

/// `scheme://host[:port]` of a URL, lower-cased.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains('@')).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        )
    })
}

/// A `Location` to follow: https, on the ARM endpoint's own origin (so the bearer token goes
/// nowhere else). Relative locations are resolved against the endpoint.
pub fn poll_url(base: &str, location: &str) -> Result<String, String> {
    let url = if location.starts_with('/') && !location.starts_with("//") {
        format!("{}{location}", base.trim_end_matches('/'))
    } else {
        location.to_string()
    };
    match (origin(&url), origin(base)) {
        (Some(l), Some(b)) if l == b && l.starts_with("https://") => Ok(url),
        _ => Err(format!(
            "the operation's Location {location:?} is not on the ARM endpoint {base} over https; not following it with the token"
        )),
    }
}

/// ARM at `base` with one token, for the writes of the pre-created flow.
pub struct Machines<'a> {
    http: &'a Http,
    base: String,
    token: &'a AccessToken,
}

impl<'a> Machines<'a> {
    pub fn new(http: &'a Http, base: &str, token: &'a AccessToken) -> Machines<'a> {
        Machines {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// The machine resource: `Ok(Ok(None))` when there is none.
    pub fn get(
        &self,
        machine_path: &str,
        deadline: &Deadline,
    ) -> Result<Result<Option<PrecreatedMachine>, Refusal>, Error> {
        let url = format!(
            "{}{machine_path}?api-version={MACHINES_WRITE_API_VERSION}",
            self.base
        );
        let r = self.send("GET", &url, None, "GET machine", deadline)?;
        Ok(match r.status {
            200 => parse_machine(&r.body)
                .map(Some)
                .ok_or_else(|| Refusal::Other("unreadable machine resource".into())),
            404 => Ok(None),
            _ => Err(refusal(&r)),
        })
    }

    /// PUT the machine resource (FACTS §10 step 2): 200 with the Machine.
    pub fn create(
        &self,
        machine_path: &str,
        body: &Value,
        deadline: &Deadline,
    ) -> Result<Result<PrecreatedMachine, Refusal>, Error> {
        let url = format!(
            "{}{machine_path}?api-version={MACHINES_WRITE_API_VERSION}",
            self.base
        );
        let text = body.to_string();
        let r = self.send("PUT", &url, Some(&text), "PUT machine", deadline)?;
        Ok(match r.status {
            200 | 201 => parse_machine(&r.body).ok_or_else(|| {
                Refusal::Other("unreadable machine resource in the PUT answer".into())
            }),
            _ => Err(refusal(&r)),
        })
    }

    /// DELETE the machine resource and wait for it to be gone (202 → follow `Location`).
    pub fn delete(
        &self,
        machine_path: &str,
        deadline: &Deadline,
    ) -> Result<Result<(), Refusal>, Error> {
        let url = format!(
            "{}{machine_path}?api-version={MACHINES_WRITE_API_VERSION}",
            self.base
        );
        let r = self.send("DELETE", &url, None, "DELETE machine", deadline)?;
        match r.status {
            200 | 204 | 404 => Ok(Ok(())),
            202 => Ok(self
                .follow(&r, "deleting the machine resource", deadline)?
                .and_then(|end| match end {
                    OperationEnd::Succeeded => Ok(()),
                    OperationEnd::Failed { status, error } => Err(Refusal::Other(format!(
                        "the delete ended {status}: {error}"
                    ))),
                })),
            _ => Ok(Err(refusal(&r))),
        }
    }

    /// POST `assignRelay` on the Nexus VM and follow the operation to its end (FACTS §10 step 3).
    pub fn assign_relay(
        &self,
        vm: &ResourceId,
        machine_id: &str,
        relay_type: &str,
        deadline: &Deadline,
    ) -> Result<Result<OperationEnd, Refusal>, Error> {
        let url = format!(
            "{}{}/assignRelay?api-version={NETWORKCLOUD_API_VERSION}",
            self.base,
            vm.path()
        );
        let body = json!({"machineId": machine_id, "relayType": relay_type}).to_string();
        let r = self.send("POST", &url, Some(&body), "POST assignRelay", deadline)?;
        match r.status {
            202 => self.follow(&r, "assigning the relay", deadline),
            200 => Ok(Ok(OperationEnd::Succeeded)),
            _ => Ok(Err(refusal(&r))),
        }
    }

    /// Whether the machine's HybridConnectivity `default` endpoint exists (FACTS §10 step 4).
    pub fn relay_endpoint(
        &self,
        machine_id: &str,
        deadline: &Deadline,
    ) -> Result<Result<bool, Refusal>, Error> {
        let url = format!(
            "{}{machine_id}/providers/Microsoft.HybridConnectivity/endpoints/default?api-version={HYBRIDCONNECTIVITY_API_VERSION}",
            self.base
        );
        let r = self.send("GET", &url, None, "GET relay endpoint", deadline)?;
        Ok(match r.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(refusal(&r)),
        })
    }

    /// Follow a 202's `Location` until the operation ends, each wait logged, within the deadline.
    fn follow(
        &self,
        first: &Reply,
        what: &str,
        deadline: &Deadline,
    ) -> Result<Result<OperationEnd, Refusal>, Error> {
        let Some(location) = first.location.as_deref() else {
            return Ok(Err(Refusal::Other(format!(
                "{what}: ARM answered 202 without a Location to follow"
            ))));
        };
        let mut url = match poll_url(&self.base, location) {
            Ok(u) => u,
            Err(e) => return Ok(Err(Refusal::Other(e))),
        };
        let mut wait = first.retry_after;
        let mut polls = 0u32;
        loop {
            let pause = wait.unwrap_or(LRO_DEFAULT_POLL).max(LRO_MIN_POLL);
            let remaining = deadline.remaining();
            if pause >= remaining {
                return Err(Error::Deadline {
                    timeout: deadline.timeout,
                    waiting_for: format!("{what} (a long-running ARM operation)"),
                    last: format!("still running after {polls} polls"),
                });
            }
            log::info!(
                "{what}: operation running; polling again in {}{} (deadline in {})",
                human(pause),
                if wait.is_some() { " (Retry-After)" } else { "" },
                human(remaining)
            );
            deadline.clock.sleep(pause)?;
            polls += 1;
            let r = self.send("GET", &url, None, "poll operation", deadline)?;
            match r.status {
                202 => {
                    wait = r.retry_after;
                    if let Some(l) = r.location.as_deref() {
                        match poll_url(&self.base, l) {
                            Ok(u) => url = u,
                            Err(e) => return Ok(Err(Refusal::Other(e))),
                        }
                    }
                }
                200 | 201 | 204 => {
                    let end = match operation_end(&r.body) {
                        Some(end) => end,
                        // 200/204 without a status body: the operation is done (ARM RPC).
                        None if r.status == 204 || r.body.trim().is_empty() => {
                            OperationEnd::Succeeded
                        }
                        None => {
                            wait = r.retry_after;
                            continue;
                        }
                    };
                    log::info!("{what}: operation ended after {polls} polls: {end:?}");
                    return Ok(Ok(end));
                }
                _ => {
                    // An error answer on the poll URL is the operation's failure (ARM RPC).
                    return Ok(Ok(OperationEnd::Failed {
                        status: format!("HTTP {}", r.status),
                        error: arm_error(&r.body).unwrap_or_else(|| "no error details".into()),
                    }));
                }
            }
        }
    }

    /// One request, retried on 408/429/5xx and transport failures (a few times, within the
    /// deadline); any other answer is returned.
    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
        what: &str,
        deadline: &Deadline,
    ) -> Result<Reply, Error> {
        let auth = format!("Bearer {}", self.token.expose());
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Accept", "application/json"),
        ];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let shown = url.split('?').next().unwrap_or(url).to_string();
        retry(
            &format!("ARM {what}"),
            deadline,
            &mut backoff,
            |n| {
                let timeout = deadline
                    .clock
                    .io_timeout(deadline.bounded(ARM_REQUEST_TIMEOUT));
                let answer = match pacing::metered(
                    Op::of_method(method),
                    &format!("ARM {what}"),
                    deadline,
                    || self.http.request(method, url, &headers, body, timeout),
                ) {
                    Ok(answer) => answer,
                    Err(e) => return Attempt::Fail(e),
                };
                let last = match answer {
                    // Throttled: wait as ARM asks and try again, for as long as the deadline
                    // allows. A fleet can meet 429s on many requests in a row; giving up after a
                    // few would report a throttled poll as a failed operation.
                    Ok(r) if r.status == 429 => {
                        return Attempt::Retry {
                            reason: format!("{method} {shown}: {}", status_text(r.status, &r.body)),
                            retry_after: r.retry_after,
                        };
                    }
                    Ok(r) if matches!(r.status, 408 | 500..=599) => {
                        let reason =
                            format!("{method} {shown}: {}", status_text(r.status, &r.body));
                        if n >= ARM_WRITE_ATTEMPTS {
                            return Attempt::Done(r);
                        }
                        return Attempt::Retry {
                            reason,
                            retry_after: r.retry_after,
                        };
                    }
                    Ok(r) => return Attempt::Done(r),
                    Err(f) => format!("{method} {shown}: {}", describe_failure(&f)),
                };
                if n >= ARM_WRITE_ATTEMPTS {
                    Attempt::Fail(Error::Agent {
                        detail: format!("ARM did not answer: {last} (after {n} attempts)"),
                        advice: "check the network path and proxy to the ARM endpoint".into(),
                    })
                } else {
                    Attempt::Retry {
                        reason: last,
                        retry_after: None,
                    }
                }
            },
            |last| Error::Deadline {
                timeout: deadline.timeout,
                waiting_for: format!("ARM {what}"),
                last,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse_and_name_their_type() {
        let vm = ResourceId::parse("/subscriptions/s1/resourceGroups/rg-1/providers/Microsoft.NetworkCloud/virtualMachines/vm.1").unwrap();
        assert!(vm.is("microsoft.networkcloud", "VIRTUALMACHINES"));
        assert_eq!(
            (vm.resource_group.as_str(), vm.name.as_str()),
            ("rg-1", "vm.1")
        );
        assert_eq!(vm.path(), "/subscriptions/s1/resourceGroups/rg-1/providers/Microsoft.NetworkCloud/virtualMachines/vm.1");
        for bad in [
            "",
            "subscriptions/s/resourceGroups/g/providers/N/t/n",
            "/subscriptions/s/resourceGroups/g/providers/N/t",
            "/subscriptions/s/resourceGroups/g/providers/N/t/n/extra",
            "/subscriptions/s/resourceGroups//providers/N/t/n",
            "/subscriptions/s/resourceGroups/g/providers/N/t/n?x=1",
            "/subscriptions/s/resourceGroups/g/providers/N/t/a b",
        ] {
            assert_eq!(ResourceId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refusals_name_the_property() {
        assert_eq!(
            refused_property(
                "HTTP 400: HCRP400: The request is invalid. Missing or invalid properties: VmId"
            )
            .as_deref(),
            Some("VmId")
        );
        assert_eq!(
            refused_property("Missing or invalid properties: VmId, ClientPublicKey.").as_deref(),
            Some("VmId, ClientPublicKey")
        );
        assert_eq!(refused_property("HTTP 400: InvalidResourceName: bad"), None);
    }

    #[test]
    fn operation_results_end_or_keep_running() {
        assert_eq!(
            operation_end(r#"{"status":"Succeeded"}"#),
            Some(OperationEnd::Succeeded)
        );
        assert_eq!(
            operation_end(r#"{"status":"Failed","error":{"code":"X","message":"boom"}}"#),
            Some(OperationEnd::Failed {
                status: "Failed".into(),
                error: "X: boom".into()
            })
        );
        assert!(matches!(
            operation_end(r#"{"status":"Canceled"}"#),
            Some(OperationEnd::Failed { .. })
        ));
        assert_eq!(operation_end(r#"{"status":"InProgress"}"#), None);
        assert_eq!(operation_end("not json"), None);
    }

    #[test]
    fn locations_are_followed_only_on_the_arm_origin_over_https() {
        let base = "https://management.azure.com";
        let ok = "https://management.azure.com/subscriptions/s/providers/Microsoft.NetworkCloud/locations/eastus/operationStatuses/1?api-version=2025-09-01";
        assert_eq!(poll_url(base, ok).as_deref(), Ok(ok));
        assert_eq!(
            poll_url("https://127.0.0.1:8443/", "/subscriptions/s/x").as_deref(),
            Ok("https://127.0.0.1:8443/subscriptions/s/x")
        );
        for bad in [
            "http://management.azure.com/x",
            "https://evil.example/x",
            "https://management.azure.com.evil.example/x",
            "https://user@management.azure.com/x",
            "//evil.example/x",
        ] {
            assert!(poll_url(base, bad).is_err(), "{bad}");
        }
        assert!(
            poll_url("http://127.0.0.1:1", "http://127.0.0.1:1/x").is_err(),
            "https only"
        );
    }

    #[test]
    fn machine_bodies_follow_the_documented_put() {
        let mut tags = std::collections::BTreeMap::new();
        let b = machine_body(
            "eastus",
            "PUB",
            "0b8c2d4e-1f3a-4b5c-8d9e-0a1b2c3d4e5f",
            &tags,
        );
        assert_eq!(b["identity"]["type"], "SystemAssigned");
        assert_eq!(b["properties"]["clientPublicKey"], "PUB");
        assert!(b.get("tags").is_none());
        tags.insert("env".into(), "prod".into());
        assert_eq!(
            machine_body("eastus", "PUB", "x", &tags)["tags"]["env"],
            "prod"
        );
        let m = parse_machine(
            r#"{"id":"/x","properties":{"vmId":"V","status":null,"clientPublicKey":"K"}}"#,
        )
        .unwrap();
        assert_eq!(
            (m.vm_id.as_deref(), m.status.as_deref(), m.connected()),
            (Some("V"), None, false)
        );
    }
}
