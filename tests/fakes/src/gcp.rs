//! A fake GCP metadata server (FACTS §11; GCP "Verifying the identity of instances", "About VM
//! metadata"): plain HTTP like the real `metadata.google.internal` / 169.254.169.254.
//!
//! - every `/computeMetadata/v1/...` request needs `Metadata-Flavor: Google`, else 403 with the
//!   real server's HTML page ("Missing Metadata-Flavor:Google header."); a request carrying
//!   `X-Forwarded-For` (it came through a proxy) is refused with 403 too
//! - `.../instance/service-accounts/default/identity?audience=A[&format=full]` => the raw JWT
//!   (`Content-Type: application/text`): iss `https://accounts.google.com`, sub/azp = the service
//!   account's numeric unique id, aud = A, exp = iat + 1 h; `format=full` adds
//!   `google.compute_engine` (instance id/name, project, zone) and email; no `audience` => 400
//! - `.../instance/id`, `.../instance/name`, `.../instance/zone`, `.../project/project-id`,
//!   `.../project/numeric-project-id` => text
//! - answers carry `Metadata-Flavor: Google` and `Server: Metadata Server for VM`
//! - programmable faults for identity requests (503, hang, close) as [`GcpStep`]s

use crate::http::{Handler, Reply, Request, Server};
use crate::jwt;
use crate::oidc::{self, IssuedLog};
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
pub const ISSUER: &str = "https://accounts.google.com";
/// GCP identity tokens live one hour.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcpStep {
    Status(u16),
    Hang(Duration),
    Close,
}

#[derive(Clone, Debug)]
pub struct GcpConfig {
    pub listen: String,
    /// The service account's unique id (21 digits): the token's `sub`.
    pub service_account_id: String,
    pub service_account_email: String,
    pub instance_id: String,
    pub instance_name: String,
    pub project_id: String,
    pub project_number: String,
    pub zone: String,
    /// No service account attached: identity requests get 404.
    pub no_service_account: bool,
    pub script: VecDeque<GcpStep>,
}

impl Default for GcpConfig {
    fn default() -> Self {
        GcpConfig {
            listen: "127.0.0.1:0".into(),
            service_account_id: "112233445566778899000".into(),
            service_account_email: "arc-enroll@arc-project.iam.gserviceaccount.com".into(),
            instance_id: "4518375846354817126".into(),
            instance_name: "gce-arc-1".into(),
            project_id: "arc-project".into(),
            project_number: "731045391234".into(),
            zone: "us-central1-a".into(),
            no_service_account: false,
            script: VecDeque::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub flavor: Option<String>,
    pub via_proxy: bool,
    pub status: u16,
}

struct State {
    cfg: GcpConfig,
    requests: Vec<Recorded>,
}

pub struct FakeGcpMetadata {
    server: Server,
    state: Arc<Mutex<State>>,
    issued: IssuedLog,
}

impl FakeGcpMetadata {
    pub fn start(cfg: GcpConfig) -> FakeGcpMetadata {
        let listen = cfg.listen.clone();
        let state = Arc::new(Mutex::new(State {
            cfg,
            requests: Vec::new(),
        }));
        let issued = IssuedLog::default();
        let handler: Handler = {
            let state = state.clone();
            let issued = issued.clone();
            Arc::new(move |req: &Request| {
                let mut st = state.lock().unwrap();
                let reply = route(&mut st, &issued, req);
                let status = match &reply {
                    Reply::Send { status, .. } => *status,
                    _ => 0,
                };
                st.requests.push(Recorded {
                    path: req.path.clone(),
                    query: req.query.clone(),
                    flavor: req.header("metadata-flavor").map(str::to_string),
                    via_proxy: via_proxy(req),
                    status,
                });
                reply
            })
        };
        FakeGcpMetadata {
            server: Server::start(&listen, handler).expect("start fake GCP metadata"),
            state,
            issued,
        }
    }

    /// `http://127.0.0.1:PORT` (stands for `http://metadata.google.internal`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn config(&self) -> GcpConfig {
        self.state.lock().unwrap().cfg.clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut GcpConfig)) {
        f(&mut self.state.lock().unwrap().cfg)
    }

    /// Identity tokens handed out (kind, value).
    pub fn issued(&self) -> Vec<(String, String)> {
        self.issued.all()
    }
}

fn via_proxy(req: &Request) -> bool {
    req.header("x-forwarded-for").is_some() || !req.target.starts_with('/')
}

