//! A fake Azure IMDS (FACTS.md §5, §6): the managed-identity token endpoint and instance metadata,
//! answering like the real service (validation, error bodies, all-string JSON fields, JWT claims),
//! plus programmable faults: a per-token-request script, a "gone" (410) period after start, a
//! requests-per-second throttle, and a missing instance-metadata endpoint (as a Nexus sidecar may).
//!
//! Order of evaluation for a request:
//! 1. `/healthz` => 200 (the Nexus sidecar's health endpoint); anything outside `/metadata/` => 404.
//! 2. `gone_for` not yet elapsed => 410 (every `/metadata/` request: IMDS is "updating").
//! 3. token path: more than `throttle_rps` token requests in the current 1 s window => 429 with
//!    `Retry-After: 1`.
//! 4. Validation, as the real endpoint does it: proxied (X-Forwarded-For, or absolute-form which
//!    only a proxy-configured client sends) => 400; `Metadata: true` => 400; duplicate query names
//!    => 400; api-version => 400; `resource` => 400; identity selection => 400.
//! 5. token path: the next scripted [`Step`] (consumed only by requests that passed validation),
//!    else a normal token.
//!
//! Bodies marked UNCONFIRMED below are not documented anywhere we read; clients must not branch on
//! error descriptions anyway (ENTRA: "Error descriptions can change at any time").

use crate::http::{Reply, Request, Server};
use crate::jwt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
pub const INSTANCE_PATH: &str = "/metadata/instance";
pub const COMPUTE_PATH: &str = "/metadata/instance/compute";

/// FACTS §5.3 (IMDSDOC, instance endpoint; also used for the token endpoint).
pub const BODY_BAD_API_VERSION: &str = r#"{"error":"Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds","newest-versions":["2025-04-07","2024-07-17","2024-03-15"]}"#;
/// FACTS §5.3 (ENTRA), token endpoint.
pub const BODY_NO_METADATA_HEADER: &str =
    r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#;
/// FACTS §5.3 (samples), instance endpoint.
pub const BODY_NO_METADATA_HEADER_INSTANCE: &str =
    r#"{"error":"Bad request. Required metadata header not specified"}"#;
/// aad-pod-identity PR #450 quotes IMDS's answer to a request without `resource`.
pub const BODY_NO_RESOURCE: &str = r#"{"error":"invalid_request","error_description":"Required query variable 'resource' is missing"}"#;
/// FACTS §5.3.
pub const BODY_IDENTITY_NOT_FOUND: &str =
    r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
/// FACTS §5.3.
pub const BODY_MULTIPLE_UAMI: &str = r#"{"error":"invalid_request","error_description":"Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"}"#;
/// FACTS §5.3 (500, transient / MI not enabled).
pub const BODY_500: &str = r#"{"error":"unknown","error_description":"Failed to retrieve token from the Active directory. For details see logs in C:\\User\\Logs\\Plugins\\Microsoft.Identity.MSI\\1.0\\service_identity_0.log"}"#;
/// UNCONFIRMED wording (IMDSDOC only says such requests are rejected).
pub const BODY_FORWARDED: &str = r#"{"error":"invalid_request","error_description":"Requests with the X-Forwarded-For header are not allowed"}"#;
/// UNCONFIRMED wording (IMDSDOC only says such requests are rejected).
pub const BODY_DUPLICATE_PARAM: &str = r#"{"error":"invalid_request","error_description":"Duplicate query parameter names are not allowed"}"#;
/// UNCONFIRMED wording.
pub const BODY_SEVERAL_SELECTORS: &str = r#"{"error":"invalid_request","error_description":"Only one of client_id, object_id or msi_res_id may be specified"}"#;

/// A user-assigned managed identity attached to the fake VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    /// `/subscriptions/<sub>/resourcegroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`
    pub resource_id: String,
    /// The identity's application (client) id: the token's `appid`.
    pub client_id: String,
    /// The identity's principal (object) id: the token's `oid`.
    pub object_id: String,
    /// The identity's name (last segment of the resource id).
    pub principal_name: String,
}

impl UserIdentity {
    /// An identity with client and object ids derived deterministically from the resource id.
    pub fn new(resource_id: &str) -> UserIdentity {
        UserIdentity {
            resource_id: resource_id.to_string(),
            client_id: fake_guid(&format!("uami-client:{}", resource_id.to_ascii_lowercase())),
            object_id: fake_guid(&format!("uami-object:{}", resource_id.to_ascii_lowercase())),
            principal_name: resource_id
                .rsplit('/')
                .find(|s| !s.is_empty())
                .unwrap_or("identity")
                .to_string(),
        }
    }

    /// `/subscriptions/<sub>/resourcegroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`
    pub fn named(subscription_id: &str, resource_group: &str, name: &str) -> UserIdentity {
        UserIdentity::new(&format!(
            "/subscriptions/{subscription_id}/resourcegroups/{resource_group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        ))
    }

    pub fn with_client_id(mut self, client_id: &str) -> UserIdentity {
        self.client_id = client_id.to_string();
        self
    }

    pub fn with_object_id(mut self, object_id: &str) -> UserIdentity {
        self.object_id = object_id.to_string();
        self
    }
}

/// What one token request gets instead of the default answer (see [`ImdsConfig::script`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A normal token.
    Ok,
    /// Any status; `body` None => empty body; `retry_after` => a `Retry-After` header.
    Status {
        code: u16,
        body: Option<String>,
        retry_after: Option<String>,
    },
    /// Read the request, answer nothing for this long, then close.
    Hang(Duration),
    /// Close the connection without an answer.
    Close,
    /// 200 with the full Content-Length but only half a token body, then close.
    Truncated,
    /// 200 with a non-JSON body (an HTML page, as an intercepting proxy or portal sends).
    Garbage,
    /// 200 with `"access_token": null` (what `curl | jq -r .access_token` turns into "null").
    NullToken,
    /// 200 with `"access_token": ""`.
    EmptyToken,
    /// 200 with a token expiring `exp_in_secs` from now (negative = already expired), and/or a
    /// wrong `aud`, and/or a foreign `tid` (and matching `iss`). `expires_in`/`expires_on` agree
    /// with the token's `exp`; `resource` still echoes the request.
    TokenWith {
        exp_in_secs: i64,
        aud: Option<String>,
        tid: Option<String>,
    },
}

impl Step {
    pub fn status(code: u16) -> Step {
        Step::Status {
            code,
            body: None,
            retry_after: None,
        }
    }

    fn status_body(code: u16, body: &str) -> Step {
        Step::Status {
            code,
            body: Some(body.to_string()),
            retry_after: None,
        }
    }

    /// 404: "IMDS updating" (FACTS §5.3 documents no body; none is sent).
    pub fn not_found() -> Step {
        Step::status(404)
    }

    /// 410: "IMDS updating; available within 70 seconds" (no body documented; none is sent).
    pub fn gone() -> Step {
        Step::status(410)
    }

