//! A fake Azure Resource Manager over HTTPS (FACTS §7, §8): resource-provider registration, the
//! caller's permissions on a resource group, and `Microsoft.HybridCompute/machines` resources kept
//! in the shared fake-Azure directory (`machines/<sub>/<rg>/<name>.json`, lower case, as the fake
//! agent writes them; see `store`). A test CA is generated at start; its certificate is written
//! to `ca.pem` for the client's `SSL_CERT_FILE`. Programmable faults: providers not registered,
//! permissions missing (for N polls, or for good), permissions unreadable (403), throttling (429
//! with `Retry-After`), and an untrusted certificate (as a TLS-inspecting proxy whose CA the
//! machine does not trust). `/installer.sh` serves a test installer script. Every request is
//! recorded (the bearer token replaced by its claims' `oid`). With `rate_limits` set, ARM's token
//! buckets (`ratelimit`, FACTS §12) meter every request at entry: 429 `Retry-After` when empty,
//! `x-ms-ratelimit-remaining-subscription-*` headers on every answer.

use crate::arm_hybrid::{self, Assignment, Caller, HybridState, RelayConfig};
use crate::http::{Handler, Reply, Request};
use crate::https::TlsServer;
use crate::jwt;
use crate::ratelimit::{self, Limits, RateLimiter};
use crate::store::Store;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PERMISSIONS_PATH_SUFFIX: &str = "/providers/Microsoft.Authorization/permissions";
/// The subject of the CA `check` tests expect in a TLS failure from an untrusted certificate.
pub const UNTRUSTED_CA_NAME: &str = "Contoso TLS Inspection CA (untrusted)";
pub const TEST_CA_NAME: &str = "arc-enroll fake ARM test CA";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What the identity is granted: Azure Connected Machine Resource Manager (FACTS §8, abridged)
/// plus the ListAccessDetails action role.
pub fn granted_permissions() -> Value {
    json!([
        {
            "actions": [
                "Microsoft.HybridCompute/machines/read",
                "Microsoft.HybridCompute/machines/write",
                "Microsoft.HybridCompute/machines/delete",
                "Microsoft.HybridCompute/machines/extensions/*",
                "Microsoft.HybridCompute/*/read",
                "Microsoft.HybridConnectivity/endpoints/*",
                "Microsoft.GuestConfiguration/guestConfigurationAssignments/*",
                "Microsoft.Resources/subscriptions/resourceGroups/read"
            ],
            "notActions": [],
            "dataActions": [],
            "notDataActions": []
        },
        {
            "actions": ["Microsoft.HybridCompute/machines/listAccessDetails/action"],
            "notActions": [],
            "dataActions": [],
            "notDataActions": []
        }
    ])
}

/// Before the roles arrive: what a VM's identity typically has (nothing on the group).
pub fn no_permissions() -> Value {
    json!([])
}

#[derive(Clone, Debug)]
pub struct ArmConfig {
    pub listen: String,
    /// Where `ca.pem` is written; a temp dir when None.
    pub ca_dir: Option<PathBuf>,
    /// The shared fake-Azure directory (`FAKE_AZURE_DIR`); machines live there. Its `authz.json`
    /// `unregistered_providers` is honoured too.
    pub azure_dir: Option<PathBuf>,
    pub unregistered: Vec<String>,
    /// The first N permission reads return no HybridCompute permissions (roles propagating).
    pub permissions_missing_polls: u32,
    /// Permissions are never granted.
    pub permissions_never: bool,
    /// The permissions API answers 403 (the token cannot read its own permissions).
    pub permissions_forbidden: bool,
    /// The first N `/subscriptions/...` requests get 429 with `Retry-After: retry_after_secs`.
    pub throttle_first: u32,
    pub retry_after_secs: u64,
    /// Serve a certificate from a CA that is not in `ca.pem`.
    pub untrusted: bool,
    /// Body of `/installer.sh`.
    pub installer: Option<String>,
    /// `(path, location)`: a GET of `path` answers `302 Found` with `Location: location`, as
    /// aka.ms does for the installer (any path, before every other route).
    pub redirects: Vec<(String, String)>,
    pub log_stderr: bool,
    /// ARM's token buckets (`ratelimit`, FACTS §12): None (default) = no limits.
    pub rate_limits: Option<Limits>,
    /// Nexus Private Relay behaviour (`arm_hybrid`).
    pub relay: RelayConfig,
    /// `(oid, n)`: right before the first request of principal `oid`, `n` reads by `n` other
    /// principals are charged to the buckets (the rest of a fleet reading at that moment), so a
    /// test's budget does not depend on how long the binary took to reach its first request.
    pub others_read_before_first_of: Option<(String, u32)>,
}

