//! A fake Microsoft Entra token endpoint for workload identity federation (FACTS §11), over HTTPS
//! with a test CA: `POST /{tenant}/oauth2/v2.0/token`, form-encoded `client_credentials` with a
//! `jwt-bearer` client assertion, exchanged for an ARM access token of a user-assigned managed
//! identity when the assertion matches one of that identity's federated identity credentials.
//!
//! Checks, in the order a request meets them (the first failing one answers):
//! 1. path `/{tenant}/oauth2/v2.0/token`, POST; unknown tenant => 400 `invalid_request` AADSTS90002
//! 2. required parameters (`grant_type`, `client_id`, `scope`, the assertion) => 400 AADSTS900144;
//!    `grant_type` other than `client_credentials` => 400 `unsupported_grant_type` AADSTS70003;
//!    `client_assertion_type` other than jwt-bearer => 400 AADSTS700010 (UNCONFIRMED wording)
//! 3. unknown `client_id` in that tenant => 400 `unauthorized_client` AADSTS700016
//! 4. `scope` without `/.default`, or for a resource other than this cloud's ARM => AADSTS1002012 /
//!    AADSTS500011
//! 5. the scripted step for this request, if any (429 with `Retry-After`, 5xx, hang, close)
//! 6. the assertion: not a JWT => AADSTS50027; signature not its issuer's => AADSTS50013
//!    (UNCONFIRMED wording); expired or not yet valid (5 min skew) => 400 `invalid_client`
//!    AADSTS700024; lifetime (exp - nbf/iat) over 1 day 1 h => AADSTS70023
//! 7. a federated credential with issuer == `iss`, subject == `sub` (both case-sensitive) and
//!    audience == the token's only `aud` (a string or a one-element array); none =>
//!    [`NoMatch`] (default 400 `invalid_request` AADSTS70021 with the assertion's issuer, subject
//!    and audience in the description, as azure-workload-identity#616 quotes it)
//! 8. "credential propagating": the first `propagating_calls` requests that pass 1–7 also get the
//!    no-match answer (a new credential takes a while to reach every Entra front end)
//! 9. 200 `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":JWT}`
//!    (`expires_in` a number, unlike IMDS), the token with ARM's audience, tid, oid, appid,
//!    `idtyp` app, `xms_mirid` = the identity's resource id.

use crate::http::{Handler, Reply, Request};
use crate::https::{HttpsServer, TestCa};
use crate::imds::{fake_guid, UserIdentity};
use crate::jwt;
use crate::oidc::{self, IssuedLog};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The maximum assertion lifetime Entra accepts (FACTS §11: 1 day 1 hour).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 25 * 3600;
/// Clock skew Entra tolerates on nbf/exp (UNCONFIRMED; 5 minutes is the usual figure).
pub const CLOCK_SKEW_SECS: i64 = 300;

/// A cloud's values for the exchange (FACTS §11): the FIC audience external tokens carry, and the
/// ARM resources a `.default` scope may name (v1 tokens carry the resource as `aud`).
pub fn fic_audience(cloud: &str) -> &'static str {
    match cloud {
        "AzureUSGovernment" => "api://AzureADTokenExchangeUSGov",
        "AzureChinaCloud" => "api://AzureADTokenExchangeChina",
        _ => "api://AzureADTokenExchange",
    }
}

pub fn arm_resources(cloud: &str) -> &'static [&'static str] {
    match cloud {
        "AzureUSGovernment" => &[
            "https://management.usgovcloudapi.net",
            "https://management.core.usgovcloudapi.net",
        ],
        "AzureChinaCloud" => &[
            "https://management.chinacloudapi.cn",
            "https://management.core.chinacloudapi.cn",
        ],
        _ => &[
            "https://management.azure.com",
            "https://management.core.windows.net",
        ],
    }
}

/// A federated identity credential: all three must match the assertion exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fic {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
}