    /// 429 without Retry-After (no body documented; none is sent).
    pub fn throttled() -> Step {
        Step::status(429)
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn throttled_retry_after(secs: u64) -> Step {
        Step::Status {
            code: 429,
            body: None,
            retry_after: Some(secs.to_string()),
        }
    }

    /// 500 `{"error":"unknown","error_description":"Failed to retrieve token from the Active directory..."}`.
    pub fn server_error() -> Step {
        Step::status_body(500, BODY_500)
    }

    /// 400 `Identity not found` (e.g. a newly assigned identity not yet propagated).
    pub fn identity_not_found() -> Step {
        Step::status_body(400, BODY_IDENTITY_NOT_FOUND)
    }

    /// 200 with a token that expired `secs_ago` seconds ago.
    pub fn expired(secs_ago: i64) -> Step {
        Step::TokenWith {
            exp_in_secs: -secs_ago,
            aud: None,
            tid: None,
        }
    }

    /// 200 with a token that expires in `secs`.
    pub fn short_lived(secs: i64) -> Step {
        Step::TokenWith {
            exp_in_secs: secs,
            aud: None,
            tid: None,
        }
    }

    /// 200 with a token for another audience.
    pub fn wrong_aud(aud: &str) -> Step {
        Step::TokenWith {
            exp_in_secs: 86_400,
            aud: Some(aud.to_string()),
            tid: None,
        }
    }

    /// 200 with a token from another tenant.
    pub fn foreign_tenant(tid: &str) -> Step {
        Step::TokenWith {
            exp_in_secs: 86_400,
            aud: None,
            tid: Some(tid.to_string()),
        }
    }

    /// Parse one `--script` item: `200`|`ok`, any status code `NNN` (404, 410, 429, 500 and 400
    /// get the bodies of the constructors above), `NNNra=S` (with `Retry-After: S`), `hang=SECS`,
    /// `close`, `truncated`, `garbage`, `null`, `empty`, `expired`, `short=SECS`, `wrongaud`,
    /// `foreigntid`.
    pub fn parse(item: &str) -> Result<Step, String> {
        let item = item.trim();
        let lower = item.to_ascii_lowercase();
        let secs = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("bad seconds {v:?} in script item {item:?}"))
        };
        Ok(match lower.as_str() {
            "200" | "ok" => Step::Ok,
            "close" => Step::Close,
            "truncated" | "truncate" => Step::Truncated,
            "garbage" => Step::Garbage,
            "null" => Step::NullToken,
            "empty" => Step::EmptyToken,
            "expired" => Step::expired(60),
            "wrongaud" => Step::wrong_aud("https://vault.azure.net"),
            "foreigntid" => Step::foreign_tenant(&fake_guid("foreign-tenant")),
            _ => {
                if let Some(v) = lower.strip_prefix("hang=") {
                    Step::Hang(Duration::from_secs_f64(secs(v)?))
                } else if let Some(v) = lower.strip_prefix("short=") {
                    Step::short_lived(secs(v)? as i64)
                } else {
                    let (code, ra) = match lower.split_once("ra=") {
                        Some((c, s)) => (c, Some(secs(s)? as u64)),
                        None => (lower.as_str(), None),
                    };
                    let code: u16 = code
                        .parse()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| format!("unknown script item {item:?}"))?;
                    let mut step = match code {
                        200 => Step::Ok,
                        400 => Step::identity_not_found(),
                        500 => Step::server_error(),
                        c => Step::status(c),
                    };
                    if let Some(ra) = ra {
                        step = match step {
                            Step::Status { code, body, .. } => Step::Status {
                                code,
                                body,
                                retry_after: Some(ra.to_string()),
                            },
                            _ => return Err(format!("Retry-After makes no sense on {item:?}")),
                        };
                    }
                    step
                }
            }
        })
    }

    /// Parse a comma-separated `--script` list.
    pub fn parse_list(list: &str) -> Result<Vec<Step>, String> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Step::parse)
            .collect()
    }
}

/// The fake VM and the fake's behaviour. Every field is public; start from `Default`.
#[derive(Clone, Debug)]
pub struct ImdsConfig {
    /// Listen address; default `127.0.0.1:0` (a free port).
    pub listen: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub vm_name: String,
    pub location: String,
    /// The VM's `vmId` (instance metadata) — a GUID.
    pub vm_uuid: String,
    /// Resource type of the VM in resource ids; default `Microsoft.Compute/virtualMachines`
    /// (on Nexus it would be `Microsoft.NetworkCloud/virtualMachines`, UNCONFIRMED).
    pub vm_resource_type: String,
    /// `azEnvironment`; default `AzurePublicCloud`.
    pub az_environment: String,
    /// Instance-metadata `tags` (`k:v;k2:v2`); default "".
    pub tags: String,
    /// Default true.
    pub system_assigned: bool,
    /// The system-assigned identity's client id (`appid`).
    pub system_client_id: String,
    /// The system-assigned identity's principal id (`oid`).
    pub system_object_id: String,
    pub user_assigned: Vec<UserIdentity>,
    /// Lifetime of a freshly minted token; default 24 h (FACTS §5.2).
    pub token_lifetime: Duration,
    /// Tokens look up to this much old already (IMDS caches tokens, so `expires_in` varies below
    /// the lifetime); default 10 min, capped at a tenth of the lifetime. Zero => exact lifetime.
    pub token_jitter: Duration,
    /// Consumed one per (valid) token request; then normal tokens.
    pub script: Vec<Step>,
    /// Answer 410 to every `/metadata/` request until this long after start.
    pub gone_for: Option<Duration>,
    /// Token requests beyond N in the current 1-second window => 429 `Retry-After: 1`.
    pub throttle_rps: Option<u32>,
    /// Serve `/metadata/instance[/...]`; false => 404 (as a Nexus sidecar may). Default true.
    pub instance_metadata: bool,
    /// Serve absolute-form requests (a client that sent IMDS traffic to a proxy) like direct
    /// ones. Default false: they get the 400 a proxied request (X-Forwarded-For) gets.
    pub serve_proxied: bool,
    /// Append every request as one JSON line to this file.
    pub record_file: Option<PathBuf>,
    /// Append every access token minted, one per line, to this file (for tests that scan other
    /// programs' output for them, e.g. the Ansible role's). Holds secrets: test use only.
    pub issued_tokens_file: Option<PathBuf>,
    /// Print `fake-imds: GET /path -> 410` to stderr per request.
    pub log_stderr: bool,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            listen: "127.0.0.1:0".into(),
            tenant_id: fake_guid("tenant"),
            subscription_id: fake_guid("subscription"),
            resource_group: "rg-arc-enroll".into(),
            vm_name: "vm-arc-enroll-01".into(),
            location: "eastus".into(),
            vm_uuid: fake_guid("vm"),
            vm_resource_type: "Microsoft.Compute/virtualMachines".into(),
            az_environment: "AzurePublicCloud".into(),
            tags: String::new(),
            system_assigned: true,
            system_client_id: fake_guid("system-client"),
            system_object_id: fake_guid("system-object"),
            user_assigned: Vec::new(),
            token_lifetime: Duration::from_secs(86_400),
            token_jitter: Duration::from_secs(600),
            script: Vec::new(),
            gone_for: None,
            throttle_rps: None,
            instance_metadata: true,
            serve_proxied: false,
            record_file: None,
            issued_tokens_file: None,
            log_stderr: false,
        }
    }
}