impl Default for ArmConfig {
    fn default() -> Self {
        ArmConfig {
            listen: "127.0.0.1:0".into(),
            ca_dir: None,
            azure_dir: None,
            unregistered: Vec::new(),
            permissions_missing_polls: 0,
            permissions_never: false,
            permissions_forbidden: false,
            throttle_first: 0,
            retry_after_secs: 1,
            untrusted: false,
            installer: None,
            redirects: Vec::new(),
            log_stderr: false,
            rate_limits: None,
            relay: RelayConfig::default(),
            others_read_before_first_of: None,
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Whether an `Authorization: Bearer` header came, and its token's `oid`.
    pub bearer_oid: Option<String>,
    pub status: u16,
    pub at: Duration,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        crate::http::param(&self.query, name)
    }
}

struct State {
    cfg: ArmConfig,
    permission_reads: u32,
    throttled: u32,
    requests: Vec<Recorded>,
    limiter: Option<RateLimiter>,
    hybrid: HybridState,
}

pub struct FakeArm {
    server: TlsServer,
    ca_pem: PathBuf,
    state: Arc<Mutex<State>>,
    _tmp: Option<PathBuf>,
}

fn tls_material(untrusted: bool) -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = p.self_signed(&key).expect("ca cert");
        (cert, key)
    };
    let (trusted_ca, trusted_key) = ca(TEST_CA_NAME);
    let other = untrusted.then(|| ca(UNTRUSTED_CA_NAME));
    let (signer, signer_key) = match &other {
        Some((c, k)) => (c, k),
        None => (&trusted_ca, &trusted_key),
    };
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf
        .signed_by(&leaf_key, signer, signer_key)
        .expect("leaf cert");
    let chain = vec![leaf_cert.der().clone(), signer.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (trusted_ca.pem(), chain, key)
}

impl FakeArm {
    pub fn start(cfg: ArmConfig) -> FakeArm {
        FakeArm::try_start(cfg).expect("start fake ARM")
    }