impl Fic {
    pub fn new(issuer: &str, subject: &str, audience: &str) -> Fic {
        Fic {
            name: format!("fic-{}", &fake_guid(&format!("{issuer}|{subject}"))[..8]),
            issuer: issuer.to_string(),
            subject: subject.to_string(),
            audience: audience.to_string(),
        }
    }
}

/// A user-assigned identity in a tenant, with its federated credentials.
#[derive(Clone, Debug)]
pub struct FederatedIdentity {
    pub identity: UserIdentity,
    pub tenant_id: String,
    pub fics: Vec<Fic>,
}

/// How "no matching federated credential" is answered (FACTS §11: the classic code and the newer
/// ones seen in the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoMatch {
    /// 400 `invalid_request` AADSTS70021 (azure-workload-identity#616).
    Classic,
    /// 400 `invalid_request` AADSTS700213 "... for presented assertion subject" (Azure/login#482).
    Subject,
    /// 401 `invalid_client` AADSTS7002137 (microsoft/Agents#202).
    Unauthorized,
}

/// A fault for one token request that passed checks 1–4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntraStep {
    Status { code: u16, retry_after: Option<u64> },
    Hang(Duration),
    Close,
}

impl EntraStep {
    pub fn throttled(retry_after: u64) -> EntraStep {
        EntraStep::Status {
            code: 429,
            retry_after: Some(retry_after),
        }
    }
    pub fn status(code: u16) -> EntraStep {
        EntraStep::Status {
            code,
            retry_after: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EntraConfig {
    pub listen: String,
    /// Where `ca.pem` goes when the fake makes its own CA.
    pub ca_dir: Option<PathBuf>,
    /// `AzureCloud`, `AzureUSGovernment`, `AzureChinaCloud`.
    pub cloud: String,
    /// Tenants that exist (every identity's tenant is added).
    pub tenants: Vec<String>,
    pub identities: Vec<FederatedIdentity>,
    /// The first N requests that match a credential are answered as if none matched.
    pub propagating_calls: u32,
    pub no_match: NoMatch,
    pub script: VecDeque<EntraStep>,
    /// `expires_in` of exchanged tokens (app-only tokens: 60–90 min; 3599 s here).
    pub token_lifetime: Duration,
    pub log_stderr: bool,
}

impl Default for EntraConfig {
    fn default() -> Self {
        EntraConfig {
            listen: "127.0.0.1:0".into(),
            ca_dir: None,
            cloud: "AzureCloud".into(),
            tenants: Vec::new(),
            identities: Vec::new(),
            propagating_calls: 0,
            no_match: NoMatch::Classic,
            script: VecDeque::new(),
            token_lifetime: Duration::from_secs(3599),
            log_stderr: false,
        }
    }
}

impl EntraConfig {
    /// One tenant with one identity trusting one credential.
    pub fn with_identity(identity: UserIdentity, tenant_id: &str, fics: Vec<Fic>) -> EntraConfig {
        EntraConfig {
            identities: vec![FederatedIdentity {
                identity,
                tenant_id: tenant_id.to_string(),
                fics,
            }],
            ..Default::default()
        }
    }
}

/// One token request as the fake saw it (no secret: the assertion's claims, not the assertion).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub tenant: String,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub grant_type: Option<String>,
    pub assertion_claims: Option<Value>,
    pub via_proxy: bool,
    pub status: u16,
    /// The AADSTS code of an error answer.
    pub error_code: Option<u32>,
    pub at: Duration,
}

struct State {
    cfg: EntraConfig,
    propagated: u32,
    minted: u64,
    requests: Vec<Recorded>,
}

pub struct FakeEntra {
    server: HttpsServer,
    ca: Arc<TestCa>,
    state: Arc<Mutex<State>>,
    issued: IssuedLog,
}

impl FakeEntra {
    pub fn start(cfg: EntraConfig) -> FakeEntra {
        FakeEntra::try_start(cfg, None).expect("start fake Entra")
    }

    /// Serve with `ca` (shared with other fakes) or a CA of its own.
    pub fn try_start(cfg: EntraConfig, ca: Option<Arc<TestCa>>) -> std::io::Result<FakeEntra> {
        let ca = match ca {
            Some(c) => c,
            None => TestCa::new(cfg.ca_dir.as_deref())?,
        };
        let listen = cfg.listen.clone();
        let state = Arc::new(Mutex::new(State {
            cfg,
            propagated: 0,
            minted: 0,
            requests: Vec::new(),
        }));
        let issued = IssuedLog::default();
        let started = Instant::now();
        let handler: Handler = {
            let state = state.clone();
            let issued = issued.clone();
            Arc::new(move |req: &Request| handle(&state, &issued, req, started))
        };
        let server = HttpsServer::start(&listen, ca.clone(), handler)?;
        Ok(FakeEntra {
            server,
            ca,
            state,
            issued,
        })
    }

    /// The authority host: `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.ca.ca_pem()
    }

    pub fn ca(&self) -> Arc<TestCa> {
        self.ca.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Exchanged access tokens handed out (kind, value).
    pub fn issued(&self) -> Vec<(String, String)> {
        self.issued.all()
    }

    pub fn update(&self, f: impl FnOnce(&mut EntraConfig)) {
        f(&mut self.state.lock().unwrap().cfg)
    }
}

/// Entra's error body: `error_description` starts with `AADSTS<code>: ` and ends with trace and
/// correlation ids and a timestamp, separated by `\r\n`.
pub fn entra_error(status: u16, error: &str, code: u32, message: &str) -> Reply {
    let now = entra_timestamp();
    let trace = fake_guid(&format!("trace:{code}:{message}:{}", jwt::now_unix()));
    let corr = fake_guid(&format!("corr:{code}:{}", jwt::now_unix()));
    Reply::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {now}"),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// `YYYY-MM-DD HH:MM:SSZ` (Entra's timestamp format).
fn entra_timestamp() -> String {
    let (y, m, d, hh, mm, ss) = oidc::civil(jwt::now_unix() as i64);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}Z")
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                crate::http::percent_decode(k),
                crate::http::percent_decode(v),
            )
        })
        .collect()
}

