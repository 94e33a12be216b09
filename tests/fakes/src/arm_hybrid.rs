//! The fake ARM's routes for pre-created machines and Nexus Private Relay (FACTS §10), kept apart
//! from `arm.rs` (which calls [`route`] after authentication):
//!
//! - `GET|PUT|DELETE .../providers/Microsoft.HybridCompute/machines/{name}` with the
//!   2025-02-19-preview schema: name `^[a-zA-Z0-9-_\.]{1,54}$`; on create `properties.vmId` must be
//!   a GUID (else 400 `HCRP400` "Missing or invalid properties: VmId"); `vmId` and
//!   `clientPublicKey` are create-only (a PUT that changes them on an existing machine is refused
//!   the same way: UNCONFIRMED what the real RP does, FACTS §10); the answer is 200 with the
//!   Machine (never 201, not long-running), `identity` SystemAssigned, `status` null until an agent
//!   connects. DELETE answers 202 with `Location`/`Azure-AsyncOperation`/`Retry-After` (the
//!   operation is already done when polled) or 204 when there was nothing. Machines live in the
//!   shared fake-Azure store, where `fake-azcmagent connect existing` finds them; writes consult
//!   its `authz.json` like the agent's own writes (roles propagating, provider not registered).
//! - `POST .../providers/Microsoft.NetworkCloud/virtualMachines/{vm}/assignRelay` (2025-07-01-preview,
//!   2025-09-01, 2026-07-01): body `{machineId, relayType: Platform|Public}`; 202 with an absolute
//!   `Location` to `/subscriptions/{sub}/providers/Microsoft.NetworkCloud/locations/{loc}/operationStatuses/{id}`
//!   (+ `Retry-After` when configured); that URL answers 202 for `polls_running` polls, then 200
//!   with an `OperationStatusResult` (`Succeeded`, or `Failed` with `error`). Modes: 403
//!   AuthorizationFailed without `Microsoft.NetworkCloud/virtualMachines/assignRelay/action`, a
//!   VM that does not exist (404), the operation failing.
//! - `GET {machineId}/providers/Microsoft.HybridConnectivity/endpoints/default` (2023-03-15): the
//!   spec's shape (`properties.type` = `default`, no `endpointType`/`status`, FACTS §10 step 4),
//!   present once a relay assignment for that machine succeeded.
//! - Permissions at a Nexus VM's scope (`{vmId}/providers/Microsoft.Authorization/permissions`).

use crate::http::{Reply, Request};
use crate::store::{self, Machine, Store};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const HYBRIDCOMPUTE_API_VERSION: &str = "2025-02-19-preview";
/// HybridCompute api-versions the fake accepts (a subset of the real list; others get 400).
pub const HYBRIDCOMPUTE_API_VERSIONS: [&str; 5] = [
    "2022-12-27",
    "2024-07-10",
    "2024-07-31-preview",
    "2025-01-13",
    HYBRIDCOMPUTE_API_VERSION,
];
pub const NETWORKCLOUD_API_VERSIONS: [&str; 3] = ["2025-07-01-preview", "2025-09-01", "2026-07-01"];
pub const HYBRIDCONNECTIVITY_API_VERSION: &str = "2023-03-15";
pub const ASSIGN_RELAY_ACTION: &str = "Microsoft.NetworkCloud/virtualMachines/assignRelay/action";
const NAME_MAX: usize = 54;

/// How the fake NetworkCloud behaves.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The long-running operation answers 202 to this many polls before its final state.
    pub polls_running: u32,
    /// `Retry-After` (seconds) on the 202s; None: no header (2025-09-01 documents none).
    pub retry_after_secs: Option<u64>,
    /// The operation ends `Failed` with this `(code, message)`.
    pub fail: Option<(String, String)>,
    /// The caller lacks `assignRelay/action`: 403 AuthorizationFailed on the POST, and the
    /// permissions API does not list the action.
    pub forbidden: bool,
    /// Nexus VM resource ids that exist (case-insensitive); empty: every VM exists.
    pub vms: Vec<String>,
    /// Location used in the operation-status URL.
    pub location: String,
    /// Every machine PUT is answered with this `(status, code, message)` (a fault for tests).
    pub machine_put_error: Option<(u16, String, String)>,
    /// The first N operation polls are answered 429 `Retry-After: 1` with ARM's throttling body,
    /// as a subscription's empty read bucket answers them (the operation itself is not touched).
    pub poll_throttle: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            polls_running: 2,
            retry_after_secs: Some(1),
            fail: None,
            forbidden: false,
            vms: Vec::new(),
            location: "eastus".into(),
            machine_put_error: None,
            poll_throttle: 0,
        }
    }
}