impl ImdsConfig {
    /// The VM's ARM resource id as instance metadata gives it (`resourceGroups`).
    pub fn vm_resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}",
            self.subscription_id, self.resource_group, self.vm_resource_type, self.vm_name
        )
    }

    /// The VM's resource id as the `xms_mirid` / `xms_az_rid` claims give it (`resourcegroups`).
    pub fn vm_mirid(&self) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/{}/{}",
            self.subscription_id, self.resource_group, self.vm_resource_type, self.vm_name
        )
    }

    /// A user-assigned identity named `name` in this VM's subscription and resource group.
    pub fn uami(&self, name: &str) -> UserIdentity {
        UserIdentity::named(&self.subscription_id, &self.resource_group, name)
    }

    pub fn with_user_assigned(mut self, id: UserIdentity) -> Self {
        self.user_assigned.push(id);
        self
    }

    pub fn without_system_assigned(mut self) -> Self {
        self.system_assigned = false;
        self
    }

    pub fn with_script(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.script = steps.into_iter().collect();
        self
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The request-target exactly as sent.
    pub target: String,
    pub path: String,
    /// Percent-decoded, in order, duplicates kept.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Time since the fake started.
    pub at: Duration,
    /// The target was absolute-form (`http://169.254.169.254/...`): the client was talking to a
    /// proxy.
    pub via_proxy: bool,
    /// The status answered; None when the fake hung or closed without answering.
    pub status: Option<u16>,
    /// A fault injected instead of a plain answer: `hang 5s`, `close`, `truncated`, `garbage`,
    /// `null-token`, `empty-token`, `token-with`, `gone`, `throttled`, `script`.
    pub fault: Option<String>,
    pub peer: Option<SocketAddr>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        crate::http::param(&self.query, name)
    }

    pub fn is_token_request(&self) -> bool {
        self.path == TOKEN_PATH
    }

    /// One JSON object (the `record_file` line format).
    pub fn to_json(&self) -> Value {
        json!({
            "at_ms": self.at.as_millis() as u64,
            "method": self.method,
            "target": self.target,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "via_proxy": self.via_proxy,
            "status": self.status,
            "fault": self.fault,
            "peer": self.peer.map(|p| p.to_string()),
        })
    }
}

struct State {
    cfg: ImdsConfig,
    script: VecDeque<Step>,
    requests: Vec<Recorded>,
    token_requests: usize,
    minted: u64,
    /// Every access token minted (the secret scanner's list; also in `crate::secrets`).
    issued: Vec<String>,
    /// (window start, token requests admitted in it)
    window: Option<(Instant, u32)>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake IMDS; stops accepting when dropped.
pub struct FakeImds {
    server: Server,
    state: Shared,
}

impl FakeImds {
    /// Start on `config.listen`. Panics if the address cannot be bound (tests want that).
    pub fn start(config: ImdsConfig) -> FakeImds {
        match FakeImds::try_start(config) {
            Ok(f) => f,
            Err(e) => panic!("fake IMDS cannot listen: {e}"),
        }
    }

    pub fn try_start(config: ImdsConfig) -> std::io::Result<FakeImds> {
        let listen = config.listen.clone();
        let state: Shared = Arc::new(Mutex::new(State {
            script: config.script.iter().cloned().collect(),
            cfg: config,
            requests: Vec::new(),
            token_requests: 0,
            minted: 0,
            issued: Vec::new(),
            window: None,
        }));
        let started = Instant::now();
        let st = state.clone();
        let server = Server::start(
            &listen,
            Arc::new(move |req: &Request| handle(&st, started, req)),
        )?;
        Ok(FakeImds { server, state })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// How many requests reached the token path (whatever they were answered).
    pub fn token_requests(&self) -> usize {
        lock(&self.state).token_requests
    }

    /// Append steps to the script.
    pub fn push_script(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.state).script.extend(steps);
    }

    /// Replace what is left of the script.
    pub fn set_script(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.state).script = steps.into_iter().collect();
    }

    /// Every access token this fake minted (also registered in [`crate::secrets`]).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// Steps not yet consumed.
    pub fn script_left(&self) -> usize {
        lock(&self.state).script.len()
    }

    /// A copy of the configuration in force.
    pub fn config(&self) -> ImdsConfig {
        lock(&self.state).cfg.clone()
    }

    /// Change the configuration at run time (identities, throttle, gone_for, ...). `listen` and
    /// `script` are ignored here (use `set_script`).
    pub fn update(&self, f: impl FnOnce(&mut ImdsConfig)) {
        f(&mut lock(&self.state).cfg);
    }

    /// Forget recorded requests (the token request count too).
    pub fn clear_requests(&self) {
        let mut s = lock(&self.state);
        s.requests.clear();
        s.token_requests = 0;
    }
}

/// What the handler decided, before it becomes a `Reply`.
struct Outcome {
    reply: Reply,
    status: Option<u16>,
    fault: Option<String>,
}

impl Outcome {
    fn json(status: u16, body: &str) -> Outcome {
        Outcome {
            reply: Reply::Send {
                status,
                headers: vec![(
                    "Content-Type".into(),
                    "application/json; charset=utf-8".into(),
                )],
                body: body.as_bytes().to_vec(),
            },
            status: Some(status),
            fault: None,
        }
    }

    fn value(status: u16, v: &Value) -> Outcome {
        Outcome::json(status, &v.to_string())
    }

    fn empty(status: u16) -> Outcome {
        Outcome {
            reply: Reply::Send {
                status,
                headers: Vec::new(),
                body: Vec::new(),
            },
            status: Some(status),
            fault: None,
        }
    }

    fn text(status: u16, body: &str) -> Outcome {
        Outcome {
            reply: Reply::Send {
                status,
                headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
                body: body.as_bytes().to_vec(),
            },
            status: Some(status),
            fault: None,
        }
    }

    fn fault(mut self, f: &str) -> Outcome {
        self.fault = Some(f.to_string());
        self
    }
}

fn handle(state: &Shared, started: Instant, req: &Request) -> Reply {
    let at = started.elapsed();
    let mut s = lock(state);
    let outcome = decide(&mut s, at, req);
    let rec = Recorded {
        method: req.method.clone(),
        target: req.target.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        at,
        via_proxy: is_absolute_form(&req.target),
        status: outcome.status,
        fault: outcome.fault.clone(),
        peer: req.peer,
    };
    if rec.is_token_request() {
        s.token_requests += 1;
    }
    if s.cfg.log_stderr {
        let what = match (&rec.status, &rec.fault) {
            (Some(c), None) => c.to_string(),
            (Some(c), Some(f)) => format!("{c} ({f})"),
            (None, Some(f)) => f.clone(),
            (None, None) => "-".into(),
        };
        let proxy = if rec.via_proxy { " [via proxy]" } else { "" };
        eprintln!(
            "fake-imds: {} {}{} -> {}",
            rec.method, rec.path, proxy, what
        );
    }
    if let Some(path) = &s.cfg.record_file {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", rec.to_json());
        }
    }
    s.requests.push(rec);
    outcome.reply
}

