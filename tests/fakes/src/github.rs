//! A fake GitHub Actions OIDC token endpoint (FACTS §11; GitHub "About security hardening with
//! OpenID Connect", actions/toolkit `getIDToken`), over HTTPS with a test CA like the real
//! `pipelines.actions.githubusercontent.com`.
//!
//! A job gets `ACTIONS_ID_TOKEN_REQUEST_URL` (this fake's [`FakeGithubOidc::request_url`], which
//! already has a query) and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`. `GET $URL&audience=A` with
//! `Authorization: bearer $TOKEN` (scheme case-insensitive) => `{"value": JWT}` with iss
//! `https://token.actions.githubusercontent.com`, sub `repo:OWNER/REPO:ref:refs/heads/BRANCH` (or
//! `...:environment:NAME`), aud = A (default `https://github.com/OWNER` when absent), lifetime
//! 5 minutes (UNCONFIRMED beyond "about 5 min"). A wrong or missing bearer => 401 (body
//! UNCONFIRMED).

use crate::http::{Handler, Reply, Request};
use crate::https::{HttpsServer, TestCa};
use crate::imds::fake_guid;
use crate::jwt;
use crate::oidc::{self, IssuedLog};
use serde_json::json;
use std::sync::{Arc, Mutex};

pub const ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const TOKEN_LIFETIME_SECS: i64 = 300;
pub const ID_TOKEN_PATH: &str = "/_apis/pipelines/1/runs/42/idtoken";

#[derive(Clone, Debug)]
pub struct GithubConfig {
    pub listen: String,
    pub repository: String,
    pub git_ref: String,
    /// A deployment environment: the subject becomes `repo:R:environment:E`.
    pub environment: Option<String>,
    /// The job's request token (the test's secret).
    pub request_token: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            listen: "127.0.0.1:0".into(),
            repository: "contoso/fleet-images".into(),
            git_ref: "refs/heads/main".into(),
            environment: None,
            request_token: format!(
                "ghs_fake{}",
                fake_guid("github-request-token").replace('-', "")
            ),
        }
    }
}

impl GithubConfig {
    pub fn subject(&self) -> String {
        match &self.environment {
            Some(e) => format!("repo:{}:environment:{e}", self.repository),
            None => format!("repo:{}:ref:{}", self.repository, self.git_ref),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub audience: Option<String>,
    pub authorized: bool,
    pub status: u16,
}

pub struct FakeGithubOidc {
    server: HttpsServer,
    ca: Arc<TestCa>,
    cfg: GithubConfig,
    requests: Arc<Mutex<Vec<Recorded>>>,
    issued: IssuedLog,
}

impl FakeGithubOidc {
    pub fn start(cfg: GithubConfig, ca: Option<Arc<TestCa>>) -> FakeGithubOidc {
        let ca = ca.unwrap_or_else(|| TestCa::new(None).expect("test CA"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let issued = IssuedLog::default();
        issued.record(oidc::GITHUB_REQUEST_TOKEN, &cfg.request_token);
        let handler: Handler = {
            let cfg = cfg.clone();
            let requests = requests.clone();
            let issued = issued.clone();
            Arc::new(move |req: &Request| {
                let (reply, authorized) = route(&cfg, &issued, req);
                let status = match &reply {
                    Reply::Send { status, .. } => *status,
                    _ => 0,
                };
                requests.lock().unwrap().push(Recorded {
                    path: req.path.clone(),
                    audience: req.param("audience").map(str::to_string),
                    authorized,
                    status,
                });
                reply
            })
        };
        let server =
            HttpsServer::start(&cfg.listen, ca.clone(), handler).expect("start fake GitHub OIDC");
        FakeGithubOidc {
            server,
            ca,
            cfg,
            requests,
            issued,
        }
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL`: the endpoint with its `api-version` query already on.
    pub fn request_url(&self) -> String {
        format!("{}{ID_TOKEN_PATH}?api-version=2.0", self.server.url())
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn request_token(&self) -> &str {
        &self.cfg.request_token
    }

    pub fn subject(&self) -> String {
        self.cfg.subject()
    }

    pub fn ca_pem(&self) -> std::path::PathBuf {
        self.ca.ca_pem()
    }

    pub fn ca(&self) -> Arc<TestCa> {
        self.ca.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The request token and every ID token handed out (kind, value).
    pub fn issued(&self) -> Vec<(String, String)> {
        self.issued.all()
    }
}

fn route(cfg: &GithubConfig, issued: &IssuedLog, req: &Request) -> (Reply, bool) {
    let authorized = req
        .header("authorization")
        .and_then(|h| h.split_once(' '))
        .is_some_and(|(scheme, tok)| {
            scheme.eq_ignore_ascii_case("bearer") && tok == cfg.request_token
        });
    if req.path != ID_TOKEN_PATH || req.method != "GET" {
        return (
            Reply::json(404, &json!({"message": "Not Found"})),
            authorized,
        );
    }
    if !authorized {
        return (
            Reply::json(401, &json!({"message": "Unauthorized"})),
            authorized,
        );
    }
    let owner = cfg.repository.split('/').next().unwrap_or("");
    let aud = req
        .param("audience")
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("https://github.com/{owner}"));
    let now = jwt::now_unix() as i64;
    let mut claims = json!({
        "jti": fake_guid(&format!("jti:{now}:{}", issued.all().len())),
        "sub": cfg.subject(),
        "aud": aud,
        "ref": cfg.git_ref,
        "sha": "e3a1b2c4d5f60718293a4b5c6d7e8f9012345678",
        "repository": cfg.repository,
        "repository_owner": owner,
        "run_id": "42",
        "run_number": "7",
        "run_attempt": "1",
        "actor": "octocat",
        "workflow": "enroll",
        "event_name": "workflow_dispatch",
        "ref_type": "branch",
        "job_workflow_ref": format!("{}/.github/workflows/enroll.yml@{}", cfg.repository, cfg.git_ref),
        "runner_environment": "self-hosted",
        "iss": ISSUER,
        "nbf": now - 5,
        "iat": now,
        "exp": now + TOKEN_LIFETIME_SECS,
    });
    if let Some(e) = &cfg.environment {
        claims["environment"] = json!(e);
    }
    let token = oidc::mint(&claims, "github-fake-key");
    issued.record(oidc::FEDERATED_ASSERTION, &token);
    (
        Reply::json(200, &json!({"count": 1, "value": token})),
        authorized,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::https::test_agent;

    #[test]
    fn bearer_required_and_token_claims() {
        let f = FakeGithubOidc::start(GithubConfig::default(), None);
        let agent = test_agent(&f.ca());
        let url = format!("{}&audience=api://AzureADTokenExchange", f.request_url());
        assert_eq!(agent.get(&url).call().unwrap().status().as_u16(), 401);
        assert_eq!(
            agent
                .get(&url)
                .header("Authorization", "bearer wrong")
                .call()
                .unwrap()
                .status()
                .as_u16(),
            401
        );
        let mut r = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", f.request_token()))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        let c = oidc::verify(v["value"].as_str().unwrap()).unwrap();
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["sub"], "repo:contoso/fleet-images:ref:refs/heads/main");
        assert_eq!(c["aud"], "api://AzureADTokenExchange");
        assert_eq!(f.issued().len(), 2, "request token and the ID token");
    }
}
