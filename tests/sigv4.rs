//! Our SigV4 signer (src/identity/sigv4.rs) against the public AWS SigV4 test suite
//! (awslabs/aws-c-auth `tests/aws-signing-test-suite/v4/`, copied to tests/data/sigv4/, see its
//! README). Every vector directory is run; each is checked for the canonical request, the string
//! to sign, the signature and the signed request's added headers. The expected texts are AWS's,
//! not ours.

use arc_enroll::identity::sigv4::{self, Credentials, Params, Request};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4")
}

struct Parsed {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// request.txt: `METHOD TARGET HTTP/1.1`, `Name:value` lines (a line starting with white space
/// continues the previous value), a blank line, the body. The target may contain a raw space
/// (get-space-*), so it is everything between the first space and the last ` HTTP/1.1`.
fn parse_request(text: &str) -> Parsed {
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (text.trim_end_matches('\n'), ""),
    };
    let mut lines = head.split('\n');
    let first = lines.next().expect("request line");
    let (method, rest) = first.split_once(' ').expect("method");
    let target = rest.rsplit_once(" HTTP/").expect("version").0;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("continuation after a header");
            last.1.push('\n');
            last.1.push_str(line);
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.to_string(), v.to_string()));
        }
    }
    Parsed {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// The header lines the signer adds, from header-signed-request.txt: every header that is not in
/// request.txt (X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-Sha256, Authorization).
fn added_headers(signed: &str, original: &Parsed) -> Vec<(String, String)> {
    let head = signed.split("\n\n").next().unwrap_or("");
    head.split('\n')
        .skip(1)
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            !original
                .headers
                .iter()
                .any(|(o, _)| o.eq_ignore_ascii_case(k))
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn unix_time(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .expect("timestamp")
        .as_second()
}

/// Runs one vector; Err(what differed) on a mismatch.
fn run(dir: &Path) -> Result<(), String> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()))
    };
    let ctx: Value = serde_json::from_str(&read("context.json")).expect("context.json");
    let req = parse_request(&read("request.txt"));
    let c = &ctx["credentials"];
    let creds = Credentials::new(
        c["access_key_id"].as_str().unwrap(),
        c["secret_access_key"].as_str().unwrap(),
        c["token"].as_str(),
    );
    let params = Params {
        region: ctx["region"].as_str().unwrap(),
        service: ctx["service"].as_str().unwrap(),
        unix_time: unix_time(ctx["timestamp"].as_str().unwrap()),
        normalize_path: ctx["normalize"].as_bool().unwrap_or(true),
        content_sha256_header: ctx["sign_body"].as_bool().unwrap_or(false),
        sign_session_token: !ctx["omit_session_token"].as_bool().unwrap_or(false),
    };
    let signed = sigv4::sign(
        &Request {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &req.headers,
            body: &req.body,
        },
        &creds,
        &params,
    );
    let mut diffs = Vec::new();
    let mut cmp = |what: &str, got: &str, want: &str| {
        if got != want.trim_end_matches('\n') {
            diffs.push(format!("{what}:\n--- got\n{got}\n--- want\n{want}"));
        }
    };
    cmp(
        "canonical request",
        &signed.canonical_request,
        &read("header-canonical-request.txt"),
    );
    cmp(
        "string to sign",
        &signed.string_to_sign,
        &read("header-string-to-sign.txt"),
    );
    cmp(
        "signature",
        &signed.signature,
        &read("header-signature.txt"),
    );
    let mut want = added_headers(&read("header-signed-request.txt"), &req);
    let mut got: Vec<(String, String)> = signed
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    want.sort();
    got.sort();
    if got != want {
        diffs.push(format!(
            "added headers:\n--- got\n{got:?}\n--- want\n{want:?}"
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

#[test]
fn aws_sigv4_test_suite_header_vectors() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .expect("tests/data/sigv4")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("context.json").is_file())
        .collect();
    dirs.sort();
    // The suite has 38 v4 vectors; fewer means files went missing, not that they passed.
    assert_eq!(dirs.len(), 38, "vector directories found: {dirs:?}");
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            run(d).err().map(|e| {
                format!(
                    "{}: {e}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    println!(
        "AWS SigV4 test suite: {} of {} header-signed vectors pass",
        dirs.len() - failures.len(),
        dirs.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A vector that must fail: a different secret key changes the signature (the comparison is not
/// vacuous).
#[test]
fn a_wrong_secret_fails_the_vector() {
    let dir = suite_dir().join("get-vanilla");
    let req = parse_request(&std::fs::read_to_string(dir.join("request.txt")).unwrap());
    let creds = Credentials::new("AKIDEXAMPLE", "not-the-example-key", None);
    let signed = sigv4::sign(
        &Request {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &req.headers,
            body: &req.body,
        },
        &creds,
        &Params {
            region: "us-east-1",
            service: "service",
            unix_time: unix_time("2015-08-30T12:36:00Z"),
            normalize_path: true,
            content_sha256_header: false,
            sign_session_token: true,
        },
    );
    let want = std::fs::read_to_string(dir.join("header-signature.txt")).unwrap();
    assert_ne!(signed.signature, want.trim());
    // ... while the canonical request, which does not depend on the key, still matches.
    let creq = std::fs::read_to_string(dir.join("header-canonical-request.txt")).unwrap();
    assert_eq!(signed.canonical_request, creq.trim_end_matches('\n'));
}

/// Our signer against AWS's own (aws-sigv4, inside the fake STS): a GetWebIdentityToken call
/// signed by src/identity/sigv4.rs with role credentials from the fake IMDSv2 is accepted, and the
/// same call with one byte of the body changed after signing is refused.
#[test]
fn our_signature_is_accepted_by_aws_sigv4_in_the_fake_sts() {
    use arc_enroll_fakes::aws::{AwsConfig, FakeAws};
    let f = FakeAws::start(AwsConfig::default(), None);
    let plain = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let session = plain
        .put(&format!("{}/latest/api/token", f.imds_url()))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send_empty()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let creds: Value = serde_json::from_str(
        &plain
            .get(&format!(
                "{}/latest/meta-data/iam/security-credentials/arc-enroll-role",
                f.imds_url()
            ))
            .header("X-aws-ec2-metadata-token", &session)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let creds = Credentials::new(
        creds["AccessKeyId"].as_str().unwrap(),
        creds["SecretAccessKey"].as_str().unwrap(),
        creds["Token"].as_str(),
    );
    let host = f.sts_url().trim_start_matches("https://").to_string();
    let body = "Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.1=api%3A%2F%2FAzureADTokenExchange&SigningAlgorithm=RS256&DurationSeconds=300";
    let headers = vec![
        ("Host".to_string(), host),
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signed = sigv4::sign(
        &Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
        &creds,
        &Params {
            region: "eu-west-1",
            service: "sts",
            unix_time: now,
            normalize_path: true,
            content_sha256_header: false,
            sign_session_token: true,
        },
    );
    let agent = arc_enroll_fakes::https::test_agent(&f.ca());
    let send = |body: &str| {
        let mut r = agent.post(&format!("{}/", f.sts_url())).header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        for (k, v) in &signed.headers {
            r = r.header(k, v);
        }
        let mut resp = r.send(body).unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    let (status, xml) = send(body);
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("<WebIdentityToken>"), "{xml}");
    let (status, xml) = send(&body.replace("300", "301"));
    assert_eq!(status, 403, "{xml}");
    assert!(xml.contains("<Code>SignatureDoesNotMatch</Code>"), "{xml}");
}