fn is_absolute_form(target: &str) -> bool {
    !target.starts_with('/') && target.contains("://")
}

fn decide(s: &mut State, at: Duration, req: &Request) -> Outcome {
    let path = req.path.as_str();
    if path == "/healthz" {
        return Outcome::text(200, "OK");
    }
    let is_token = path == TOKEN_PATH;
    let is_instance = path == INSTANCE_PATH || path.starts_with("/metadata/instance/");
    if !is_token && !is_instance {
        return Outcome::empty(404);
    }
    if let Some(g) = s.cfg.gone_for {
        if at < g {
            return Outcome::empty(410).fault("gone");
        }
    }
    if is_instance && !s.cfg.instance_metadata {
        return Outcome::empty(404);
    }
    if req.method != "GET" {
        // UNCONFIRMED: what IMDS says to other methods.
        return Outcome::json(405, r#"{"error":"Method not allowed"}"#);
    }
    if is_token {
        if let Some(n) = s.cfg.throttle_rps {
            let now = Instant::now();
            let (start, count) = match s.window {
                Some((start, count)) if now.duration_since(start) < Duration::from_secs(1) => {
                    (start, count)
                }
                _ => (now, 0),
            };
            if count >= n {
                s.window = Some((start, count));
                let mut o = Outcome::empty(429).fault("throttled");
                if let Reply::Send { headers, .. } = &mut o.reply {
                    headers.push(("Retry-After".into(), "1".into()));
                }
                return o;
            }
            s.window = Some((start, count + 1));
        }
    }
    let proxied = req.header("X-Forwarded-For").is_some()
        || (is_absolute_form(&req.target) && !s.cfg.serve_proxied);
    if proxied {
        return Outcome::json(400, BODY_FORWARDED);
    }
    if req.header("Metadata") != Some("true") {
        return Outcome::json(
            400,
            if is_token {
                BODY_NO_METADATA_HEADER
            } else {
                BODY_NO_METADATA_HEADER_INSTANCE
            },
        );
    }
    for (i, (k, _)) in req.query.iter().enumerate() {
        if req.query[..i].iter().any(|(k2, _)| k2 == k) {
            return Outcome::json(400, BODY_DUPLICATE_PARAM);
        }
    }
    let min_version = if is_token { "2018-02-01" } else { "2017-03-01" };
    if !api_version_ok(req.param("api-version"), min_version) {
        return Outcome::json(400, BODY_BAD_API_VERSION);
    }
    if is_token {
        token(s, req)
    } else {
        instance(s, req)
    }
}

/// A well-formed `YYYY-MM-DD` not before `min` (real versions: 2018-02-01, 2018-04-02,
/// 2018-10-01, 2019-08-01, ... 2025-04-07; later dated ones accepted as well).
fn api_version_ok(v: Option<&str>, min: &str) -> bool {
    let Some(v) = v else { return false };
    let b = v.as_bytes();
    let well_formed = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !well_formed {
        return false;
    }
    let month: u32 = v[5..7].parse().unwrap_or(0);
    let day: u32 = v[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day) && v >= min && v <= "2099-12-31"
}

/// Which identity a token is for.
struct Ident {
    client_id: String,
    object_id: String,
    mirid: String,
    az_rid: Option<String>,
}

fn select_identity(cfg: &ImdsConfig, req: &Request) -> Result<Ident, &'static str> {
    let sel: Vec<(&str, &str)> = ["client_id", "object_id", "msi_res_id"]
        .iter()
        .filter_map(|k| req.param(k).map(|v| (*k, v)))
        .collect();
    if sel.len() > 1 {
        return Err(BODY_SEVERAL_SELECTORS);
    }
    let ua = |u: &UserIdentity| Ident {
        client_id: u.client_id.clone(),
        object_id: u.object_id.clone(),
        mirid: u.resource_id.clone(),
        az_rid: Some(cfg.vm_mirid()),
    };
    if let Some((k, v)) = sel.first() {
        let v = v.trim();
        let found = cfg.user_assigned.iter().find(|u| match *k {
            "client_id" => u.client_id.eq_ignore_ascii_case(v),
            "object_id" => u.object_id.eq_ignore_ascii_case(v),
            // ARM ids are case-insensitive (FACTS §6).
            _ => u.resource_id.eq_ignore_ascii_case(v),
        });
        return found.map(ua).ok_or(BODY_IDENTITY_NOT_FOUND);
    }
    if cfg.system_assigned {
        return Ok(Ident {
            client_id: cfg.system_client_id.clone(),
            object_id: cfg.system_object_id.clone(),
            mirid: cfg.vm_mirid(),
            az_rid: None,
        });
    }
    match cfg.user_assigned.as_slice() {
        // The documented quirk: with exactly one UAMI, a request without a selector gets it.
        [one] => Ok(ua(one)),
        [] => Err(BODY_IDENTITY_NOT_FOUND),
        _ => Err(BODY_MULTIPLE_UAMI),
    }
}

fn token(s: &mut State, req: &Request) -> Outcome {
    let resource = match req.param("resource") {
        Some(r) if !r.trim().is_empty() => r.to_string(),
        _ => return Outcome::json(400, BODY_NO_RESOURCE),
    };
    let ident = match select_identity(&s.cfg, req) {
        Ok(i) => i,
        Err(body) => return Outcome::json(400, body),
    };
    // A v2 scope or something that is no App ID URI is no resource principal in the tenant.
    if resource.ends_with("/.default")
        || resource.chars().any(char::is_whitespace)
        || !(resource.contains("://") || is_guid(&resource))
    {
        let body = json!({
            "error": "invalid_resource",
            "error_description": format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                s.cfg.tenant_id
            ),
            "error_codes": [500011],
        });
        return Outcome::value(400, &body);
    }
    let step = s.script.pop_front();
    let scripted = step.is_some();
    let o = match step.unwrap_or(Step::Ok) {
        Step::Ok => Outcome::value(200, &mint(s, &ident, &resource, None)),
        Step::Status {
            code,
            body,
            retry_after,
        } => {
            let mut o = match body {
                Some(b) if serde_json::from_str::<Value>(&b).is_ok() => Outcome::json(code, &b),
                Some(b) => Outcome::text(code, &b),
                None => Outcome::empty(code),
            };
            if let (Some(ra), Reply::Send { headers, .. }) = (retry_after, &mut o.reply) {
                headers.push(("Retry-After".into(), ra));
            }
            o
        }
        Step::Hang(d) => Outcome {
            reply: Reply::Hang(d),
            status: None,
            fault: Some(format!("hang {}s", d.as_secs_f64())),
        },
        Step::Close => Outcome {
            reply: Reply::Close,
            status: None,
            fault: Some("close".into()),
        },
        Step::Truncated => {
            let body = mint(s, &ident, &resource, None).to_string().into_bytes();
            Outcome {
                reply: Reply::Truncate { status: 200, body },
                status: Some(200),
                fault: Some("truncated".into()),
            }
        }
        Step::Garbage => Outcome {
            reply: Reply::Send {
                status: 200,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: b"<html><head><title>Network Access Message</title></head><body>The page cannot be displayed.</body></html>".to_vec(),
            },
            status: Some(200),
            fault: Some("garbage".into()),
        },
        Step::NullToken => {
            let mut v = mint(s, &ident, &resource, None);
            v["access_token"] = Value::Null;
            Outcome::value(200, &v).fault("null-token")
        }
        Step::EmptyToken => {
            let mut v = mint(s, &ident, &resource, None);
            v["access_token"] = json!("");
            Outcome::value(200, &v).fault("empty-token")
        }
        Step::TokenWith {
            exp_in_secs,
            aud,
            tid,
        } => {
            let v = mint(s, &ident, &resource, Some((exp_in_secs, aud, tid)));
            Outcome::value(200, &v).fault("token-with")
        }
    };
    if scripted && o.fault.is_none() {
        o.fault("script")
    } else {
        o
    }
}