fn handle(state: &Mutex<State>, issued: &IssuedLog, req: &Request, started: Instant) -> Reply {
    let params = form(&req.body);
    let get = |k: &str| crate::http::param(&params, k).map(str::to_string);
    let assertion = get("client_assertion");
    let assertion_claims = assertion.as_deref().and_then(jwt::claims);
    let seg: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let tenant = seg.first().copied().unwrap_or("").to_string();
    let mut st = state.lock().unwrap();
    let reply = route(&mut st, issued, req, &seg, &params);
    let (status, error_code) = match &reply {
        Reply::Send { status, body, .. } => (
            *status,
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["error_codes"][0].as_u64())
                .map(|c| c as u32),
        ),
        _ => (0, None),
    };
    if st.cfg.log_stderr {
        eprintln!(
            "fake-entra: {} {} client_id={} -> {status}{}",
            req.method,
            req.path,
            get("client_id").unwrap_or_default(),
            error_code
                .map(|c| format!(" AADSTS{c}"))
                .unwrap_or_default()
        );
    }
    st.requests.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        tenant,
        client_id: get("client_id"),
        scope: get("scope"),
        grant_type: get("grant_type"),
        assertion_claims,
        via_proxy: req.header("x-forwarded-for").is_some() || !req.target.starts_with('/'),
        status,
        error_code,
        at: started.elapsed(),
    });
    reply
}