fn text(status: u16, content_type: &str, body: &str) -> Reply {
    Reply::Send {
        status,
        headers: vec![
            ("Content-Type".into(), content_type.into()),
            ("Metadata-Flavor".into(), "Google".into()),
            ("Server".into(), "Metadata Server for VM".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

/// The real server's 403 page (abridged to its message).
fn forbidden(path: &str, why: &str) -> Reply {
    text(
        403,
        "text/html; charset=UTF-8",
        &format!("<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 403 (Forbidden)!!1</title>\n  <p><b>403.</b> <ins>That\u{2019}s an error.</ins>\n  <p>Your client does not have permission to get URL <code>{path}</code> from this server. {why} <ins>That\u{2019}s all we know.</ins>\n"),
    )
}

fn not_found(path: &str) -> Reply {
    text(
        404,
        "text/html; charset=UTF-8",
        &format!("<!DOCTYPE html>\n<html lang=en>\n  <title>Error 404 (Not Found)!!1</title>\n  <p><b>404.</b> <ins>That\u{2019}s an error.</ins>\n  <p>The requested URL <code>{path}</code> was not found on this server.  <ins>That\u{2019}s all we know.</ins>\n"),
    )
}

fn route(st: &mut State, issued: &IssuedLog, req: &Request) -> Reply {
    if !req.path.starts_with("/computeMetadata/") {
        return not_found(&req.path);
    }
    if req.header("x-forwarded-for").is_some() {
        return forbidden(
            &req.path,
            "Request had an X-Forwarded-For header (it came through a proxy).",
        );
    }
    if req.header("metadata-flavor") != Some("Google") {
        return forbidden(&req.path, "Missing Metadata-Flavor:Google header.");
    }
    if req.method != "GET" {
        return text(405, "text/html; charset=UTF-8", "Method not allowed");
    }
    let cfg = &st.cfg;
    let plain = |s: &str| text(200, "application/text", s);
    match req.path.as_str() {
        "/computeMetadata/v1/instance/id" => return plain(&cfg.instance_id),
        "/computeMetadata/v1/instance/name" => return plain(&cfg.instance_name),
        "/computeMetadata/v1/instance/zone" => {
            return plain(&format!(
                "projects/{}/zones/{}",
                cfg.project_number, cfg.zone
            ))
        }
        "/computeMetadata/v1/project/project-id" => return plain(&cfg.project_id),
        "/computeMetadata/v1/project/numeric-project-id" => return plain(&cfg.project_number),
        IDENTITY_PATH => {}
        p => return not_found(p),
    }
    if cfg.no_service_account {
        return not_found(&req.path);
    }
    let Some(aud) = req.param("audience").filter(|a| !a.is_empty()) else {
        return text(
            400,
            "text/html; charset=UTF-8",
            "non-empty audience parameter required",
        );
    };
    let aud = aud.to_string();
    if let Some(step) = st.cfg.script.pop_front() {
        return match step {
            GcpStep::Status(code) => text(code, "text/html; charset=UTF-8", "error"),
            GcpStep::Hang(d) => Reply::Hang(d),
            GcpStep::Close => Reply::Close,
        };
    }
    let cfg = &st.cfg;
    let now = jwt::now_unix() as i64;
    let mut claims = json!({
        "aud": aud,
        "azp": cfg.service_account_id,
        "exp": now + TOKEN_LIFETIME_SECS,
        "iat": now,
        "iss": ISSUER,
        "sub": cfg.service_account_id,
    });
    if req.param("format") == Some("full") {
        claims["email"] = json!(cfg.service_account_email);
        claims["email_verified"] = json!(true);
        claims["google"] = json!({"compute_engine": {
            "instance_creation_timestamp": now - 600,
            "instance_id": cfg.instance_id,
            "instance_name": cfg.instance_name,
            "project_id": cfg.project_id,
            "project_number": cfg.project_number.parse::<u64>().unwrap_or(0),
            "zone": cfg.zone,
        }});
    }
    let token = oidc::mint(&claims, "gcp-fake-key");
    issued.record(oidc::FEDERATED_ASSERTION, &token);
    plain(&token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(f: &FakeGcpMetadata, path_q: &str, flavor: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut r = agent.get(&format!("{}{path_q}", f.url()));
        if let Some(v) = flavor {
            r = r.header("Metadata-Flavor", v);
        }
        let mut resp = r.call().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    #[test]
    fn identity_token_claims_and_header_rules() {
        let f = FakeGcpMetadata::start(GcpConfig::default());
        let q = format!("{IDENTITY_PATH}?audience=api://AzureADTokenExchange&format=full");
        let (s, body) = get(&f, &q, None);
        assert_eq!(s, 403);
        assert!(
            body.contains("Missing Metadata-Flavor:Google header."),
            "{body}"
        );
        assert_eq!(
            get(&f, &q, Some("google")).0,
            403,
            "the value is case-sensitive"
        );
        let (s, tok) = get(&f, &q, Some("Google"));
        assert_eq!(s, 200);
        let c = oidc::verify(&tok).unwrap();
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["sub"], "112233445566778899000");
        assert_eq!(c["aud"], "api://AzureADTokenExchange");
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            3600
        );
        assert_eq!(
            c["google"]["compute_engine"]["instance_id"],
            "4518375846354817126"
        );
        assert_eq!(f.issued()[0].1, tok);
        let (_, short) = get(&f, &format!("{IDENTITY_PATH}?audience=x"), Some("Google"));
        assert!(oidc::verify(&short).unwrap().get("google").is_none());
        assert_eq!(get(&f, IDENTITY_PATH, Some("Google")).0, 400);
        assert_eq!(
            get(&f, "/computeMetadata/v1/instance/id", Some("Google")),
            (200, "4518375846354817126".into())
        );
        assert_eq!(
            get(&f, "/computeMetadata/v1/instance/nope", Some("Google")).0,
            404
        );
    }

    #[test]
    fn forwarded_requests_and_faults() {
        let f = FakeGcpMetadata::start(GcpConfig {
            script: [GcpStep::Status(503)].into_iter().collect(),
            ..Default::default()
        });
        let q = format!("{IDENTITY_PATH}?audience=a");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let r = agent
            .get(&format!("{}{q}", f.url()))
            .header("Metadata-Flavor", "Google")
            .header("X-Forwarded-For", "10.0.0.1")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(f.requests()[0].via_proxy);
        assert_eq!(get(&f, &q, Some("Google")).0, 503);
        assert_eq!(get(&f, &q, Some("Google")).0, 200);
    }
}