type Override = (i64, Option<String>, Option<String>);

/// The success body: every field a JSON string (FACTS §5.2).
fn mint(s: &mut State, id: &Ident, resource: &str, over: Option<Override>) -> Value {
    s.minted += 1;
    let n = s.minted;
    let cfg = &s.cfg;
    let now = jwt::now_unix() as i64;
    let lifetime = cfg.token_lifetime.as_secs() as i64;
    let (iat, exp, aud, tid) = match over {
        None => {
            // A cached token: minted `age` seconds ago (capped at a tenth of the lifetime).
            let max_age = (cfg.token_jitter.as_secs() as i64).min(lifetime / 10);
            let age = if max_age > 0 {
                (fnv(&format!("age:{n}:{now}")) % (max_age as u64 + 1)) as i64
            } else {
                0
            };
            // Entra back-dates iat/nbf by 5 minutes (exp - iat = 86,700 s for a 24 h token).
            (
                now - age - 300,
                now - age + lifetime,
                resource.to_string(),
                cfg.tenant_id.clone(),
            )
        }
        Some((exp_in, aud, tid)) => (
            (now + exp_in).min(now) - 300,
            now + exp_in,
            aud.unwrap_or_else(|| resource.to_string()),
            tid.unwrap_or_else(|| cfg.tenant_id.clone()),
        ),
    };
    let mut claims = json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "aio": b64id(&format!("aio:{n}:{now}"), 56),
        "appid": id.client_id,
        "appidacr": "2",
        "idp": format!("https://sts.windows.net/{tid}/"),
        "idtyp": "app",
        "oid": id.object_id,
        "rh": format!("0.{}.", b64id(&format!("rh:{tid}"), 40)),
        "sub": id.object_id,
        "tid": tid,
        "uti": b64id(&format!("uti:{n}:{now}:{}", id.object_id), 22),
        "ver": "1.0",
        "xms_mirid": id.mirid,
        "xms_tcdt": 1_289_241_547,
    });
    if let Some(rid) = &id.az_rid {
        claims["xms_az_rid"] = json!(rid);
    }
    let expires_in = exp - now;
    // Each token gets its own signature, and the scanner gets that signature: a JWT's header and
    // claims are not secret (arc-enroll prints the claims), and base64 of claims JSON shares
    // 16-byte runs with other base64 JSON (`  "sub` in user-data's embedded config), which made
    // the scanner report `user-data` output as a token leak. Every leak of a token holds it.
    let access_token = crate::oidc::mint(&claims, "imds-fake-key");
    let signature = access_token.rsplit('.').next().unwrap_or(&access_token);
    crate::secrets::register(crate::secrets::ACCESS_TOKEN, signature);
    s.issued.push(access_token.clone());
    if let Some(path) = &cfg.issued_tokens_file {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{access_token}");
        }
    }
    json!({
        "access_token": access_token,
        "refresh_token": "",
        "expires_in": expires_in.to_string(),
        "expires_on": exp.to_string(),
        "ext_expires_in": expires_in.to_string(),
        "not_before": iat.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": id.client_id,
    })
}

/// Instance metadata: all primitives strings (FACTS §5.6).
fn instance_doc(cfg: &ImdsConfig) -> Value {
    let compute = json!({
        "azEnvironment": cfg.az_environment,
        "customData": "",
        "evictionPolicy": "",
        "isHostCompatibilityLayerVm": "false",
        "licenseType": "",
        "location": cfg.location,
        "name": cfg.vm_name,
        "offer": "0001-com-ubuntu-server-jammy",
        "osProfile": {
            "adminUsername": "azureuser",
            "computerName": cfg.vm_name,
            "disablePasswordAuthentication": "true",
        },
        "osType": "Linux",
        "placementGroupId": "",
        "plan": { "name": "", "product": "", "publisher": "" },
        "platformFaultDomain": "0",
        "platformUpdateDomain": "0",
        "priority": "",
        "provider": cfg.vm_resource_type.split('/').next().unwrap_or(""),
        "publicKeys": [],
        "publisher": "canonical",
        "resourceGroupName": cfg.resource_group,
        "resourceId": cfg.vm_resource_id(),
        "securityProfile": { "secureBootEnabled": "false", "virtualTpmEnabled": "false" },
        "sku": "22_04-lts-gen2",
        "subscriptionId": cfg.subscription_id,
        "tags": cfg.tags,
        "tagsList": cfg.tags.split(';').filter(|t| !t.is_empty()).map(|t| {
            let (k, v) = t.split_once(':').unwrap_or((t, ""));
            json!({"name": k, "value": v})
        }).collect::<Vec<_>>(),
        "userData": "",
        "version": "22.04.202404080",
        "vmId": cfg.vm_uuid,
        "vmScaleSetName": "",
        "vmSize": "Standard_D2s_v3",
        "zone": "",
    });
    let network = json!({
        "interface": [{
            "ipv4": {
                "ipAddress": [{ "privateIpAddress": "10.0.0.4", "publicIpAddress": "" }],
                "subnet": [{ "address": "10.0.0.0", "prefix": "24" }],
            },
            "ipv6": { "ipAddress": [] },
            "macAddress": "000D3A8F1C2B",
        }]
    });
    json!({ "compute": compute, "network": network })
}