/// One assignRelay as the fake saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub vm_id: String,
    pub machine_id: String,
    pub relay_type: String,
    /// `Succeeded` / `Failed` once the operation ended, else `InProgress`.
    pub status: String,
}

#[derive(Debug)]
struct Operation {
    id: String,
    subscription: String,
    polls_left: u32,
    /// Index into `assignments`; None for a DELETE (done at once).
    assignment: Option<usize>,
    resource_id: String,
    started: String,
}

/// The module's state inside the fake ARM's state.
#[derive(Debug, Default)]
pub struct HybridState {
    operations: BTreeMap<String, Operation>,
    pub assignments: Vec<Assignment>,
    counter: u64,
    polls_throttled: u32,
}

fn arm_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The spec's pattern `^[a-zA-Z0-9-_\.]{1,54}$`.
pub fn valid_machine_name(n: &str) -> bool {
    (1..=NAME_MAX).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn api_version_ok(req: &Request, allowed: &[&str]) -> Result<(), Reply> {
    let v = req.param("api-version").unwrap_or("");
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) {
        Ok(())
    } else {
        Err(arm_error(
            400,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                allowed.join(",")
            ),
        ))
    }
}

/// `https://host` of this request, for absolute `Location` URLs (what ARM sends).
fn base_url(req: &Request) -> String {
    format!("https://{}", req.header("host").unwrap_or("127.0.0.1"))
}

/// Who is calling, for 403 messages.
pub struct Caller<'a> {
    pub appid: &'a str,
    pub oid: &'a str,
    pub tenant: &'a str,
}

