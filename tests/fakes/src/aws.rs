//! A fake AWS instance: IMDSv2 (plain HTTP, like 169.254.169.254) handing out the instance role's
//! temporary credentials, and STS `GetWebIdentityToken` (HTTPS with a test CA, like
//! `sts.<region>.amazonaws.com`) that **verifies each request's SigV4 signature with AWS's own
//! signer, the `aws-sigv4` crate** — not arc-enroll's implementation — before it answers.
//! FACTS §11; AWS EC2 "Use IMDSv2", "Retrieve security credentials from instance metadata", STS
//! API reference `GetWebIdentityToken` (Audience.member.N 1–10, SigningAlgorithm RS256|ES384,
//! DurationSeconds 60–3600, default 300; not on the global endpoint).
//!
//! IMDSv2:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600` => a session
//!   token (text) and the ttl echoed; no/invalid ttl => 400; `X-Forwarded-For` => 403
//! - every GET needs `X-aws-ec2-metadata-token` (IMDSv2 required): missing, unknown or expired =>
//!   401
//! - `/latest/meta-data/iam/security-credentials/` => the role name; `.../<role>` => JSON
//!   `{Code, LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration}`; no role => 404
//! - `/latest/meta-data/instance-id`, `/latest/meta-data/placement/region`,
//!   `/latest/dynamic/instance-identity/document` (JSON with `region`, `instanceId`, `accountId`)
//!
//! STS (query protocol: POST form body, or GET query), in this order:
//! 1. no `Authorization` => 403 `MissingAuthenticationToken`; malformed => 400
//!    `IncompleteSignature`; no `X-Amz-Date` => 400 `IncompleteSignature`
//! 2. unknown access key, or a session token missing/different => 403 `InvalidClientTokenId`;
//!    credentials past their expiration => 400 `ExpiredToken`
//! 3. scope service not `sts`, region not this endpoint's, date not X-Amz-Date's, `host` not
//!    signed, X-Amz-Date more than 5 min off => 403 `SignatureDoesNotMatch`
//! 4. the signature `aws-sigv4` computes over the received method, path, query, the signed
//!    headers and the body differs => 403 `SignatureDoesNotMatch`
//! 5. `Action`/`Version` => 400 `InvalidAction`; parameter constraints => 400 `ValidationError`
//! 6. scripted faults (`Throttling` 400, 5xx); account not enabled => 403
//!    `OutboundWebIdentityFederationDisabledException` (status UNCONFIRMED); role without the
//!    permission => 403 `AccessDenied`
//! 7. 200 XML `GetWebIdentityTokenResponse/GetWebIdentityTokenResult/{WebIdentityToken,
//!    Expiration}`; the JWT: iss `https://<issuer id>.tokens.sts.global.api.aws`, sub
//!    `arn:aws:iam::<acct>:role/<Role>`, aud the audience (claims beyond iss/sub/aud/exp/iat:
//!    UNCONFIRMED)
//!
//! Error bodies are STS's XML `ErrorResponse/Error/{Type,Code,Message}` + `RequestId`; messages
//! beyond the codes are as commonly quoted (UNCONFIRMED where marked).

use crate::http::{Handler, Reply, Request, Server};
use crate::https::{HttpsServer, TestCa};
use crate::imds::fake_guid;
use crate::jwt;
use crate::oidc::{self, IssuedLog};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const STS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
pub const STS_VERSION: &str = "2011-06-15";
/// How far X-Amz-Date may be from the server's clock (UNCONFIRMED for STS; 5 min is SigV4's rule).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StsStep {
    /// 400 `Throttling` "Rate exceeded".
    Throttling,
    /// 5xx `InternalFailure` / `ServiceUnavailable`.
    Status(u16),
    Hang(Duration),
}