    pub fn try_start(cfg: ArmConfig) -> std::io::Result<FakeArm> {
        let (tmp, ca_dir) = match &cfg.ca_dir {
            Some(d) => (None, d.clone()),
            None => {
                let d = std::env::temp_dir().join(format!(
                    "fake-arm-{}-{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                ));
                (Some(d.clone()), d)
            }
        };
        std::fs::create_dir_all(&ca_dir)?;
        let (ca_pem_text, chain, key) = tls_material(cfg.untrusted);
        let ca_pem = ca_dir.join("ca.pem");
        std::fs::write(&ca_pem, ca_pem_text)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        let server_cfg = Arc::new(server_cfg);
        let listener = TcpListener::bind(&cfg.listen)?;
        let state = Arc::new(Mutex::new(State {
            cfg,
            permission_reads: 0,
            throttled: 0,
            requests: Vec::new(),
            limiter: None,
            hybrid: HybridState::default(),
        }));
        let started = Instant::now();
        let handler: Handler = {
            let state = state.clone();
            Arc::new(move |req: &Request| handle(&state, req, started))
        };
        let server = TlsServer::start(listener, server_cfg, handler)?;
        Ok(FakeArm {
            server,
            ca_pem,
            state,
            _tmp: tmp,
        })
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The test CA's certificate (PEM), for `SSL_CERT_FILE`.
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Recorded requests whose path ends with `suffix`.
    pub fn requests_to(&self, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// Every assignRelay the fake accepted, with its operation's state.
    pub fn relay_assignments(&self) -> Vec<Assignment> {
        self.state.lock().unwrap().hybrid.assignments.clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut ArmConfig)) {
        f(&mut self.state.lock().unwrap().cfg)
    }
}

impl Drop for FakeArm {
    fn drop(&mut self) {
        if let Some(t) = &self._tmp {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

fn arm_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn handle(state: &Mutex<State>, req: &Request, started: Instant) -> Reply {
    let bearer = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_string);
    let claims = bearer.as_deref().and_then(jwt::claims);
    let oid = claims
        .as_ref()
        .and_then(|c| c.get("oid").and_then(|v| v.as_str()).map(String::from));
    let mut st = state.lock().unwrap();
    let now = started.elapsed().as_secs_f64();
    let st = &mut *st;
    if let Some((who, n)) = st.cfg.others_read_before_first_of.clone() {
        if oid.as_deref() == Some(who.as_str()) {
            st.cfg.others_read_before_first_of = None;
            for i in 0..n {
                let other = format!("other-vm-{i}");
                let _ = ratelimit::admit(
                    &mut st.limiter,
                    st.cfg.rate_limits.as_ref(),
                    "GET",
                    &req.path,
                    Some(&other),
                    now,
                );
            }
        }
    }
    let reply = match ratelimit::admit(
        &mut st.limiter,
        st.cfg.rate_limits.as_ref(),
        &req.method,
        &req.path,
        oid.as_deref(),
        now,
    ) {
        Ok(headers) => headers.iter().fold(
            route(st, req, bearer.is_some(), claims.as_ref()),
            |r, (k, v)| r.with_header(k, v),
        ),
        Err(v) => throttled(&v, req, oid.as_deref()),
    };
    let status = match &reply {
        Reply::Send { status, .. } => *status,
        _ => 0,
    };
    if st.cfg.log_stderr {
        eprintln!("fake-arm: {} {} -> {status}", req.method, req.path);
    }
    st.requests.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        bearer_oid: oid,
        status,
        at: started.elapsed(),
    });
    reply
}

/// 429 from the token buckets, with `Retry-After` and the remaining-budget headers.
fn throttled(v: &ratelimit::Verdict, req: &Request, oid: Option<&str>) -> Reply {
    let sub = req.path.trim_matches('/').split('/').nth(1).unwrap_or("");
    let body = ratelimit::throttled_body(v, sub, oid.unwrap_or(""));
    v.headers().iter().fold(
        Reply::json(429, &body).with_header("Retry-After", &v.retry_after.unwrap_or(1).to_string()),
        |r, (k, val)| r.with_header(k, val),
    )
}

fn route(st: &mut State, req: &Request, has_bearer: bool, claims: Option<&Value>) -> Reply {
    if let Some((_, to)) = st.cfg.redirects.iter().find(|(p, _)| *p == req.path) {
        return Reply::Send {
            status: 302,
            headers: vec![("Location".into(), to.clone())],
            body: Vec::new(),
        };
    }
    if req.path == "/installer.sh" {
        return match &st.cfg.installer {
            Some(body) => Reply::Send {
                status: 200,
                headers: vec![("Content-Type".into(), "text/x-shellscript".into())],
                body: body.clone().into_bytes(),
            },
            None => arm_error(404, "NotFound", "no installer configured"),
        };
    }
    let seg: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if !seg[0].eq_ignore_ascii_case("subscriptions") || seg.len() < 2 {
        // ARM's answer to GET / and other non-resource paths.
        return arm_error(
            404,
            "InvalidResourceType",
            "The resource type could not be found in the namespace.",
        );
    }
    if st.throttled < st.cfg.throttle_first {
        st.throttled += 1;
        return arm_error(
            429,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type - Read_ObservationWindow_00:05:00.",
        )
        .with_header("Retry-After", &st.cfg.retry_after_secs.to_string());
    }
    if !has_bearer {
        return arm_error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
    }
    let Some(claims) = claims else {
        return arm_error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    };
    if req.param("api-version").is_none() {
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }
    let sub = seg[1];
    let oid = claims.get("oid").and_then(|v| v.as_str()).unwrap_or("");
    let appid = claims.get("appid").and_then(|v| v.as_str()).unwrap_or(oid);
    let tenant = claims.get("tid").and_then(|v| v.as_str()).unwrap_or("");
    let caller = Caller { appid, oid, tenant };
    let store = st.cfg.azure_dir.clone().map(Store::new);
    let forbidden = |action: &str, scope: &str| {
        arm_error(
            403,
            "AuthorizationFailed",
            &format!(
                "The client '{appid}' with object id '{oid}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        )
    };
    // /subscriptions/{sub}/providers/{ns}
    if seg.len() == 4 && seg[2].eq_ignore_ascii_case("providers") && req.method == "GET" {
        let ns = seg[3];
        let unregistered = st
            .cfg
            .unregistered
            .iter()
            .chain(authz_unregistered(&st.cfg).iter())
            .any(|u| u.eq_ignore_ascii_case(ns));
        return Reply::json(
            200,
            &json!({
                "id": format!("/subscriptions/{sub}/providers/{ns}"),
                "namespace": ns,
                "registrationState": if unregistered { "NotRegistered" } else { "Registered" },
                "registrationPolicy": "RegistrationRequired",
                "resourceTypes": [],
            }),
        );
    }
    if seg.len() >= 4 && seg[2].eq_ignore_ascii_case("resourceGroups") {
        let rg = seg[3];
        let scope = format!("/subscriptions/{sub}/resourceGroups/{rg}");
        let rest: Vec<&str> = seg[4..].to_vec();
        // .../providers/Microsoft.Authorization/permissions
        if rest.len() == 3
            && rest[1].eq_ignore_ascii_case("Microsoft.Authorization")
            && rest[2].eq_ignore_ascii_case("permissions")
        {
            if st.cfg.permissions_forbidden {
                return forbidden("Microsoft.Authorization/permissions/read", &scope);
            }
            st.permission_reads += 1;
            let granted =
                !st.cfg.permissions_never && st.permission_reads > st.cfg.permissions_missing_polls;
            let mut value = if granted {
                granted_permissions()
            } else {
                no_permissions()
            };
            if let (true, Some(list), Some(extra)) = (
                granted,
                value.as_array_mut(),
                arm_hybrid::extra_permission(&st.cfg.relay),
            ) {
                list.push(extra);
            }
            return Reply::json(200, &json!({ "value": value }));
        }
        // .../providers/Microsoft.HybridCompute/machines/{name}
        if rest.len() == 4
            && rest[1].eq_ignore_ascii_case("Microsoft.HybridCompute")
            && rest[2].eq_ignore_ascii_case("machines")
        {
            let name = rest[3];
            let granted = !st.cfg.permissions_never
                && !st.cfg.permissions_forbidden
                && st.permission_reads > st.cfg.permissions_missing_polls;
            if !granted && st.cfg.permissions_never {
                let action = match req.method.as_str() {
                    "GET" => "Microsoft.HybridCompute/machines/read",
                    "DELETE" => "Microsoft.HybridCompute/machines/delete",
                    _ => "Microsoft.HybridCompute/machines/write",
                };
                return forbidden(
                    action,
                    &format!("{scope}/providers/Microsoft.HybridCompute/machines/{name}"),
                );
            }
            let _ = name;
        }
    }
    if let Some(reply) = arm_hybrid::route(
        &mut st.hybrid,
        &st.cfg.relay,
        store.as_ref(),
        req,
        &seg,
        &caller,
    ) {
        return reply;
    }
    arm_error(
        404,
        "InvalidResourceType",
        "The resource type could not be found in the namespace.",
    )
}

fn authz_unregistered(cfg: &ArmConfig) -> Vec<String> {
    let Some(dir) = &cfg.azure_dir else {
        return Vec::new();
    };
    std::fs::read_to_string(dir.join("authz.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| {
            v.get("unregistered_providers").and_then(|l| {
                l.as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Path of a machine in the shared fake-Azure directory (the `store` layout).
pub fn machine_path(azure_dir: &Path, sub: &str, rg: &str, name: &str) -> PathBuf {
    azure_dir
        .join("machines")
        .join(sub.to_lowercase())
        .join(rg.to_lowercase())
        .join(format!("{}.json", name.to_lowercase()))
}

/// Write a machine resource into the shared directory, as another machine's agent would have.
pub fn put_machine(azure_dir: &Path, sub: &str, rg: &str, name: &str, vm_uuid: &str) {
    let path = machine_path(azure_dir, sub, rg, name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let body = machine_json(sub, rg, name, "eastus", vm_uuid);
    std::fs::write(path, body.to_string()).unwrap();
}

fn machine_json(sub: &str, rg: &str, name: &str, location: &str, vm_uuid: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}"),
        "name": name,
        "type": "Microsoft.HybridCompute/machines",
        "location": location,
        "tags": {},
        "properties": {
            "vmUuid": vm_uuid.to_lowercase(),
            "status": "Connected",
            "provisioningState": "Succeeded",
            "osType": "linux",
            "agentVersion": "1.61.03319.2737",
        },
    })
}