/// Handle the request if it is one of this module's; None lets `arm.rs` go on.
pub fn route(
    st: &mut HybridState,
    cfg: &RelayConfig,
    store: Option<&Store>,
    req: &Request,
    seg: &[&str],
    caller: &Caller,
) -> Option<Reply> {
    // /subscriptions/{sub}/providers/Microsoft.NetworkCloud/locations/{loc}/operationStatuses/{id}
    // and the HybridCompute twin for DELETE.
    if seg.len() == 8
        && seg[2].eq_ignore_ascii_case("providers")
        && seg[4].eq_ignore_ascii_case("locations")
        && (seg[6].eq_ignore_ascii_case("operationStatuses")
            || seg[6].eq_ignore_ascii_case("operationStatus"))
        && req.method == "GET"
    {
        if st.polls_throttled < cfg.poll_throttle {
            st.polls_throttled += 1;
            return Some(
                arm_error(
                    429,
                    "SubscriptionRequestsThrottled",
                    &format!("Number of 'read' requests for subscription '{}' exceeded. Please try again after '1' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information.", seg[1]),
                )
                .with_header("Retry-After", "1"),
            );
        }
        return Some(poll(st, cfg, store, req, seg[1], seg[7]));
    }
    if seg.len() < 6 || !seg[2].eq_ignore_ascii_case("resourceGroups") {
        return None;
    }
    let (sub, rg) = (seg[1], seg[3]);
    let rest = &seg[4..];
    let is = |i: usize, s: &str| rest.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    // .../providers/Microsoft.HybridCompute/machines/{name}
    if rest.len() == 4
        && is(0, "providers")
        && is(1, "Microsoft.HybridCompute")
        && is(2, "machines")
    {
        if let (true, Some((status, code, message))) = (req.method == "PUT", &cfg.machine_put_error)
        {
            return Some(arm_error(*status, code, message));
        }
        return Some(machine(st, store, req, sub, rg, rest[3], caller));
    }
    // .../machines/{name}/providers/Microsoft.HybridConnectivity/endpoints/default
    if rest.len() == 8
        && is(1, "Microsoft.HybridCompute")
        && is(2, "machines")
        && is(4, "providers")
        && is(5, "Microsoft.HybridConnectivity")
        && is(6, "endpoints")
    {
        return Some(endpoint(st, store, req, sub, rg, rest[3], rest[7]));
    }
    if rest.len() >= 4
        && is(0, "providers")
        && is(1, "Microsoft.NetworkCloud")
        && is(2, "virtualMachines")
    {
        let vm_id = format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.NetworkCloud/virtualMachines/{}",
            rest[3]
        );
        // .../virtualMachines/{vm}/assignRelay
        if rest.len() == 5 && is(4, "assignRelay") {
            return Some(assign_relay(st, cfg, store, req, sub, &vm_id, caller));
        }
        // .../virtualMachines/{vm}/providers/Microsoft.Authorization/permissions
        if rest.len() == 7
            && is(4, "providers")
            && is(5, "Microsoft.Authorization")
            && is(6, "permissions")
        {
            if !vm_exists(cfg, &vm_id) {
                return Some(vm_not_found(rg, rest[3]));
            }
            let mut value = crate::arm::granted_permissions();
            if let (Some(list), Some(extra)) = (value.as_array_mut(), extra_permission(cfg)) {
                list.push(extra);
            }
            return Some(Reply::json(200, &json!({ "value": value })));
        }
        // GET of the VM itself: enough of it to say it exists.
        if rest.len() == 4 && req.method == "GET" {
            if !vm_exists(cfg, &vm_id) {
                return Some(vm_not_found(rg, rest[3]));
            }
            return Some(Reply::json(
                200,
                &json!({"id": vm_id, "name": rest[3], "type": "microsoft.networkcloud/virtualmachines",
                        "location": cfg.location, "properties": {"provisioningState": "Succeeded"}}),
            ));
        }
    }
    None
}

/// The permission entry the caller has for relays (None in the forbidden mode): what a custom
/// role with only the action gives (FACTS §10).
pub fn extra_permission(cfg: &RelayConfig) -> Option<Value> {
    (!cfg.forbidden).then(|| {
        json!({"actions": [ASSIGN_RELAY_ACTION, "Microsoft.NetworkCloud/virtualMachines/read"],
               "notActions": [], "dataActions": [], "notDataActions": []})
    })
}

fn vm_exists(cfg: &RelayConfig, vm_id: &str) -> bool {
    cfg.vms.is_empty() || cfg.vms.iter().any(|v| v.eq_ignore_ascii_case(vm_id))
}

fn vm_not_found(rg: &str, vm: &str) -> Reply {
    arm_error(
        404,
        "ResourceNotFound",
        &format!("The Resource 'Microsoft.NetworkCloud/virtualMachines/{vm}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"),
    )
}

fn machine_not_found(rg: &str, name: &str) -> Reply {
    arm_error(
        404,
        "ResourceNotFound",
        &format!("The Resource 'Microsoft.HybridCompute/machines/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"),
    )
}

fn invalid_properties(which: &str) -> Reply {
    arm_error(
        400,
        "HCRP400",
        &format!("The request is invalid. Missing or invalid properties: {which}"),
    )
}

fn no_store() -> Reply {
    arm_error(
        500,
        "InternalServerError",
        "the fake ARM has no --azure-dir",
    )
}

/// The Machine as the 2025-02-19-preview GET/PUT answer shows it.
fn machine_view(m: &Machine) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        // Our own bookkeeping keys stay out of the answer; unset optional strings are null.
        props.retain(|k, _| !k.starts_with("fake"));
        for k in ["vmUuid", "agentVersion"] {
            if props.get(k).and_then(Value::as_str) == Some("") {
                props.insert(k.into(), Value::Null);
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        if o.get("tenantId").and_then(Value::as_str) == Some("") {
            o.remove("tenantId");
        }
    }
    v
}