#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub imds_listen: String,
    pub sts_listen: String,
    pub account_id: String,
    pub role_name: String,
    pub region: String,
    pub instance_id: String,
    /// The account's outbound-federation issuer id: iss = `https://<id>.tokens.sts.global.api.aws`.
    pub issuer_id: String,
    /// No instance profile: security-credentials/ => 404.
    pub no_role: bool,
    /// How long the role credentials the IMDS hands out live (real: ~6 h, rotated before).
    pub credentials_lifetime: Duration,
    /// `aws iam enable-outbound-web-identity-federation` not run.
    pub outbound_disabled: bool,
    /// The role's policy lacks `sts:GetWebIdentityToken`.
    pub access_denied: bool,
    pub sts_script: VecDeque<StsStep>,
    pub log_stderr: bool,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            imds_listen: "127.0.0.1:0".into(),
            sts_listen: "127.0.0.1:0".into(),
            account_id: "123456789012".into(),
            role_name: "arc-enroll-role".into(),
            region: "eu-west-1".into(),
            instance_id: "i-0abc1234def567890".into(),
            issuer_id: fake_guid("aws-outbound-issuer:123456789012"),
            no_role: false,
            credentials_lifetime: Duration::from_secs(6 * 3600),
            outbound_disabled: false,
            access_denied: false,
            sts_script: VecDeque::new(),
            log_stderr: false,
        }
    }
}

impl AwsConfig {
    pub fn issuer(&self) -> String {
        format!("https://{}.tokens.sts.global.api.aws", self.issuer_id)
    }
    pub fn role_arn(&self) -> String {
        format!("arn:aws:iam::{}:role/{}", self.account_id, self.role_name)
    }
}

#[derive(Clone)]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: i64,
}

/// One request either fake saw.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `imds` or `sts`.
    pub service: &'static str,
    pub method: String,
    pub path: String,
    /// STS: the `Action` parameter.
    pub action: Option<String>,
    /// STS: the access key id from the Authorization header.
    pub access_key_id: Option<String>,
    /// STS: the SignedHeaders list.
    pub signed_headers: Option<String>,
    /// STS: the error code answered (None on success).
    pub error_code: Option<String>,
    pub via_proxy: bool,
    pub status: u16,
}

struct State {
    cfg: AwsConfig,
    sessions: HashMap<String, i64>,
    creds: Vec<RoleCredentials>,
    requests: Vec<Recorded>,
    minted: u64,
}

pub struct FakeAws {
    imds: Server,
    sts: HttpsServer,
    ca: Arc<TestCa>,
    state: Arc<Mutex<State>>,
    issued: IssuedLog,
}

impl FakeAws {
    pub fn start(cfg: AwsConfig, ca: Option<Arc<TestCa>>) -> FakeAws {
        let ca = ca.unwrap_or_else(|| TestCa::new(None).expect("test CA"));
        let (imds_listen, sts_listen) = (cfg.imds_listen.clone(), cfg.sts_listen.clone());
        let state = Arc::new(Mutex::new(State {
            cfg,
            sessions: HashMap::new(),
            creds: Vec::new(),
            requests: Vec::new(),
            minted: 0,
        }));
        let issued = IssuedLog::default();
        let imds_handler: Handler = {
            let (state, issued) = (state.clone(), issued.clone());
            Arc::new(move |req: &Request| {
                let mut st = state.lock().unwrap();
                let reply = imds_route(&mut st, &issued, req);
                record(&mut st, "imds", req, &reply, None, None, None, None);
                reply
            })
        };
        let sts_handler: Handler = {
            let (state, issued) = (state.clone(), issued.clone());
            Arc::new(move |req: &Request| {
                let mut st = state.lock().unwrap();
                let auth = parse_authorization(req.header("authorization").unwrap_or(""));
                let params = sts_params(req);
                let (reply, code) = sts_route(&mut st, &issued, req, &params);
                let action = crate::http::param(&params, "Action").map(str::to_string);
                record(
                    &mut st,
                    "sts",
                    req,
                    &reply,
                    action,
                    auth.as_ref().map(|a| a.access_key_id.clone()),
                    auth.as_ref().map(|a| a.signed_headers.clone()),
                    code,
                );
                reply
            })
        };
        FakeAws {
            imds: Server::start(&imds_listen, imds_handler).expect("start fake AWS IMDS"),
            sts: HttpsServer::start(&sts_listen, ca.clone(), sts_handler).expect("start fake STS"),
            ca,
            state,
            issued,
        }
    }

    /// `http://127.0.0.1:PORT` (stands for `http://169.254.169.254`).
    pub fn imds_url(&self) -> String {
        self.imds.url()
    }

    /// `https://127.0.0.1:PORT` (stands for `https://sts.<region>.amazonaws.com`).
    pub fn sts_url(&self) -> String {
        self.sts.url()
    }

    pub fn ca_pem(&self) -> std::path::PathBuf {
        self.ca.ca_pem()
    }

    pub fn ca(&self) -> Arc<TestCa> {
        self.ca.clone()
    }