fn missing(param: &str) -> Reply {
    entra_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn route(
    st: &mut State,
    issued: &IssuedLog,
    req: &Request,
    seg: &[&str],
    params: &[(String, String)],
) -> Reply {
    let get = |k: &str| crate::http::param(params, k);
    if seg.len() != 4 || seg[1] != "oauth2" || seg[2] != "v2.0" || seg[3] != "token" {
        return Reply::Send {
            status: 404,
            headers: vec![],
            body: vec![],
        };
    }
    let tenant = seg[0];
    if req.method != "POST" {
        return entra_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests. Received a GET request.",
        );
    }
    let known_tenant = st
        .cfg
        .tenants
        .iter()
        .chain(st.cfg.identities.iter().map(|i| &i.tenant_id))
        .any(|t| t.eq_ignore_ascii_case(tenant));
    if !known_tenant {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
        );
    }
    let Some(grant_type) = get("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = get("client_id") else {
        return missing("client_id");
    };
    let Some(scope) = get("scope") else {
        return missing("scope");
    };
    let (Some(assertion), Some(assertion_type)) =
        (get("client_assertion"), get("client_assertion_type"))
    else {
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    if assertion_type != JWT_BEARER {
        return entra_error(
            400,
            "invalid_request",
            700010,
            &format!("Invalid client assertion type '{assertion_type}'."),
        );
    }
    let Some(ident) = st
        .cfg
        .identities
        .iter()
        .find(|i| {
            i.identity.client_id.eq_ignore_ascii_case(client_id)
                && i.tenant_id.eq_ignore_ascii_case(tenant)
        })
        .cloned()
    else {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
        );
    };
    let Some(resource) = scope.strip_suffix("/.default") else {
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    };
    let resources = arm_resources(&st.cfg.cloud);
    if !resources
        .iter()
        .any(|r| r.trim_end_matches('/') == resource.trim_end_matches('/'))
    {
        return entra_error(
            400,
            "invalid_resource",
            500011,
            &format!("The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
        );
    }
    if let Some(step) = st.cfg.script.pop_front() {
        return match step {
            EntraStep::Status { code, retry_after } => {
                let r = if code == 429 {
                    entra_error(
                        429,
                        "temporarily_unavailable",
                        50196,
                        "The server temporarily throttled the request.",
                    )
                } else {
                    entra_error(
                        code,
                        "server_error",
                        90033,
                        "A transient error has occurred. Please try again.",
                    )
                };
                match retry_after {
                    Some(s) => r.with_header("Retry-After", &s.to_string()),
                    None => r,
                }
            }
            EntraStep::Hang(d) => Reply::Hang(d),
            EntraStep::Close => Reply::Close,
        };
    }
    // The assertion itself.
    let claims = match oidc::verify(assertion) {
        Ok(c) => c,
        Err(oidc::Malformed::NotAJwt) => {
            return entra_error(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed.",
            )
        }
        Err(oidc::Malformed::BadSignature) => {
            return entra_error(
                400,
                "invalid_client",
                50013,
                "Assertion failed signature validation. [Reason - The key was not found.]",
            )
        }
    };
    let now = jwt::now_unix() as i64;
    let num = |k: &str| claims.get(k).and_then(|v| v.as_i64());
    let exp = num("exp").unwrap_or(0);
    let start = num("nbf").or(num("iat")).unwrap_or(exp);
    if exp + CLOCK_SKEW_SECS < now || start - CLOCK_SKEW_SECS > now {
        return entra_error(
            400,
            "invalid_client",
            700024,
            &format!("Client assertion is not within its valid time range. Current time: {now}, assertion valid from {start}, expiry time of assertion {exp}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."),
        );
    }
    if exp - start > MAX_ASSERTION_LIFETIME_SECS {
        return entra_error(
            400,
            "invalid_client",
            70023,
            &format!("The client assertion's lifetime ({} s) exceeds the maximum allowed (1 day 1 hour).", exp - start),
        );
    }
    let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
    let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    let aud_text = auds.join(",");
    let matched = auds.len() == 1
        && ident
            .fics
            .iter()
            .any(|f| f.issuer == iss && f.subject == sub && f.audience == auds[0]);
    let propagating = matched && st.propagated < st.cfg.propagating_calls;
    if !matched || propagating {
        if propagating {
            st.propagated += 1;
        }
        return match st.cfg.no_match {
            NoMatch::Classic => entra_error(
                400,
                "invalid_request",
                70021,
                &format!("No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud_text}'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"),
            ),
            NoMatch::Subject => entra_error(
                400,
                "invalid_request",
                700213,
                &format!("No matching federated identity record found for presented assertion subject '{sub}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
            ),
            NoMatch::Unauthorized => entra_error(
                401,
                "invalid_client",
                7002137,
                &format!("No matching federated identity record found for presented assertion subject '{sub}'. Please make sure the federated identity credential Subject is correct."),
            ),
        };
    }
    let token = mint(st, &ident, resource);
    issued.record(oidc::EXCHANGED_TOKEN, &token.0);
    Reply::json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": token.1,
            "ext_expires_in": token.1,
            "access_token": token.0,
        }),
    )
}