fn machine(
    st: &mut HybridState,
    store: Option<&Store>,
    req: &Request,
    sub: &str,
    rg: &str,
    name: &str,
    caller: &Caller,
) -> Reply {
    if let Err(r) = api_version_ok(req, &HYBRIDCOMPUTE_API_VERSIONS) {
        return r;
    }
    if !valid_machine_name(name) {
        // UNCONFIRMED code; the pattern and length are the spec's.
        return arm_error(
            400,
            "InvalidResourceName",
            &format!("The resource name '{name}' is invalid. It must match the pattern ^[a-zA-Z0-9-_\\.]{{1,54}}$."),
        );
    }
    let Some(store) = store else {
        return match req.method.as_str() {
            "GET" | "DELETE" => machine_not_found(rg, name),
            _ => no_store(),
        };
    };
    let existing = match store.get_machine(sub, rg, name) {
        Ok(m) => m,
        Err(e) => return arm_error(400, "InvalidResourceName", &e.to_string()),
    };
    match req.method.as_str() {
        "GET" => match existing {
            Some(m) => Reply::json(200, &machine_view(&m)),
            None => machine_not_found(rg, name),
        },
        "PUT" => put_machine(store, req, sub, rg, name, existing, caller),
        "DELETE" => match existing {
            None => Reply::Send {
                status: 204,
                headers: vec![],
                body: vec![],
            },
            Some(m) => {
                if let Err(e) = store.delete_machine(sub, rg, name) {
                    return arm_error(500, "InternalServerError", &e.to_string());
                }
                let op = new_operation(st, sub, None, &m.id, 0);
                let url = format!(
                    "{}/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{}/operationStatus/{op}?api-version={}",
                    base_url(req),
                    m.location,
                    req.param("api-version").unwrap_or(HYBRIDCOMPUTE_API_VERSION)
                );
                Reply::Send {
                    status: 202,
                    headers: vec![
                        ("Location".into(), url.clone()),
                        ("Azure-AsyncOperation".into(), url),
                        ("Retry-After".into(), "1".into()),
                    ],
                    body: vec![],
                }
            }
        },
        _ => arm_error(
            405,
            "MethodNotAllowed",
            "The requested method is not allowed.",
        ),
    }
}

fn put_machine(
    store: &Store,
    req: &Request,
    sub: &str,
    rg: &str,
    name: &str,
    existing: Option<Machine>,
    caller: &Caller,
) -> Reply {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return arm_error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let Some(location) = body
        .get("location")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
    else {
        return arm_error(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    };
    let props = body.get("properties").cloned().unwrap_or(json!({}));
    let vm_id = props.get("vmId").and_then(Value::as_str).unwrap_or("");
    let key = props
        .get("clientPublicKey")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !key.is_empty() {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_err()
        {
            return invalid_properties("ClientPublicKey");
        }
    }
    let id = store::machine_id(sub, rg, name);
    let machine = match existing {
        None => {
            if !is_guid(vm_id) {
                return invalid_properties("VmId");
            }
            match store.authorize_machine_write() {
                Ok(()) => {}
                Err(store::Denied::Forbidden) => {
                    return arm_error(
                        403,
                        "AuthorizationFailed",
                        &store::forbidden_message(
                            caller.appid,
                            caller.oid,
                            "Microsoft.HybridCompute/machines/write",
                            &id,
                        ),
                    )
                }
                Err(store::Denied::ProviderNotRegistered(ns)) => {
                    return arm_error(
                        409,
                        "MissingSubscriptionRegistration",
                        &store::unregistered_message(&ns),
                    )
                }
                Err(store::Denied::Io(e)) => {
                    return arm_error(500, "InternalServerError", &e.to_string())
                }
            }
            let mut m = Machine::new(sub, rg, name, location, "");
            m.properties.vm_id = vm_id.to_lowercase();
            m.properties.status = String::new();
            m.properties.extra = Map::new();
            m.properties
                .extra
                .insert("provisioningState".into(), "Succeeded".into());
            m.properties
                .extra
                .insert("clientPublicKey".into(), key.into());
            m.tenant_id = caller.tenant.to_string();
            m.extra.insert(
                "identity".into(),
                json!({"type": "SystemAssigned", "principalId": store::new_guid(), "tenantId": caller.tenant}),
            );
            m
        }
        Some(mut m) => {
            // Create-only properties: the same value may be sent again, a different one may not.
            if !vm_id.is_empty() && !vm_id.eq_ignore_ascii_case(&m.properties.vm_id) {
                return invalid_properties("VmId");
            }
            let stored_key = m
                .properties
                .extra
                .get("clientPublicKey")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !key.is_empty() && key != stored_key {
                return invalid_properties("ClientPublicKey");
            }
            if let Err(d) = store.authorize_machine_write() {
                return arm_error(d.http_status(), d.code(), "machine write refused");
            }
            m.location = location.to_string();
            m
        }
    };
    let mut machine = machine;
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        machine.tags = tags
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
    }
    match store.upsert_machine(&machine) {
        Ok(_) => Reply::json(200, &machine_view(&machine)),
        Err(e) => arm_error(500, "InternalServerError", &e.to_string()),
    }
}