    pub fn config(&self) -> AwsConfig {
        self.state.lock().unwrap().cfg.clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut AwsConfig)) {
        f(&mut self.state.lock().unwrap().cfg)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Session tokens, secret keys, role session tokens and web identity tokens handed out.
    pub fn issued(&self) -> Vec<(String, String)> {
        self.issued.all()
    }

    /// Expire every credential handed out so far (the next STS call gets `ExpiredToken`).
    pub fn expire_credentials(&self) {
        for c in &mut self.state.lock().unwrap().creds {
            c.expiration = jwt::now_unix() as i64 - 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    st: &mut State,
    service: &'static str,
    req: &Request,
    reply: &Reply,
    action: Option<String>,
    access_key_id: Option<String>,
    signed_headers: Option<String>,
    error_code: Option<String>,
) {
    let status = match reply {
        Reply::Send { status, .. } => *status,
        _ => 0,
    };
    if st.cfg.log_stderr {
        eprintln!(
            "fake-aws {service}: {} {} -> {status}{}",
            req.method,
            req.path,
            error_code
                .as_deref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default()
        );
    }
    st.requests.push(Recorded {
        service,
        method: req.method.clone(),
        path: req.path.clone(),
        action,
        access_key_id,
        signed_headers,
        error_code,
        via_proxy: req.header("x-forwarded-for").is_some() || !req.target.starts_with('/'),
        status,
    });
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = oidc::civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

fn text(status: u16, body: &str) -> Reply {
    Reply::Send {
        status,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn imds_error(status: u16, title: &str) -> Reply {
    Reply::Send {
        status,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: format!("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n <head>\n  <title>{status} - {title}</title>\n </head>\n <body>\n  <h1>{status} - {title}</h1>\n </body>\n</html>\n").into_bytes(),
    }
}

fn random_text(seed: &str, len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (0..len)
        .map(|i| {
            let g = fake_guid(&format!("{seed}:{nanos}:{i}"));
            A[(u64::from_str_radix(&g[..8], 16).unwrap_or(0) % 64) as usize] as char
        })
        .collect()
}

fn imds_route(st: &mut State, issued: &IssuedLog, req: &Request) -> Reply {
    let now = jwt::now_unix() as i64;
    if req.path == "/latest/api/token" {
        if req.method != "PUT" {
            return imds_error(405, "Method Not Allowed");
        }
        if req.header("x-forwarded-for").is_some() {
            return imds_error(403, "Forbidden");
        }
        let ttl = req
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.parse::<i64>().ok());
        let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
            return imds_error(400, "Bad Request");
        };
        let token = format!("AQAEA{}==", random_text("imdsv2", 50));
        st.sessions.insert(token.clone(), now + ttl);
        issued.record(oidc::IMDSV2_SESSION_TOKEN, &token);
        return text(200, &token)
            .with_header("X-aws-ec2-metadata-token-ttl-seconds", &ttl.to_string());
    }
    if req.method != "GET" {
        return imds_error(405, "Method Not Allowed");
    }
    let valid = req
        .header("x-aws-ec2-metadata-token")
        .and_then(|t| st.sessions.get(t))
        .is_some_and(|exp| *exp > now);
    if !valid {
        return imds_error(401, "Unauthorized");
    }
    let cfg = st.cfg.clone();
    match req.path.as_str() {
        "/latest/meta-data/instance-id" => text(200, &cfg.instance_id),
        "/latest/meta-data/placement/region" => text(200, &cfg.region),
        "/latest/dynamic/instance-identity/document" => Reply::json(
            200,
            &json!({
                "accountId": cfg.account_id,
                "architecture": "x86_64",
                "availabilityZone": format!("{}a", cfg.region),
                "billingProducts": null,
                "devpayProductCodes": null,
                "marketplaceProductCodes": null,
                "imageId": "ami-0abcdef1234567890",
                "instanceId": cfg.instance_id,
                "instanceType": "t3.medium",
                "kernelId": null,
                "pendingTime": rfc3339(now - 600),
                "privateIp": "10.0.1.23",
                "ramdiskId": null,
                "region": cfg.region,
                "version": "2017-09-30",
            }),
        ),
        "/latest/meta-data/iam/security-credentials/"
        | "/latest/meta-data/iam/security-credentials" => {
            if cfg.no_role {
                imds_error(404, "Not Found")
            } else {
                text(200, &cfg.role_name)
            }
        }
        p if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
            let role = &p["/latest/meta-data/iam/security-credentials/".len()..];
            if cfg.no_role || role != cfg.role_name {
                return imds_error(404, "Not Found");
            }
            // The same credentials until a quarter of their life is left (IMDS rotates early).
            let lifetime = cfg.credentials_lifetime.as_secs() as i64;
            let current = st
                .creds
                .last()
                .filter(|c| c.expiration - now > lifetime / 4)
                .cloned();
            let c = match current {
                Some(c) => c,
                None => {
                    let c = RoleCredentials {
                        access_key_id: format!(
                            "ASIA{}",
                            random_text("akid", 16)
                                .to_ascii_uppercase()
                                .replace(['+', '/'], "X")
                        ),
                        secret_access_key: random_text("secret", 40),
                        token: format!("IQoJb3JpZ2luX2VjE{}", random_text("token", 300)),
                        expiration: now + lifetime,
                    };
                    issued.record(oidc::AWS_SECRET_ACCESS_KEY, &c.secret_access_key);
                    issued.record(oidc::AWS_SESSION_TOKEN, &c.token);
                    st.creds.push(c.clone());
                    c
                }
            };
            let body = format!(
                "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"{}\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"{}\",\n  \"SecretAccessKey\" : \"{}\",\n  \"Token\" : \"{}\",\n  \"Expiration\" : \"{}\"\n}}",
                rfc3339(now - 60),
                c.access_key_id,
                c.secret_access_key,
                c.token,
                rfc3339(c.expiration)
            );
            text(200, &body)
        }
        _ => imds_error(404, "Not Found"),
    }
}

struct Authorization {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: String,
    signature: String,
}

/// `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex`
fn parse_authorization(h: &str) -> Option<Authorization> {
    let rest = h.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return None,
        }
    }
    let c: Vec<&str> = cred?.split('/').collect();
    if c.len() != 5 || c[4] != "aws4_request" {
        return None;
    }
    Some(Authorization {
        access_key_id: c[0].to_string(),
        date: c[1].to_string(),
        region: c[2].to_string(),
        service: c[3].to_string(),
        signed_headers: signed?.to_string(),
        signature: sig?.to_string(),
    })
}