/// (access token, expires_in) for the identity, a v1 app-only token for `resource`.
fn mint(st: &mut State, ident: &FederatedIdentity, resource: &str) -> (String, u64) {
    st.minted += 1;
    let n = st.minted;
    let now = jwt::now_unix() as i64;
    let lifetime = st.cfg.token_lifetime.as_secs() as i64;
    let tid = &ident.tenant_id;
    let id = &ident.identity;
    // Entra back-dates iat/nbf by 5 minutes.
    let iat = now - 300;
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": iat,
        "nbf": iat,
        "exp": now + lifetime,
        "aio": fake_guid(&format!("aio:{n}:{now}")),
        "appid": id.client_id,
        "appidacr": "2",
        "idp": format!("https://sts.windows.net/{tid}/"),
        "idtyp": "app",
        "oid": id.object_id,
        "rh": format!("0.{}.", fake_guid(&format!("rh:{tid}"))),
        "sub": id.object_id,
        "tid": tid,
        "uti": fake_guid(&format!("uti:{n}:{now}:{}", id.object_id)),
        "ver": "1.0",
        "xms_mirid": id.resource_id,
        "xms_tcdt": 1_289_241_547,
    });
    // Signed like the fake issuers' tokens, so each has its own signature (the scanner's secret).
    (oidc::mint(&claims, "entra-fake-key"), lifetime as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::https::test_agent;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const GCP_ISS: &str = "https://accounts.google.com";

    fn uami() -> UserIdentity {
        UserIdentity::named(
            "11111111-2222-3333-4444-555555555555",
            "arc-rg",
            "arc-enroller",
        )
    }

    fn assertion(iss: &str, sub: &str, aud: Value, exp_in: i64, lifetime: i64) -> String {
        let now = jwt::now_unix() as i64;
        oidc::mint(
            &json!({"iss": iss, "sub": sub, "aud": aud, "exp": now + exp_in, "iat": now + exp_in - lifetime}),
            "k",
        )
    }

    fn fake(cfg_tweak: impl FnOnce(&mut EntraConfig)) -> FakeEntra {
        let mut cfg = EntraConfig::with_identity(
            uami(),
            TENANT,
            vec![Fic::new(
                GCP_ISS,
                "112233445566778899000",
                "api://AzureADTokenExchange",
            )],
        );
        cfg_tweak(&mut cfg);
        FakeEntra::start(cfg)
    }

    fn exchange(f: &FakeEntra, tenant: &str, form_body: &str) -> (u16, Value) {
        let agent = test_agent(&f.ca());
        let mut r = agent
            .post(&format!("{}/{tenant}/oauth2/v2.0/token", f.url()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(form_body)
            .expect("answer");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn body(client_id: &str, assertion: &str) -> String {
        format!(
            "client_id={client_id}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default&client_assertion_type={}&client_assertion={assertion}&grant_type=client_credentials",
            JWT_BEARER.replace(':', "%3A")
        )
    }

    fn good() -> String {
        assertion(
            GCP_ISS,
            "112233445566778899000",
            json!("api://AzureADTokenExchange"),
            3600,
            3600,
        )
    }

    #[test]
    fn matching_assertion_gets_an_arm_token_of_the_identity() {
        let f = fake(|_| {});
        let (status, v) = exchange(&f, TENANT, &body(&uami().client_id, &good()));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["token_type"], "Bearer");
        assert!(v["expires_in"].is_u64(), "expires_in is a number: {v}");
        let c = jwt::claims(v["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(c["aud"], "https://management.azure.com");
        assert_eq!(c["tid"], TENANT);
        assert_eq!(c["oid"], uami().object_id.as_str());
        assert_eq!(c["appid"], uami().client_id.as_str());
        assert_eq!(c["idtyp"], "app");
        assert_eq!(c["xms_mirid"], uami().resource_id.as_str());
        assert_eq!(f.issued().len(), 1);
        assert_eq!(f.issued()[0].1, v["access_token"].as_str().unwrap());
        let rec = &f.requests()[0];
        assert_eq!(rec.assertion_claims.as_ref().unwrap()["iss"], GCP_ISS);
        assert_eq!(rec.status, 200);
    }

    #[test]
    fn each_documented_error() {
        let f = fake(|_| {});
        let cid = uami().client_id;
        let code = |t: &str, b: &str| {
            let (s, v) = exchange(&f, t, b);
            (
                s,
                v["error"].as_str().unwrap_or("").to_string(),
                v["error_codes"][0].as_u64().unwrap_or(0),
            )
        };
        assert_eq!(
            code("00000000-0000-0000-0000-000000000000", &body(&cid, &good())),
            (400, "invalid_request".into(), 90002)
        );
        assert_eq!(
            code(
                TENANT,
                &body("99999999-9999-4999-8999-999999999999", &good())
            ),
            (400, "unauthorized_client".into(), 700016)
        );
        // No matching credential: wrong subject, wrong issuer, wrong audience, two audiences.
        for a in [
            assertion(
                GCP_ISS,
                "1",
                json!("api://AzureADTokenExchange"),
                3600,
                3600,
            ),
            assertion(
                "https://accounts.google.com/",
                "112233445566778899000",
                json!("api://AzureADTokenExchange"),
                3600,
                3600,
            ),
            assertion(
                GCP_ISS,
                "112233445566778899000",
                json!("api://AzureADTokenExchangeUSGov"),
                3600,
                3600,
            ),
            assertion(
                GCP_ISS,
                "112233445566778899000",
                json!(["api://AzureADTokenExchange", "x"]),
                3600,
                3600,
            ),
        ] {
            assert_eq!(
                code(TENANT, &body(&cid, &a)),
                (400, "invalid_request".into(), 70021)
            );
        }
        // A one-element array audience (Kubernetes tokens) matches.
        let arr = assertion(
            GCP_ISS,
            "112233445566778899000",
            json!(["api://AzureADTokenExchange"]),
            3600,
            3600,
        );
        assert_eq!(code(TENANT, &body(&cid, &arr)).0, 200);
        // Expired (beyond the skew), lifetime too long, not a JWT, edited after signing.
        let expired = assertion(
            GCP_ISS,
            "112233445566778899000",
            json!("api://AzureADTokenExchange"),
            -600,
            3600,
        );
        assert_eq!(
            code(TENANT, &body(&cid, &expired)),
            (400, "invalid_client".into(), 700024)
        );
        let long = assertion(
            GCP_ISS,
            "112233445566778899000",
            json!("api://AzureADTokenExchange"),
            3600,
            25 * 3600 + 1,
        );
        assert_eq!(
            code(TENANT, &body(&cid, &long)),
            (400, "invalid_client".into(), 70023)
        );
        let ok_long = assertion(
            GCP_ISS,
            "112233445566778899000",
            json!("api://AzureADTokenExchange"),
            3600,
            25 * 3600,
        );
        assert_eq!(code(TENANT, &body(&cid, &ok_long)).0, 200);
        assert_eq!(code(TENANT, &body(&cid, "not-a-jwt")).2, 50027);
        let g = good();
        assert_eq!(code(TENANT, &body(&cid, &g[..g.len() - 3])).2, 50013);
        // Missing pieces.
        assert_eq!(code(TENANT, "grant_type=client_credentials").2, 900144);
        assert_eq!(
            code(
                TENANT,
                &body(&cid, &good()).replace("client_credentials", "password")
            )
            .2,
            70003
        );
        assert_eq!(
            code(
                TENANT,
                &body(&cid, &good()).replace("%2F.default", "%2Fuser_impersonation")
            )
            .2,
            1002012
        );
        assert_eq!(
            code(
                TENANT,
                &body(&cid, &good()).replace("management.azure.com", "vault.azure.net")
            )
            .2,
            500011
        );
    }

    #[test]
    fn the_description_names_issuer_subject_and_audience() {
        let f = fake(|_| {});
        let a = assertion(
            "https://issuer.example",
            "system:serviceaccount:arc:x",
            json!("api://AzureADTokenExchange"),
            3600,
            3600,
        );
        let (_, v) = exchange(&f, TENANT, &body(&uami().client_id, &a));
        let d = v["error_description"].as_str().unwrap();
        assert!(d.starts_with("AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: 'https://issuer.example'. Assertion Subject: 'system:serviceaccount:arc:x'. Assertion Audience: 'api://AzureADTokenExchange'."), "{d}");
        assert!(
            d.contains("\r\nTrace ID: ") && d.contains("\r\nCorrelation ID: "),
            "{d}"
        );
    }

    #[test]
    fn propagating_credential_answers_70021_n_times_then_succeeds() {
        let f = fake(|c| c.propagating_calls = 2);
        let b = body(&uami().client_id, &good());
        let codes: Vec<u16> = (0..4).map(|_| exchange(&f, TENANT, &b).0).collect();
        assert_eq!(codes, vec![400, 400, 200, 200]);
        // A non-matching assertion does not use up the propagation count.
        let f = fake(|c| c.propagating_calls = 1);
        let bad = body(
            &uami().client_id,
            &assertion(
                GCP_ISS,
                "other",
                json!("api://AzureADTokenExchange"),
                3600,
                3600,
            ),
        );
        assert_eq!(exchange(&f, TENANT, &bad).0, 400);
        assert_eq!(exchange(&f, TENANT, &b).0, 400);
        assert_eq!(exchange(&f, TENANT, &b).0, 200);
    }

    #[test]
    fn scripted_throttling_and_server_errors_and_newer_codes() {
        let f = fake(|c| {
            c.script = [EntraStep::throttled(3), EntraStep::status(503)]
                .into_iter()
                .collect();
            c.no_match = NoMatch::Unauthorized;
        });
        let b = body(&uami().client_id, &good());
        let agent = test_agent(&f.ca());
        let r = agent
            .post(&format!("{}/{TENANT}/oauth2/v2.0/token", f.url()))
            .send(b.as_str())
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers().get("retry-after").unwrap(), "3");
        assert_eq!(exchange(&f, TENANT, &b).0, 503);
        assert_eq!(exchange(&f, TENANT, &b).0, 200);
        let bad = body(
            &uami().client_id,
            &assertion(
                GCP_ISS,
                "other",
                json!("api://AzureADTokenExchange"),
                3600,
                3600,
            ),
        );
        let (s, v) = exchange(&f, TENANT, &bad);
        assert_eq!(
            (
                s,
                v["error"].as_str().unwrap(),
                v["error_codes"][0].as_u64().unwrap()
            ),
            (401, "invalid_client", 7002137)
        );
    }

    #[test]
    fn timestamp_format() {
        let t = entra_timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b' ', "{t}");
    }
}