fn new_operation(
    st: &mut HybridState,
    sub: &str,
    assignment: Option<usize>,
    resource_id: &str,
    polls: u32,
) -> String {
    st.counter += 1;
    let id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        st.counter
    );
    st.operations.insert(
        id.to_lowercase(),
        Operation {
            id: id.clone(),
            subscription: sub.to_lowercase(),
            polls_left: polls,
            assignment,
            resource_id: resource_id.to_string(),
            started: store::rfc3339(crate::jwt::now_unix()),
        },
    );
    id
}

fn assign_relay(
    st: &mut HybridState,
    cfg: &RelayConfig,
    store: Option<&Store>,
    req: &Request,
    sub: &str,
    vm_id: &str,
    caller: &Caller,
) -> Reply {
    if req.method != "POST" {
        return arm_error(
            405,
            "MethodNotAllowed",
            "The requested method is not allowed.",
        );
    }
    if let Err(r) = api_version_ok(req, &NETWORKCLOUD_API_VERSIONS) {
        return r;
    }
    if cfg.forbidden {
        return arm_error(
            403,
            "AuthorizationFailed",
            &store::forbidden_message(caller.appid, caller.oid, ASSIGN_RELAY_ACTION, vm_id),
        );
    }
    if !vm_exists(cfg, vm_id) {
        let (_, vm) = vm_id.rsplit_once('/').unwrap_or(("", vm_id));
        let rg = vm_id.split('/').nth(4).unwrap_or("");
        return vm_not_found(rg, vm);
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let machine_id = body.get("machineId").and_then(Value::as_str).unwrap_or("");
    let relay_type = body
        .get("relayType")
        .and_then(Value::as_str)
        .unwrap_or("Platform");
    if !["Platform", "Public"].contains(&relay_type) {
        return arm_error(
            400,
            "InvalidParameter",
            &format!("The value '{relay_type}' of relayType is invalid; allowed values: Platform, Public."),
        );
    }
    let Some((msub, mrg, mname)) = store::parse_machine_id(machine_id) else {
        return arm_error(
            400,
            "InvalidParameter",
            &format!(
                "machineId '{machine_id}' is not a Microsoft.HybridCompute/machines resource id."
            ),
        );
    };
    let found = store
        .and_then(|s| s.get_machine(&msub, &mrg, &mname).ok().flatten())
        .is_some();
    if !found {
        return arm_error(
            400,
            "InvalidParameter",
            &format!("The machine '{machine_id}' was not found."),
        );
    }
    st.assignments.push(Assignment {
        vm_id: vm_id.to_string(),
        machine_id: machine_id.to_string(),
        relay_type: relay_type.to_string(),
        status: "InProgress".into(),
    });
    let idx = st.assignments.len() - 1;
    let op = new_operation(st, sub, Some(idx), vm_id, cfg.polls_running);
    let mut reply = Reply::Send {
        status: 202,
        headers: vec![("Location".into(), operation_url(req, cfg, sub, &op))],
        body: vec![],
    };
    if let Some(s) = cfg.retry_after_secs {
        reply = reply.with_header("Retry-After", &s.to_string());
    }
    reply
}

fn operation_url(req: &Request, cfg: &RelayConfig, sub: &str, op: &str) -> String {
    format!(
        "{}/subscriptions/{sub}/providers/Microsoft.NetworkCloud/locations/{}/operationStatuses/{op}?api-version={}",
        base_url(req),
        cfg.location,
        req.param("api-version").unwrap_or("2025-09-01")
    )
}

fn poll(
    st: &mut HybridState,
    cfg: &RelayConfig,
    _store: Option<&Store>,
    req: &Request,
    sub: &str,
    op_id: &str,
) -> Reply {
    let Some(op) = st.operations.get_mut(&op_id.to_lowercase()) else {
        return arm_error(
            404,
            "OperationNotFound",
            &format!("The operation '{op_id}' was not found."),
        );
    };
    if !op.subscription.eq_ignore_ascii_case(sub) {
        return arm_error(
            404,
            "OperationNotFound",
            &format!("The operation '{op_id}' was not found."),
        );
    }
    if op.polls_left > 0 {
        op.polls_left -= 1;
        let id = op.id.clone();
        let mut reply = Reply::json(
            202,
            &json!({"id": id, "name": id, "status": "InProgress", "resourceId": op.resource_id,
                    "startTime": op.started, "percentComplete": 50.0}),
        )
        .with_header("Location", &operation_url(req, cfg, sub, &id));
        if let Some(s) = cfg.retry_after_secs {
            reply = reply.with_header("Retry-After", &s.to_string());
        }
        return reply;
    }
    let (status, error) = match (op.assignment, &cfg.fail) {
        (Some(_), Some((code, message))) => ("Failed", json!({"code": code, "message": message})),
        _ => ("Succeeded", Value::Null),
    };
    if let Some(i) = op.assignment {
        if let Some(a) = st.assignments.get_mut(i) {
            a.status = status.into();
        }
    }
    let mut result = json!({
        "id": format!("/subscriptions/{sub}/providers/Microsoft.NetworkCloud/locations/{}/operationStatuses/{}", cfg.location, op.id),
        "name": op.id, "status": status, "resourceId": op.resource_id,
        "startTime": op.started, "endTime": store::rfc3339(crate::jwt::now_unix()),
        "percentComplete": 100.0,
    });
    if !error.is_null() {
        result["error"] = error;
    }
    Reply::json(200, &result)
}

fn endpoint(
    st: &HybridState,
    store: Option<&Store>,
    req: &Request,
    sub: &str,
    rg: &str,
    name: &str,
    endpoint: &str,
) -> Reply {
    if let Err(r) = api_version_ok(req, &[HYBRIDCONNECTIVITY_API_VERSION]) {
        return r;
    }
    if req.method != "GET" {
        return arm_error(
            405,
            "MethodNotAllowed",
            "The requested method is not allowed.",
        );
    }
    let machine = store.and_then(|s| s.get_machine(sub, rg, name).ok().flatten());
    let Some(m) = machine else {
        return machine_not_found(rg, name);
    };
    let relayed = st
        .assignments
        .iter()
        .any(|a| a.status == "Succeeded" && a.machine_id.eq_ignore_ascii_case(&m.id));
    if !endpoint.eq_ignore_ascii_case("default") || !relayed {
        return arm_error(
            404,
            "ResourceNotFound",
            &format!("The Resource 'Microsoft.HybridConnectivity/endpoints/{endpoint}' under resource '{}' was not found.", m.id),
        );
    }
    Reply::json(
        200,
        &json!({
            "id": format!("{}/providers/Microsoft.HybridConnectivity/endpoints/default", m.id),
            "name": "default",
            "type": "Microsoft.HybridConnectivity/endpoints",
            "properties": {"type": "default", "resourceId": m.id, "provisioningState": "Succeeded"},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names_follow_the_spec_pattern() {
        for ok in ["a", "web-01", "web_01", "web.01", &"x".repeat(54)] {
            assert!(valid_machine_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(55)] {
            assert!(!valid_machine_name(bad), "{bad}");
        }
    }
}