/// `YYYYMMDDTHHMMSSZ` => Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(oidc::days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn sts_params(req: &Request) -> Vec<(String, String)> {
    let mut p = req.query.clone();
    if req.method == "POST" {
        p.extend(
            String::from_utf8_lossy(&req.body)
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (
                        crate::http::percent_decode(k),
                        crate::http::percent_decode(v),
                    )
                }),
        );
    }
    p
}

fn sts_error(status: u16, code: &str, message: &str) -> (Reply, Option<String>) {
    let request_id = fake_guid(&format!("sts-req:{code}:{}", jwt::now_unix()));
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let body = format!(
        "<ErrorResponse xmlns=\"{STS_XMLNS}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        xml_escape(message)
    );
    (
        Reply::Send {
            status,
            headers: vec![
                ("Content-Type".into(), "text/xml".into()),
                ("x-amzn-RequestId".into(), request_id),
            ],
            body: body.into_bytes(),
        },
        Some(code.to_string()),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const SIG_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The signature AWS's own signer (aws-sigv4) computes for the received request.
fn expected_signature(
    req: &Request,
    auth: &Authorization,
    creds: &RoleCredentials,
    unix_time: i64,
) -> Result<String, String> {
    use aws_sigv4::http_request::{
        sign, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
    };
    use aws_sigv4::sign::v4;
    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        Some(creds.token.clone()),
        None,
        "fake-sts",
    )
    .into();
    let mut settings = SigningSettings::default();
    // Sign exactly what the client listed: no default exclusions (user-agent etc.).
    settings.excluded_headers = Some(Vec::new());
    settings.session_token_mode = if signed.contains(&"x-amz-security-token") {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let time = UNIX_EPOCH + Duration::from_secs(unix_time.max(0) as u64);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    // aws-sigv4 adds x-amz-date (from `time`) and x-amz-security-token itself.
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            signed.contains(&k.as_str()) && k != "x-amz-date" && k != "x-amz-security-token"
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signable = SignableRequest::new(
        &req.method,
        req.target.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&req.body),
    )
    .map_err(|e| e.to_string())?;
    let (_instructions, signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(signature)
}

fn sts_route(
    st: &mut State,
    issued: &IssuedLog,
    req: &Request,
    params: &[(String, String)],
) -> (Reply, Option<String>) {
    let now = jwt::now_unix() as i64;
    let Some(h) = req.header("authorization") else {
        return sts_error(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        );
    };
    let Some(auth) = parse_authorization(h) else {
        return sts_error(
            400,
            "IncompleteSignature",
            &format!("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization={h}"),
        );
    };
    let Some(amz_date) = req.header("x-amz-date").map(str::to_string) else {
        return sts_error(
            400,
            "IncompleteSignature",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        );
    };
    let Some(creds) = st
        .creds
        .iter()
        .find(|c| c.access_key_id == auth.access_key_id)
        .cloned()
    else {
        return sts_error(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        );
    };
    if req.header("x-amz-security-token") != Some(creds.token.as_str()) {
        return sts_error(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        );
    }
    if creds.expiration <= now {
        return sts_error(
            400,
            "ExpiredToken",
            "The security token included in the request is expired",
        );
    }
    if auth.service != "sts" {
        return sts_error(
            403,
            "SignatureDoesNotMatch",
            "Credential should be scoped to correct service: 'sts'. ",
        );
    }
    if auth.region != st.cfg.region {
        return sts_error(
            403,
            "SignatureDoesNotMatch",
            "Credential should be scoped to a valid region. ",
        );
    }
    let Some(t) = parse_amz_date(&amz_date) else {
        return sts_error(
            400,
            "IncompleteSignature",
            &format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
        );
    };
    if !amz_date.starts_with(&auth.date) {
        return sts_error(403, "SignatureDoesNotMatch", &format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.", auth.date, &amz_date[..8]));
    }
    if (t - now).abs() > MAX_CLOCK_SKEW_SECS {
        return sts_error(
            403,
            "SignatureDoesNotMatch",
            &format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                crate::aws::amz(now - MAX_CLOCK_SKEW_SECS),
                crate::aws::amz(now)
            ),
        );
    }
    if !auth.signed_headers.split(';').any(|h| h == "host") {
        return sts_error(403, "SignatureDoesNotMatch", SIG_MISMATCH);
    }
    match expected_signature(req, &auth, &creds, t) {
        Ok(sig) if sig == auth.signature => {}
        Ok(_) => return sts_error(403, "SignatureDoesNotMatch", SIG_MISMATCH),
        Err(e) => {
            return sts_error(
                400,
                "IncompleteSignature",
                &format!("the request could not be signed for comparison: {e}"),
            )
        }
    }
    // The operation.
    let get = |k: &str| crate::http::param(params, k);
    match get("Action") {
        Some("GetWebIdentityToken") => {}
        Some(a) => {
            return sts_error(
                400,
                "InvalidAction",
                &format!(
                    "Could not find operation {a} for version {}",
                    get("Version").unwrap_or("")
                ),
            )
        }
        None => return sts_error(400, "MissingAction", "Missing Action"),
    }
    if get("Version") != Some(STS_VERSION) {
        return sts_error(
            400,
            "InvalidAction",
            &format!(
                "Could not find operation GetWebIdentityToken for version {}",
                get("Version").unwrap_or("NO_VERSION_SPECIFIED")
            ),
        );
    }
    let audiences: Vec<&str> = (1..=11)
        .map_while(|i| get(&format!("Audience.member.{i}")))
        .collect();
    if audiences.is_empty() {
        return sts_error(400, "ValidationError", "1 validation error detected: Value null at 'audience' failed to satisfy constraint: Member must not be null");
    }
    if audiences.len() > 10 {
        return sts_error(400, "ValidationError", "1 validation error detected: Value at 'audience' failed to satisfy constraint: Member must have length less than or equal to 10");
    }
    let alg = match get("SigningAlgorithm") {
        Some(a @ ("RS256" | "ES384")) => a.to_string(),
        Some(a) => return sts_error(400, "ValidationError", &format!("1 validation error detected: Value '{a}' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RS256, ES384]")),
        None => return sts_error(400, "ValidationError", "1 validation error detected: Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null"),
    };
    let duration = match get("DurationSeconds") {
        None => 300,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (60..=3600).contains(&n) => n,
            Ok(n) if n < 60 => return sts_error(400, "ValidationError", &format!("1 validation error detected: Value '{n}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60")),
            Ok(n) => return sts_error(400, "ValidationError", &format!("1 validation error detected: Value '{n}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 3600")),
            Err(_) => return sts_error(400, "MalformedInput", &format!("Invalid value for DurationSeconds: {d}")),
        },
    };
    if let Some(step) = st.cfg.sts_script.pop_front() {
        return match step {
            StsStep::Throttling => sts_error(400, "Throttling", "Rate exceeded"),
            StsStep::Status(code) => sts_error(
                code,
                if code == 503 {
                    "ServiceUnavailable"
                } else {
                    "InternalFailure"
                },
                "Service is unable to handle request.",
            ),
            StsStep::Hang(d) => (Reply::Hang(d), None),
        };
    }
    let cfg = st.cfg.clone();
    if cfg.outbound_disabled {
        return sts_error(403, "OutboundWebIdentityFederationDisabledException", "The outbound web identity federation feature is not enabled for this account. To use this feature, you must first enable it through the AWS Management Console or API.");
    }
    if cfg.access_denied {
        return sts_error(403, "AccessDenied", &format!("User: arn:aws:sts::{}:assumed-role/{}/{} is not authorized to perform: sts:GetWebIdentityToken because no identity-based policy allows the sts:GetWebIdentityToken action", cfg.account_id, cfg.role_name, cfg.instance_id));
    }
    st.minted += 1;
    let aud = if audiences.len() == 1 {
        json!(audiences[0])
    } else {
        json!(audiences)
    };
    let claims = json!({
        "aud": aud,
        "sub": cfg.role_arn(),
        "iss": cfg.issuer(),
        "iat": now,
        "nbf": now,
        "exp": now + duration,
        "jti": fake_guid(&format!("sts-jti:{}:{now}", st.minted)),
        // UNCONFIRMED custom claims (the API reference names a principal_id claim in this namespace).
        "https://sts.amazonaws.com/": {
            "aws_account": cfg.account_id,
            "principal_id": cfg.role_arn(),
            "source_region": cfg.region,
            "ec2_instance_source_id": cfg.instance_id,
        },
    });
    let token = oidc::mint(&claims, &format!("sts-{}-{alg}", cfg.region));
    issued.record(oidc::FEDERATED_ASSERTION, &token);
    let request_id = fake_guid(&format!("sts-ok:{}:{now}", st.minted));
    let body = format!(
        "<GetWebIdentityTokenResponse xmlns=\"{STS_XMLNS}\">\n  <GetWebIdentityTokenResult>\n    <WebIdentityToken>{token}</WebIdentityToken>\n    <Expiration>{}</Expiration>\n  </GetWebIdentityTokenResult>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</GetWebIdentityTokenResponse>\n",
        rfc3339(now + duration)
    );
    (
        Reply::Send {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "text/xml".into()),
                ("x-amzn-RequestId".into(), request_id),
            ],
            body: body.into_bytes(),
        },
        None,
    )
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = oidc::civil(secs);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::https::test_agent;

    fn plain_agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    /// IMDSv2 session, role name, credentials.
    fn role_credentials(f: &FakeAws) -> serde_json::Value {
        let a = plain_agent();
        let mut r = a
            .put(&format!("{}/latest/api/token", f.imds_url()))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .send_empty()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let tok = r.body_mut().read_to_string().unwrap();
        let get = |p: &str| {
            let mut r = a
                .get(&format!("{}{p}", f.imds_url()))
                .header("X-aws-ec2-metadata-token", &tok)
                .call()
                .unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        };
        let (s, role) = get("/latest/meta-data/iam/security-credentials/");
        assert_eq!((s, role.as_str()), (200, "arc-enroll-role"));
        let (s, creds) = get(&format!(
            "/latest/meta-data/iam/security-credentials/{role}"
        ));
        assert_eq!(s, 200);
        serde_json::from_str(&creds).unwrap()
    }

    /// The form body and headers of a GetWebIdentityToken call signed by aws-sigv4 (the same
    /// signer the fake verifies with: this checks the fake's plumbing and its tamper detection;
    /// tests/federation.rs signs with arc-enroll's own signer).
    fn signed_call(
        f: &FakeAws,
        c: &serde_json::Value,
        body: &str,
        region: &str,
        time: SystemTime,
    ) -> Vec<(String, String)> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let host = f.sts_url().trim_start_matches("https://").to_string();
        let identity = aws_credential_types::Credentials::new(
            c["AccessKeyId"].as_str().unwrap(),
            c["SecretAccessKey"].as_str().unwrap(),
            Some(c["Token"].as_str().unwrap().to_string()),
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("sts")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", host.as_str()),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ];
        let signable = SignableRequest::new(
            "POST",
            format!("https://{host}/"),
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (instr, _) = sign(signable, &params).unwrap().into_parts();
        let mut out: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in instr.headers() {
            out.push((k.to_string(), v.to_string()));
        }
        out
    }

    fn post(f: &FakeAws, headers: &[(String, String)], body: &str) -> (u16, String) {
        let a = test_agent(&f.ca());
        let mut r = a.post(&format!("{}/", f.sts_url()));
        for (k, v) in headers {
            if k != "host" {
                r = r.header(k, v);
            }
        }
        let mut resp = r.send(body).unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    fn code(xml: &str) -> &str {
        xml.split("<Code>")
            .nth(1)
            .and_then(|s| s.split("</Code>").next())
            .unwrap_or("")
    }

    const BODY: &str = "Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.1=api%3A%2F%2FAzureADTokenExchange&SigningAlgorithm=RS256&DurationSeconds=300";

    #[test]
    fn imdsv2_rules() {
        let f = FakeAws::start(AwsConfig::default(), None);
        let a = plain_agent();
        let put = |ttl: Option<&str>, xff: bool| {
            let mut r = a.put(&format!("{}/latest/api/token", f.imds_url()));
            if let Some(t) = ttl {
                r = r.header("X-aws-ec2-metadata-token-ttl-seconds", t);
            }
            if xff {
                r = r.header("X-Forwarded-For", "10.0.0.9");
            }
            r.send_empty().unwrap().status().as_u16()
        };
        assert_eq!(put(None, false), 400);
        assert_eq!(put(Some("0"), false), 400);
        assert_eq!(put(Some("21601"), false), 400);
        assert_eq!(put(Some("21600"), true), 403);
        assert_eq!(put(Some("21600"), false), 200);
        let get = |tok: Option<&str>| {
            let mut r = a.get(&format!("{}/latest/meta-data/instance-id", f.imds_url()));
            if let Some(t) = tok {
                r = r.header("X-aws-ec2-metadata-token", t);
            }
            r.call().unwrap().status().as_u16()
        };
        assert_eq!(get(None), 401, "IMDSv1 refused");
        assert_eq!(get(Some("made-up")), 401);
        let c = role_credentials(&f);
        assert!(c["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
        assert_eq!(c["Code"], "Success");
        let kinds: Vec<String> = f.issued().into_iter().map(|(k, _)| k).collect();
        assert!(
            kinds.contains(&oidc::AWS_SECRET_ACCESS_KEY.to_string())
                && kinds.contains(&oidc::AWS_SESSION_TOKEN.to_string())
                && kinds.contains(&oidc::IMDSV2_SESSION_TOKEN.to_string()),
            "{kinds:?}"
        );
        // Same credentials on a second read (not rotated yet).
        assert_eq!(role_credentials(&f)["AccessKeyId"], c["AccessKeyId"]);
    }

    #[test]
    fn sts_accepts_a_correctly_signed_call_and_names_the_role() {
        let f = FakeAws::start(AwsConfig::default(), None);
        let c = role_credentials(&f);
        let h = signed_call(&f, &c, BODY, "eu-west-1", SystemTime::now());
        let (s, xml) = post(&f, &h, BODY);
        assert_eq!(s, 200, "{xml}");
        let tok = xml
            .split("<WebIdentityToken>")
            .nth(1)
            .unwrap()
            .split("</WebIdentityToken>")
            .next()
            .unwrap();
        let claims = oidc::verify(tok).unwrap();
        let cfg = f.config();
        assert_eq!(claims["iss"], cfg.issuer().as_str());
        assert_eq!(
            claims["sub"],
            "arn:aws:iam::123456789012:role/arc-enroll-role"
        );
        assert_eq!(claims["aud"], "api://AzureADTokenExchange");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
        assert!(xml.contains("<Expiration>"));
        assert!(f.issued().iter().any(|(_, v)| v == tok));
    }

    #[test]
    fn sts_rejects_tampering_and_bad_scopes_with_sts_error_shapes() {
        let f = FakeAws::start(AwsConfig::default(), None);
        let c = role_credentials(&f);
        let now = SystemTime::now();
        let h = signed_call(&f, &c, BODY, "eu-west-1", now);
        // The body changed after signing.
        let (s, xml) = post(&f, &h, &BODY.replace("300", "3600"));
        assert_eq!((s, code(&xml)), (403, "SignatureDoesNotMatch"), "{xml}");
        assert!(
            xml.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
            "{xml}"
        );
        // A signed header changed.
        let mut h2 = h.clone();
        for (k, v) in &mut h2 {
            if k == "content-type" {
                *v = "application/x-www-form-urlencoded".into();
            }
        }
        assert_eq!(code(&post(&f, &h2, BODY).1), "SignatureDoesNotMatch");
        // The wrong secret key.
        let mut wrong = c.clone();
        wrong["SecretAccessKey"] = json!("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        assert_eq!(
            code(&post(&f, &signed_call(&f, &wrong, BODY, "eu-west-1", now), BODY).1),
            "SignatureDoesNotMatch"
        );
        // Another region, an old clock.
        assert_eq!(
            code(&post(&f, &signed_call(&f, &c, BODY, "us-east-1", now), BODY).1),
            "SignatureDoesNotMatch"
        );
        let old = now - Duration::from_secs(900);
        assert_eq!(
            code(&post(&f, &signed_call(&f, &c, BODY, "eu-west-1", old), BODY).1),
            "SignatureDoesNotMatch"
        );
        // No session token, an unknown key, no Authorization at all.
        let no_tok: Vec<_> = h
            .iter()
            .filter(|(k, _)| k != "x-amz-security-token")
            .cloned()
            .collect();
        assert_eq!(post(&f, &no_tok, BODY).0, 403);
        assert_eq!(code(&post(&f, &no_tok, BODY).1), "InvalidClientTokenId");
        let mut unknown = c.clone();
        unknown["AccessKeyId"] = json!("ASIAUNKNOWNUNKNOWN00");
        assert_eq!(
            code(&post(&f, &signed_call(&f, &unknown, BODY, "eu-west-1", now), BODY).1),
            "InvalidClientTokenId"
        );
        let bare = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        assert_eq!(code(&post(&f, &bare, BODY).1), "MissingAuthenticationToken");
        // Expired role credentials.
        f.expire_credentials();
        let (s, xml) = post(&f, &signed_call(&f, &c, BODY, "eu-west-1", now), BODY);
        assert_eq!((s, code(&xml)), (400, "ExpiredToken"));
    }

    #[test]
    fn sts_parameter_validation_and_account_errors() {
        let f = FakeAws::start(AwsConfig::default(), None);
        let c = role_credentials(&f);
        let call = |body: &str| {
            let (s, xml) = post(
                &f,
                &signed_call(&f, &c, body, "eu-west-1", SystemTime::now()),
                body,
            );
            (s, code(&xml).to_string())
        };
        assert_eq!(
            call(&BODY.replace("DurationSeconds=300", "DurationSeconds=59")),
            (400, "ValidationError".into())
        );
        assert_eq!(
            call(&BODY.replace("DurationSeconds=300", "DurationSeconds=3601")),
            (400, "ValidationError".into())
        );
        assert_eq!(
            call(&BODY.replace("RS256", "HS256")),
            (400, "ValidationError".into())
        );
        assert_eq!(
            call(&BODY.replace("Audience.member.1", "Audience")),
            (400, "ValidationError".into())
        );
        assert_eq!(
            call(&BODY.replace("GetWebIdentityToken", "AssumeRole")),
            (400, "InvalidAction".into())
        );
        assert_eq!(
            call(&BODY.replace("&DurationSeconds=300", "")).0,
            200,
            "DurationSeconds is optional"
        );
        f.update(|c| {
            c.sts_script = [StsStep::Throttling, StsStep::Status(503)]
                .into_iter()
                .collect()
        });
        assert_eq!(call(BODY), (400, "Throttling".into()));
        assert_eq!(call(BODY), (503, "ServiceUnavailable".into()));
        f.update(|c| c.outbound_disabled = true);
        assert_eq!(
            call(BODY),
            (403, "OutboundWebIdentityFederationDisabledException".into())
        );
        f.update(|c| {
            c.outbound_disabled = false;
            c.access_denied = true
        });
        assert_eq!(call(BODY), (403, "AccessDenied".into()));
    }

    #[test]
    fn amz_date_parsing() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(amz(1_440_938_160), "20150830T123600Z");
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
    }
}