fn instance(s: &State, req: &Request) -> Outcome {
    let doc = instance_doc(&s.cfg);
    let rest = req.path[INSTANCE_PATH.len()..].trim_matches('/');
    let mut node = &doc;
    for seg in rest.split('/').filter(|p| !p.is_empty()) {
        let next = match node {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return Outcome::empty(404),
        }
    }
    let leaf = !(node.is_object() || node.is_array());
    // UNCONFIRMED bodies for the format mismatches; IMDSDOC: leaves need format=text.
    match (req.param("format"), leaf) {
        (None | Some("json"), false) => Outcome::value(200, node),
        (None | Some("text"), true) => Outcome::text(200, node.as_str().unwrap_or_default()),
        (Some("text"), false) => Outcome::json(
            400,
            r#"{"error":"Bad request. Query parameter format=text is not supported for non-leaf nodes"}"#,
        ),
        (Some("json"), true) => Outcome::json(
            400,
            r#"{"error":"Bad request. Query parameter format=json is not supported for leaf nodes"}"#,
        ),
        (Some(_), _) => Outcome::json(
            400,
            r#"{"error":"Bad request. Query parameter format is invalid"}"#,
        ),
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // finalize (splitmix64) so nearby seeds differ in every nibble
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A deterministic, well-formed (version 4) GUID derived from `seed`: distinct seeds give
/// distinct GUIDs, the same seed always the same one.
pub fn fake_guid(seed: &str) -> String {
    let a = fnv(&format!("a:{seed}"));
    let b = fnv(&format!("b:{seed}"));
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A base64url-looking id of `len` characters derived from `seed`.
fn b64id(seed: &str, len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|i| A[(fnv(&format!("{seed}:{i}")) % 64) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    const ARM: &str = "https%3A%2F%2Fmanagement.azure.com%2F";

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Resp {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }
        fn header(&self, n: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        }
        fn claims(&self) -> Value {
            jwt::claims(self.json()["access_token"].as_str().unwrap()).unwrap()
        }
    }

    /// Raw HTTP/1.1 GET; `None` when the server closed without a status line.
    fn raw(f: &FakeImds, target: &str, headers: &[(&str, &str)]) -> Option<Resp> {
        let mut s = TcpStream::connect(f.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(Resp {
            status,
            headers,
            body: body.to_string(),
        })
    }

    fn get(f: &FakeImds, target: &str) -> Resp {
        raw(f, target, &[("Metadata", "true")]).expect("an answer")
    }

    fn tok(extra: &str) -> String {
        format!("{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}{extra}")
    }

    #[test]
    fn metadata_header_required_exactly_lowercase_true() {
        let f = FakeImds::start(ImdsConfig::default());
        for h in [vec![], vec![("Metadata", "True")], vec![("Metadata", "1")]] {
            let r = raw(&f, &tok(""), &h).unwrap();
            assert_eq!(r.status, 400);
            assert_eq!(r.body, BODY_NO_METADATA_HEADER);
        }
        let r = raw(&f, &tok(""), &[("metadata", "true")]).unwrap();
        assert_eq!(r.status, 200, "header names are case-insensitive");
        let r = raw(&f, "/metadata/instance/compute?api-version=2021-02-01", &[]).unwrap();
        assert_eq!(
            (r.status, r.body.as_str()),
            (400, BODY_NO_METADATA_HEADER_INSTANCE)
        );
    }

    #[test]
    fn api_version_required_and_checked() {
        let f = FakeImds::start(ImdsConfig::default());
        for v in [
            "",
            "&api-version=",
            "&api-version=2017-12-01",
            "&api-version=latest",
        ] {
            let r = get(&f, &format!("{TOKEN_PATH}?resource={ARM}{v}"));
            assert_eq!(
                (r.status, r.body.as_str()),
                (400, BODY_BAD_API_VERSION),
                "{v}"
            );
        }
        for v in [
            "2018-02-01",
            "2018-04-02",
            "2018-10-01",
            "2019-08-01",
            "2025-04-07",
        ] {
            let r = get(&f, &format!("{TOKEN_PATH}?resource={ARM}&api-version={v}"));
            assert_eq!(r.status, 200, "{v}");
        }
        let r = get(&f, &format!("{TOKEN_PATH}?api-version=2018-02-01"));
        assert_eq!((r.status, r.body.as_str()), (400, BODY_NO_RESOURCE));
        let r = get(
            &f,
            &tok("").replace(ARM, "https%3A%2F%2Fmanagement.azure.com%2F.default"),
        );
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some("invalid_resource"))
        );
    }

    #[test]
    fn duplicate_params_and_forwarded_and_several_selectors_rejected() {
        let mut cfg = ImdsConfig::default();
        let ua = cfg.uami("id1");
        cfg.user_assigned.push(ua.clone());
        let f = FakeImds::start(cfg);
        let r = get(&f, &tok("&api-version=2018-02-01"));
        assert_eq!((r.status, r.body.as_str()), (400, BODY_DUPLICATE_PARAM));
        let r = get(
            &f,
            &tok(&format!("&client_id={0}&client_id={0}", ua.client_id)),
        );
        assert_eq!((r.status, r.body.as_str()), (400, BODY_DUPLICATE_PARAM));
        let r = raw(
            &f,
            &tok(""),
            &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.4")],
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (400, BODY_FORWARDED));
        let r = get(
            &f,
            &tok(&format!(
                "&client_id={}&object_id={}",
                ua.client_id, ua.object_id
            )),
        );
        assert_eq!((r.status, r.body.as_str()), (400, BODY_SEVERAL_SELECTORS));
        assert_eq!(f.token_requests(), 4);
    }

    #[test]
    fn system_assigned_token() {
        let cfg = ImdsConfig::default();
        let f = FakeImds::start(cfg.clone());
        let r = get(&f, &tok(""));
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let v = r.json();
        for k in [
            "access_token",
            "refresh_token",
            "expires_in",
            "expires_on",
            "not_before",
            "resource",
            "token_type",
            "client_id",
        ] {
            assert!(v[k].is_string(), "{k} must be a JSON string: {v}");
        }
        assert_eq!(v["resource"], "https://management.azure.com/");
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["refresh_token"], "");
        let c = r.claims();
        assert_eq!(c["aud"], "https://management.azure.com/");
        assert_eq!(c["tid"], cfg.tenant_id.as_str());
        assert_eq!(
            c["iss"],
            format!("https://sts.windows.net/{}/", cfg.tenant_id)
        );
        assert_eq!(c["oid"], cfg.system_object_id.as_str());
        assert_eq!(c["appid"], cfg.system_client_id.as_str());
        assert_eq!(v["client_id"], cfg.system_client_id.as_str());
        assert_eq!(
            (c["idtyp"].as_str(), c["ver"].as_str()),
            (Some("app"), Some("1.0"))
        );
        assert_eq!(
            c["xms_mirid"],
            format!(
                "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
                cfg.subscription_id, cfg.resource_group, cfg.vm_name
            )
        );
        assert!(c.get("xms_az_rid").is_none());
        let exp = c["exp"].as_i64().unwrap();
        assert_eq!(v["expires_on"], exp.to_string());
        assert_eq!(v["not_before"], c["nbf"].as_i64().unwrap().to_string());
        let expires_in: i64 = v["expires_in"].as_str().unwrap().parse().unwrap();
        assert!(
            (86_400 - 610..=86_400).contains(&expires_in),
            "{expires_in}"
        );
        // aud echoes the resource exactly, whatever it is; uti is unique
        let r2 = get(
            &f,
            &tok("").replace(ARM, "https://management.core.windows.net/"),
        );
        assert_eq!(r2.claims()["aud"], "https://management.core.windows.net/");
        assert_eq!(
            r2.json()["resource"],
            "https://management.core.windows.net/"
        );
        assert_ne!(c["uti"], r2.claims()["uti"]);
        // ids are distinct
        let ids = [
            &cfg.tenant_id,
            &cfg.subscription_id,
            &cfg.vm_uuid,
            &cfg.system_client_id,
            &cfg.system_object_id,
        ];
        for (i, a) in ids.iter().enumerate() {
            assert!(is_guid(a));
            assert!(ids[i + 1..].iter().all(|b| b != a));
        }
    }

    #[test]
    fn user_assigned_by_each_selector() {
        let mut cfg = ImdsConfig::default();
        let a = cfg.uami("uami-a");
        let b = cfg.uami("uami-b");
        cfg.user_assigned = vec![a.clone(), b.clone()];
        let f = FakeImds::start(cfg.clone());
        let enc = |s: &str| s.replace('/', "%2F");
        for extra in [
            format!("&client_id={}", b.client_id),
            format!("&object_id={}", b.object_id.to_uppercase()),
            format!("&msi_res_id={}", enc(&b.resource_id)),
            format!(
                "&msi_res_id={}",
                b.resource_id.replace("resourcegroups", "resourceGroups")
            ),
        ] {
            let r = get(&f, &tok(&extra));
            assert_eq!(r.status, 200, "{extra}: {}", r.body);
            let c = r.claims();
            assert_eq!(c["oid"], b.object_id.as_str());
            assert_eq!(c["appid"], b.client_id.as_str());
            assert_eq!(c["xms_mirid"], b.resource_id.as_str());
            assert_eq!(c["xms_az_rid"], cfg.vm_mirid());
            assert_eq!(r.json()["client_id"], b.client_id.as_str());
        }
        // with a system-assigned identity too, no selector => system-assigned
        let r = get(&f, &tok(""));
        assert_eq!(r.claims()["oid"], cfg.system_object_id.as_str());
        for extra in [
            format!("&client_id={}", fake_guid("nobody")),
            format!("&msi_res_id={}", enc(&cfg.uami("other").resource_id)),
            "&object_id=".to_string(),
        ] {
            let r = get(&f, &tok(&extra));
            assert_eq!(
                (r.status, r.body.as_str()),
                (400, BODY_IDENTITY_NOT_FOUND),
                "{extra}"
            );
        }
        // mi_res_id is the App Service spelling: VM IMDS ignores it
        let r = get(&f, &tok(&format!("&mi_res_id={}", enc(&b.resource_id))));
        assert_eq!(r.claims()["oid"], cfg.system_object_id.as_str());
    }

    #[test]
    fn no_selector_without_system_assigned() {
        let cfg = ImdsConfig::default().without_system_assigned();
        let f = FakeImds::start(cfg.clone());
        let r = get(&f, &tok(""));
        assert_eq!((r.status, r.body.as_str()), (400, BODY_IDENTITY_NOT_FOUND));
        let a = cfg.uami("only");
        f.update(|c| c.user_assigned = vec![a.clone()]);
        let r = get(&f, &tok(""));
        assert_eq!(r.status, 200, "the single-UAMI quirk");
        assert_eq!(r.claims()["xms_mirid"], a.resource_id.as_str());
        f.update(|c| c.user_assigned.push(c.uami("second")));
        let r = get(&f, &tok(""));
        assert_eq!((r.status, r.body.as_str()), (400, BODY_MULTIPLE_UAMI));
        let r = get(&f, &tok(&format!("&client_id={}", a.client_id)));
        assert_eq!(r.status, 200);
    }

    #[test]
    fn script_consumed_in_order() {
        let cfg = ImdsConfig::default().with_script([
            Step::gone(),
            Step::throttled_retry_after(2),
            Step::server_error(),
            Step::NullToken,
            Step::EmptyToken,
            Step::Garbage,
            Step::Truncated,
            Step::Close,
            Step::expired(60),
            Step::wrong_aud("https://vault.azure.net"),
        ]);
        let f = FakeImds::start(cfg);
        // an invalid request does not consume a step
        let r = raw(&f, &tok(""), &[]).unwrap();
        assert_eq!(r.status, 400);
        let r = get(&f, &tok(""));
        assert_eq!((r.status, r.body.as_str()), (410, ""));
        let r = get(&f, &tok(""));
        assert_eq!((r.status, r.header("Retry-After")), (429, Some("2")));
        let r = get(&f, &tok(""));
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (500, Some("unknown"))
        );
        let r = get(&f, &tok(""));
        assert!(r.json()["access_token"].is_null());
        assert_eq!(r.json()["token_type"], "Bearer");
        assert_eq!(get(&f, &tok("")).json()["access_token"], "");
        let r = get(&f, &tok(""));
        assert_eq!(r.status, 200);
        assert!(serde_json::from_str::<Value>(&r.body).is_err());
        let r = get(&f, &tok(""));
        assert_eq!(r.status, 200);
        let cl: usize = r.header("content-length").unwrap().parse().unwrap();
        assert!(r.body.len() < cl, "truncated");
        assert!(
            raw(&f, &tok(""), &[("Metadata", "true")]).is_none(),
            "closed"
        );
        let r = get(&f, &tok(""));
        let exp = r.claims()["exp"].as_i64().unwrap();
        assert!(exp < jwt::now_unix() as i64);
        assert_eq!(r.json()["expires_on"], exp.to_string());
        let r = get(&f, &tok(""));
        assert_eq!(r.claims()["aud"], "https://vault.azure.net");
        assert_eq!(r.json()["resource"], "https://management.azure.com/");
        assert_eq!(f.script_left(), 0);
        assert_eq!(get(&f, &tok("")).status, 200);
        // runtime changes
        f.push_script([Step::not_found(), Step::Hang(Duration::from_millis(300))]);
        f.push_script([Step::status(503)]);
        assert_eq!(get(&f, &tok("")).status, 404);
        let t = Instant::now();
        assert!(raw(&f, &tok(""), &[("Metadata", "true")]).is_none());
        assert!(t.elapsed() >= Duration::from_millis(300));
        f.set_script([Step::gone()]);
        assert_eq!(get(&f, &tok("")).status, 410);
        assert_eq!(get(&f, &tok("")).status, 200);
        let recs = f.requests();
        assert_eq!(recs[0].status, Some(400));
        assert_eq!(recs[1].fault.as_deref(), Some("script"));
        assert!(recs
            .iter()
            .any(|r| r.status.is_none() && r.fault.as_deref() == Some("close")));
        assert_eq!(f.token_requests(), recs.len());
    }

    #[test]
    fn gone_for_answers_410_until_elapsed() {
        let cfg = ImdsConfig {
            gone_for: Some(Duration::from_millis(400)),
            ..Default::default()
        };
        let f = FakeImds::start(cfg);
        assert_eq!(get(&f, &tok("")).status, 410);
        assert_eq!(
            get(&f, "/metadata/instance/compute?api-version=2021-02-01").status,
            410
        );
        assert_eq!(get(&f, "/healthz").status, 200);
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(get(&f, &tok("")).status, 200);
        assert_eq!(f.requests()[0].fault.as_deref(), Some("gone"));
    }

    #[test]
    fn throttling_gives_429_with_retry_after() {
        let cfg = ImdsConfig {
            throttle_rps: Some(3),
            ..Default::default()
        };
        let f = FakeImds::start(cfg);
        let statuses: Vec<_> = (0..5).map(|_| get(&f, &tok(""))).collect();
        let ok = statuses.iter().filter(|r| r.status == 200).count();
        let throttled: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
        assert!(ok >= 3, "at least N per window pass");
        assert!(!throttled.is_empty(), "some are throttled");
        assert!(throttled
            .iter()
            .all(|r| r.header("Retry-After") == Some("1")));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(get(&f, &tok("")).status, 200);
        // instance metadata is not counted
        assert_eq!(
            get(&f, "/metadata/instance?api-version=2021-02-01").status,
            200
        );
    }

    #[test]
    fn absolute_form_recorded_as_via_proxy() {
        let f = FakeImds::start(ImdsConfig::default());
        let abs = format!("http://169.254.169.254{}", tok(""));
        let r = get(&f, &abs);
        assert_eq!((r.status, r.body.as_str()), (400, BODY_FORWARDED));
        f.update(|c| c.serve_proxied = true);
        assert_eq!(get(&f, &abs).status, 200);
        // an unencoded resource URL in origin-form is not absolute-form
        let r = get(
            &f,
            &format!("{TOKEN_PATH}?api-version=2018-02-01&resource=https://management.azure.com/"),
        );
        assert_eq!(r.status, 200);
        let recs = f.requests();
        assert!(recs[0].via_proxy && recs[1].via_proxy && !recs[2].via_proxy);
        assert_eq!(recs[0].target, abs);
        assert_eq!(recs[0].path, TOKEN_PATH);
        assert_eq!(
            recs[0].param("resource"),
            Some("https://management.azure.com/")
        );
        assert_eq!(recs[0].header("metadata"), Some("true"));
    }

    #[test]
    fn instance_metadata_strings() {
        let cfg = ImdsConfig {
            tags: "env:test;team:arc".into(),
            ..Default::default()
        };
        let f = FakeImds::start(cfg.clone());
        let r = get(
            &f,
            "/metadata/instance/compute?api-version=2021-02-01&format=json",
        );
        assert_eq!(r.status, 200);
        let c = r.json();
        assert_eq!(c["subscriptionId"], cfg.subscription_id.as_str());
        assert_eq!(c["resourceGroupName"], cfg.resource_group.as_str());
        assert_eq!(c["location"], cfg.location.as_str());
        assert_eq!(c["vmId"], cfg.vm_uuid.as_str());
        assert_eq!(c["name"], cfg.vm_name.as_str());
        assert_eq!(c["resourceId"], cfg.vm_resource_id());
        assert_eq!(c["azEnvironment"], "AzurePublicCloud");
        assert_eq!(c["osProfile"]["computerName"], cfg.vm_name.as_str());
        assert_eq!(c["tags"], "env:test;team:arc");
        assert_eq!(c["zone"], "");
        fn all_strings(v: &Value) -> bool {
            match v {
                Value::String(_) => true,
                Value::Array(a) => a.iter().all(all_strings),
                Value::Object(m) => m.values().all(all_strings),
                _ => false,
            }
        }
        assert!(all_strings(&c));
        let all = get(&f, "/metadata/instance?api-version=2021-02-01").json();
        assert_eq!(all["compute"], c);
        assert!(all_strings(&all["network"]));
        let r = get(
            &f,
            "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
        );
        assert_eq!((r.status, r.body.as_str()), (200, cfg.vm_uuid.as_str()));
        assert_eq!(
            get(&f, "/metadata/instance/compute/nope?api-version=2021-02-01").status,
            404
        );
        assert_eq!(get(&f, "/metadata/instance/compute").status, 400);
        assert_eq!(get(&f, "/metadata/versions").status, 404);
        assert_eq!(get(&f, "/").status, 404);
        assert_eq!(get(&f, "/healthz").status, 200);

        let f2 = FakeImds::start(ImdsConfig {
            instance_metadata: false,
            ..Default::default()
        });
        assert_eq!(
            get(&f2, "/metadata/instance/compute?api-version=2021-02-01").status,
            404
        );
        assert_eq!(get(&f2, &tok("")).status, 200);
    }

    #[test]
    fn record_file_and_odd_input() {
        let dir = std::env::temp_dir().join(format!("fake-imds-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("rec.jsonl");
        let _ = std::fs::remove_file(&file);
        let f = FakeImds::start(ImdsConfig {
            record_file: Some(file.clone()),
            ..Default::default()
        });
        get(&f, &tok(""));
        // odd input must not kill the server
        for junk in [
            "GET /metadata/identity/oauth2/token?resource=%E9%&x=%é HTTP/1.1\r\nMetadata: true\r\n\r\n",
            "\r\n\r\n",
            "BREW\r\n\r\n",
            "GET\r\nno-colon-header\r\n\r\n",
        ] {
            let mut s = TcpStream::connect(f.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(junk.as_bytes()).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
        }
        assert_eq!(get(&f, &tok("")).status, 200);
        let lines: Vec<Value> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), f.requests().len());
        assert_eq!(lines[0]["path"], TOKEN_PATH);
        assert_eq!(lines[0]["status"], 200);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn issued_tokens_file_lists_every_minted_token() {
        let dir = std::env::temp_dir().join(format!("fake-imds-tokens-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("tokens");
        let _ = std::fs::remove_file(&file);
        let f = FakeImds::start(ImdsConfig {
            issued_tokens_file: Some(file.clone()),
            script: vec![Step::gone(), Step::Ok, Step::expired(60)],
            ..Default::default()
        });
        let mut issued = Vec::new();
        for _ in 0..4 {
            let r = get(&f, &tok(""));
            if r.status == 200 {
                issued.push(r.json()["access_token"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(
            issued.len(),
            3,
            "410 mints nothing; ok, expired and a default token do"
        );
        let listed: Vec<String> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(listed, issued);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn step_parse() {
        assert_eq!(
            Step::parse_list("410,410,429,200").unwrap(),
            vec![Step::gone(), Step::gone(), Step::throttled(), Step::Ok]
        );
        assert_eq!(
            Step::parse("429ra=2").unwrap(),
            Step::throttled_retry_after(2)
        );
        assert_eq!(
            Step::parse("hang=5").unwrap(),
            Step::Hang(Duration::from_secs(5))
        );
        assert_eq!(Step::parse("500").unwrap(), Step::server_error());
        assert_eq!(Step::parse("null").unwrap(), Step::NullToken);
        assert_eq!(Step::parse("close").unwrap(), Step::Close);
        assert_eq!(Step::parse("garbage").unwrap(), Step::Garbage);
        assert!(Step::parse("hang=-1").is_err());
        assert!(Step::parse("200ra=1").is_err());
        assert!(Step::parse("teapot").is_err());
        assert!(Step::parse("99").is_err());
    }

    #[test]
    fn fake_guids_are_stable_and_distinct() {
        assert_eq!(fake_guid("x"), fake_guid("x"));
        assert_ne!(fake_guid("vm-1"), fake_guid("vm-2"));
        assert!(is_guid(&fake_guid("vm-1")));
        assert_eq!(&fake_guid("vm-1")[14..15], "4");
        let u = UserIdentity::new("/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/my-id");
        assert_eq!(u.principal_name, "my-id");
        assert_ne!(u.client_id, u.object_id);
    }
}
