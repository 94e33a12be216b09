//! Issue 12, items 1, 2, 3, 5, 9, 11, 12: no secret leaves by any door, hostile input stays
//! harmless. The real binary against the fake IMDS, the fake ARM (TLS, test CA) and the fake agent.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_enroll_fakes::arm::{ArmConfig, FakeArm};
use common::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// helpers

/// Assert that no 16-character fragment of `secret` appears in `text` in any encoding the
/// harness's scanner knows (as is, hex incl. split dumps, base64 at every alignment, percent):
/// the same hash-indexed scanner every run already goes through, asked here on its own so this
/// test fails for this reason alone.
fn assert_no_fragment(text: &str, secret: &str, what: &str) {
    assert!(secret.len() >= 16, "{what}: too short to scan by fragments");
    let scanner = Scanner::new(&[Secret::new("secret", secret)]);
    let found = scanner.scan(what, text.as_bytes());
    assert!(found.is_empty(), "{what}: {found:?}");
}

/// The fake ARM over TLS sharing the sandbox's fake-Azure dir; the env that trusts and uses it.
fn arm_for(sb: &Sandbox, tweak: impl FnOnce(&mut ArmConfig)) -> (FakeArm, Vec<(String, String)>) {
    let arm = sb.fake_arm(tweak);
    let env = vec![
        ("ARC_ENROLL_ARM_ENDPOINT".to_string(), arm.url()),
        (
            "SSL_CERT_FILE".to_string(),
            arm.ca_pem().display().to_string(),
        ),
        ("ARC_ENROLL_TIME_SCALE".to_string(), "50".to_string()),
    ];
    (arm, env)
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A plain-http listener on loopback that counts connections and answers each with a 200 script
/// (so a client that follows a redirect here would get something to run).
fn counting_http_server() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            n2.fetch_add(1, Ordering::SeqCst);
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "#!/bin/bash\necho evil\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, n)
}

// ---------------------------------------------------------------------------------------------
// item 1: the HTTP stack never logs below DEBUG, no wire bytes

#[test]
fn trace_logging_leaks_no_fragment_of_the_token_in_any_encoding() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-trace");
    let (arm, env) = arm_for(&sb, |_| {});
    let mut env = pairs(&env);
    env.push(("RUST_LOG", "trace"));
    let r = sb.run(&imds.url(), &["connect", "-vv"], &env);
    r.expect_code(0);
    assert!(
        !arm.requests().is_empty(),
        "ARM was read with the token (the Authorization header was on the wire)"
    );
    let toks = sb.tokens_seen();
    assert!(!toks.is_empty(), "the agent got a token");
    for t in &toks {
        assert_no_fragment(&r.stderr, t, "the access token in the log");
        assert_no_fragment(&r.stdout, t, "the access token on stdout");
    }
    assert!(r.stderr.contains(" DEBUG "), "the run was really verbose");
    for line in r.stderr.lines() {
        assert!(
            !(line.contains(" TRACE ")
                && !line.contains("arc-enroll")
                && looks_like_hex_dump(line)),
            "a wire dump line: {line}"
        );
    }
}

/// ureq-proto's dump rows: eight groups of four hex digits, then the bytes as text.
fn looks_like_hex_dump(line: &str) -> bool {
    line.split_whitespace()
        .filter(|w| w.len() == 4 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        .count()
        >= 6
}

// ---------------------------------------------------------------------------------------------
// items 2 and 3: the proxy password, encoded or not, never in our output; the argv warning once

#[test]
fn encoded_proxy_password_is_masked_everywhere_and_the_argv_window_is_warned_once() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-proxy-pw");
    let port = free_port();
    // The password p@ss:w0rd/%x must be percent-encoded in a URL.
    let url = format!("http://arcuser:p%40ss%3Aw0rd%2F%25x@127.0.0.1:{port}");
    let r = sb.run(
        &imds.url(),
        &["connect", "-vv"],
        &[
            ("HTTPS_PROXY", url.as_str()),
            ("RUST_LOG", "trace"),
            ("ARC_ENROLL_TIME_SCALE", "50"),
        ],
    );
    r.expect_code(0);
    // The agent really got the credentials (its only documented input is that argv, FACTS §2.3).
    let sets = sb.agent_calls_of("config");
    assert!(
        sets.iter()
            .any(|s| s["argv"] == json!(["config", "set", "proxy.url", url])),
        "proxy.url set with its credentials: {sets:?}"
    );
    for text in [&r.stderr, &r.stdout] {
        for form in [
            "p%40ss%3Aw0rd%2F%25x",
            "p%40ss",
            "p@ss:w0rd/%x",
            "p@ss",
            "w0rd",
        ] {
            assert!(
                !text.contains(form),
                "the proxy password ({form}) leaked:\n{text}"
            );
        }
    }
    r.log_has(&format!(
        "config set proxy.url http://arcuser:***@127.0.0.1:{port}"
    ));
    let warnings = r
        .stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("process list"))
        .count();
    assert_eq!(warnings, 1, "one warning about the argv:\n{}", r.stderr);
}

#[test]
fn proxy_without_password_gets_no_argv_warning() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-proxy-nopw");
    let url = format!("http://127.0.0.1:{}", free_port());
    let r = sb.run(
        &imds.url(),
        &["connect"],
        &[
            ("HTTPS_PROXY", url.as_str()),
            ("ARC_ENROLL_TIME_SCALE", "50"),
        ],
    );
    r.expect_code(0);
    assert!(!r.stderr.contains("process list"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// item 5: --install-agent

const INSTALLER: &str = r#"#!/bin/bash
echo "ran" > "$INSTALL_RECORD"
mkdir -p "$(dirname "$INSTALL_TARGET")"
cp "$INSTALL_SOURCE" "$INSTALL_TARGET"
chmod 755 "$INSTALL_TARGET"
echo "Latest version of azcmagent is installed."
"#;

struct Install {
    sb: Sandbox,
    imds: FakeImds,
    arm: FakeArm,
    env: Vec<(String, String)>,
    target: PathBuf,
    record: PathBuf,
}

fn install_world(name: &str, tweak: impl FnOnce(&mut ArmConfig)) -> Install {
    let sb = Sandbox::new(name);
    let imds = FakeImds::start(ImdsConfig::default());
    let (arm, mut env) = arm_for(&sb, |c| {
        c.installer = Some(INSTALLER.into());
        tweak(c)
    });
    let target = sb.root.join("opt/azcmagent/bin/azcmagent");
    let record = sb.root.join("installer-record");
    env.extend([
        ("ARC_ENROLL_AZCMAGENT".into(), target.display().to_string()),
        (
            "ARC_ENROLL_AGENT_INSTALLER_URL".into(),
            format!("{}/installer.sh", arm.url()),
        ),
        (
            "INSTALL_SOURCE".into(),
            fake_agent_bin().display().to_string(),
        ),
        ("INSTALL_TARGET".into(), target.display().to_string()),
        ("INSTALL_RECORD".into(), record.display().to_string()),
    ]);
    Install {
        sb,
        imds,
        arm,
        env,
        target,
        record,
    }
}

impl Install {
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env = self.env.clone();
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        self.sb.run(&self.imds.url(), args, &pairs(&env))
    }
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn http_installer_url_is_refused_before_any_network_call() {
    let w = install_world("trust-inst-http", |_| {});
    let (http, hits) = counting_http_server();
    let url = format!("{http}/installer.sh");
    for how in [
        vec![("ARC_ENROLL_AGENT_INSTALLER_URL", url.as_str())],
        vec![
            ("ARC_ENROLL_AGENT_INSTALLER_URL", url.as_str()),
            ("ARC_ENROLL_ALLOW_INSECURE_INSTALLER", "false"),
        ],
    ] {
        let r = w.run(&["connect", "--install-agent"], &how);
        r.expect_code(2)
            .out_has("agent_installer_url")
            .out_has("--allow-insecure-installer");
    }
    assert_eq!(w.imds.token_requests(), 0, "no network call");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the http URL was never fetched"
    );
    assert!(!w.record.exists());
}

#[test]
fn http_installer_url_runs_only_with_the_explicit_override_and_says_so() {
    let w = install_world("trust-inst-http-ok", |_| {});
    let (http, hits) = counting_http_server();
    let url = format!("{http}/installer.sh");
    // The counting server's script is not the test installer: pin it to prove which one ran.
    let r = w.run(
        &["connect", "--install-agent", "--allow-insecure-installer"],
        &[("ARC_ENROLL_AGENT_INSTALLER_URL", url.as_str())],
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "fetched once with the override"
    );
    r.log_has("is plain http");
    // The served script installs nothing, so the run ends with "still not found" (exit 5).
    r.expect_code(5).out_has("still not found");
}

#[test]
fn https_installer_redirecting_to_http_is_not_followed() {
    let (http, hits) = counting_http_server();
    let to = format!("{http}/installer.sh");
    let w = install_world("trust-inst-redir", |c| {
        c.redirects = vec![("/aka/azcmagent".into(), to.clone())];
    });
    let url = format!("{}/aka/azcmagent", w.arm.url());
    let r = w.run(
        &["connect", "--install-agent"],
        &[("ARC_ENROLL_AGENT_INSTALLER_URL", url.as_str())],
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the http hop was never made"
    );
    r.expect_code(5).out_has("refused to follow a redirect");
    assert!(!w.record.exists());
}

#[test]
fn https_to_https_redirect_is_still_followed() {
    // The redirect target is the fake ARM itself: start it first to learn its URL.
    let sb = Sandbox::new("trust-inst-redir-ok2");
    let imds = FakeImds::start(ImdsConfig::default());
    let (arm, env) = arm_for(&sb, |c| c.installer = Some(INSTALLER.into()));
    let loc = format!("{}/installer.sh", arm.url());
    arm.update(|c| c.redirects = vec![("/aka/azcmagent".into(), loc.clone())]);
    let target = sb.root.join("opt/azcmagent/bin/azcmagent");
    let record = sb.root.join("installer-record");
    let url = format!("{}/aka/azcmagent", arm.url());
    let mut env = pairs(&env);
    let (t, rec, src) = (
        target.display().to_string(),
        record.display().to_string(),
        fake_agent_bin().display().to_string(),
    );
    env.extend([
        ("ARC_ENROLL_AZCMAGENT", t.as_str()),
        ("ARC_ENROLL_AGENT_INSTALLER_URL", url.as_str()),
        ("INSTALL_SOURCE", src.as_str()),
        ("INSTALL_TARGET", t.as_str()),
        ("INSTALL_RECORD", rec.as_str()),
    ]);
    let r = sb.run(&imds.url(), &["connect", "--install-agent"], &env);
    r.expect_code(0);
    assert!(record.exists(), "the installer ran");
}

#[test]
fn pinned_installer_sha256_runs_a_match_and_refuses_a_mismatch() {
    let w = install_world("trust-inst-sha", |_| {});
    let good = sha256_hex(INSTALLER.as_bytes());
    let bad = "0".repeat(64);
    let r = w.run(
        &[
            "connect",
            "--install-agent",
            "--agent-installer-sha256",
            &bad,
        ],
        &[],
    );
    r.expect_code(5)
        .out_has(&format!("has SHA-256 {good}, not the expected {bad}"))
        .out_has("it was not run");
    assert!(!w.record.exists(), "a mismatching script must not run");
    assert!(!w.target.exists());
    // Upper case is fine; the environment variable works too.
    let r = w.run(
        &["connect", "--install-agent"],
        &[(
            "ARC_ENROLL_AGENT_INSTALLER_SHA256",
            good.to_ascii_uppercase().as_str(),
        )],
    );
    r.expect_code(0)
        .log_has(&format!("SHA-256 {good} is the expected one"));
    assert!(w.record.exists());
}

#[test]
fn malformed_installer_sha256_and_agent_package_are_usage_errors_before_any_network_call() {
    let w = install_world("trust-inst-bad", |_| {});
    let pkg_txt = w.sb.root.join("azcmagent.txt");
    std::fs::write(&pkg_txt, "x").unwrap();
    let missing = w.sb.root.join("missing.deb");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--agent-installer-sha256".into(), "abc".into()],
            "agent_installer_sha256",
        ),
        (
            vec!["--agent-installer-sha256".into(), "g".repeat(64)],
            "agent_installer_sha256",
        ),
        (
            vec!["--agent-package".into(), pkg_txt.display().to_string()],
            ".deb or .rpm",
        ),
        (
            vec!["--agent-package".into(), missing.display().to_string()],
            "cannot be read",
        ),
        (
            vec![
                "--agent-package".into(),
                w.sb.root.join("d.deb").display().to_string(),
            ],
            "cannot be read",
        ),
    ];
    for (args, needle) in cases {
        let mut a = vec!["connect".to_string(), "--install-agent".into()];
        a.extend(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        w.run(&a, &[]).expect_code(2).out_has(needle);
    }
    assert_eq!(w.imds.token_requests(), 0);
    assert!(w.arm.requests().is_empty());
}

/// A fake package manager on PATH (`dpkg`, `rpm`): records its argv and "installs" the agent.
fn fake_package_manager(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/bash\nPATH=/usr/bin:/bin\necho \"{name} $*\" >> \"$INSTALL_RECORD\"\n\
             [ -n \"$PKG_FAIL\" ] && {{ echo \"{name}: error: package is broken\"; exit 1; }}\n\
             mkdir -p \"$(dirname \"$INSTALL_TARGET\")\"\ncp \"$INSTALL_SOURCE\" \"$INSTALL_TARGET\"\n\
             chmod 755 \"$INSTALL_TARGET\"\necho \"Setting up azcmagent\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn agent_package_installs_from_a_local_deb_or_rpm_without_downloading() {
    for (ext, tool, want) in [
        ("deb", "dpkg", "dpkg -i"),
        ("rpm", "rpm", "rpm -U --replacepkgs"),
        ("rpm", "dnf", "dnf install -y"),
    ] {
        let w = install_world(&format!("trust-pkg-{tool}"), |_| {});
        let bin = w.sb.root.join("pkgbin");
        fake_package_manager(&bin, tool);
        let pkg = w.sb.root.join(format!("azcmagent_1.60.0.{ext}"));
        std::fs::write(&pkg, "not really a package").unwrap();
        // PATH is the fake tool alone (a real dpkg/rpm/dnf on this machine must never run): an
        // .rpm goes to dnf when one is on PATH, else to rpm -U.
        let path = bin.display().to_string();
        let pkg_s = pkg.display().to_string();
        let r = w.run(
            &["connect", "--install-agent", "--agent-package", &pkg_s],
            &[("PATH", path.as_str())],
        );
        r.expect_code(0)
            .log_has("from the local package")
            .log_has("Setting up azcmagent");
        assert_eq!(read(&w.record).trim(), format!("{want} {pkg_s}"));
        assert!(
            w.arm.requests_to("/installer.sh").is_empty(),
            "nothing downloaded"
        );
        assert_eq!(w.sb.agent_calls_of("connect").len(), 1);

        // A failing package manager: exit 5 with its words.
        std::fs::remove_file(&w.target).unwrap();
        let r = w.run(
            &["connect", "--install-agent", "--agent-package", &pkg_s],
            &[("PATH", path.as_str()), ("PKG_FAIL", "1")],
        );
        r.expect_code(5).out_has("package is broken");
    }
}

// ---------------------------------------------------------------------------------------------
// item 9: no input aborts the binary

#[test]
fn non_utf8_arc_enroll_variable_is_a_usage_error_naming_it() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-nonutf8");
    let mut c = sb.cmd(&imds.url());
    c.arg("connect").env(
        "ARC_ENROLL_TENANT_ID",
        std::ffi::OsStr::from_bytes(b"\xff\x1b[31mevil"),
    );
    let r = run_guarded(c, std::time::Duration::from_secs(60));
    r.expect_code(2)
        .log_has("ARC_ENROLL_TENANT_ID")
        .log_has("UTF-8");
    for t in [&r.stderr, &r.stdout] {
        assert!(!t.contains('\u{1b}'), "a raw escape byte was echoed: {t:?}");
        assert!(!t.contains('\u{fffd}'), "raw bytes were echoed: {t:?}");
    }
    let mut c = sb.cmd(&imds.url());
    c.args(["connect", "--json"])
        .env("ARC_ENROLL_TAGS", std::ffi::OsStr::from_bytes(b"a=\xff"));
    let r = run_guarded(c, std::time::Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["exit_code"], 2);
    assert!(v["message"].as_str().unwrap().contains("ARC_ENROLL_TAGS"));
    assert_eq!(imds.token_requests(), 0);
}

#[test]
fn non_utf8_unrelated_variable_is_ignored() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-nonutf8-other");
    for cmd in ["connect", "check", "token"] {
        let mut c = sb.cmd(&imds.url());
        c.arg(cmd)
            .env("LANGUAGE_X", std::ffi::OsStr::from_bytes(b"caf\xe9"))
            .env("ARC_ENROLL_TIME_SCALE", "50");
        let r = run_guarded(c, std::time::Duration::from_secs(120));
        assert!(
            matches!(r.code, Some(0) | Some(8)),
            "{cmd}: {:?}\n{}\n{}",
            r.code,
            r.stdout,
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

#[test]
fn absurd_time_scales_are_refused_not_panicked_on() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-scale");
    for v in ["1e300", "0", "-1", "NaN", "inf", "1e5", "x"] {
        let r = sb.run(&imds.url(), &["token"], &[("ARC_ENROLL_TIME_SCALE", v)]);
        r.expect_code(2).out_has("ARC_ENROLL_TIME_SCALE");
        assert!(!r.stderr.contains("panicked"), "{v}: {}", r.stderr);
    }
    assert_eq!(imds.token_requests(), 0);
}

#[test]
fn check_with_an_http_endpoint_first_then_https_does_not_abort() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-provider");
    let (arm, env) = arm_for(&sb, |_| {});
    let (http, hits) = counting_http_server();
    let list = format!("{http}/,{}/", arm.url());
    let mut env = pairs(&env);
    env.push(("ARC_ENROLL_CHECK_ENDPOINTS", list.as_str()));
    let r = sb.run(&imds.url(), &["check"], &env);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(!r.stderr.contains("CryptoProvider"), "{}", r.stderr);
    r.expect_code(0)
        .out_has(&format!("endpoint {}/: reachable", arm.url()));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// item 11: remote text cannot forge log lines; derived values are validated

fn assert_no_forged_line(r: &Run, forged: &str) {
    for (name, text) in [("log", &r.stderr), ("stdout", &r.stdout)] {
        assert!(
            !text.contains('\u{1b}'),
            "an escape sequence reached the {name}: {text:?}"
        );
        for line in text.lines() {
            assert!(
                !line.trim_start().starts_with(forged),
                "remote text started a line of its own in the {name}: {line:?}"
            );
        }
    }
}

#[test]
fn imds_error_text_with_newlines_and_escapes_stays_on_its_line() {
    let imds = FakeImds::start(ImdsConfig::default().with_script([Step::Status {
        code: 400,
        body: Some(
            json!({"error": "invalid_request",
                   "error_description": "Identity not found\nERROR fake line\u{1b}[31m\u{2028}INFO x\u{85}y"})
            .to_string(),
        ),
        retry_after: None,
    }]));
    let sb = Sandbox::new("trust-imds-text");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(3)
        .log_has("Identity not found\\nERROR fake line");
    assert_no_forged_line(&r, "ERROR fake line");
    for t in [&r.stderr, &r.stdout] {
        assert!(!t.contains('\u{2028}') && !t.contains('\u{85}'), "{t:?}");
    }
}

#[test]
fn output_of_a_child_process_is_escaped() {
    let w = install_world("trust-child-text", |_| {});
    let bin = w.sb.root.join("pkgbin");
    std::fs::create_dir_all(&bin).unwrap();
    let dpkg = bin.join("dpkg");
    std::fs::write(
        &dpkg,
        "#!/bin/bash\nprintf 'unpacking\\033[2J\\342\\200\\250ERROR forged by the tool\\n'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&dpkg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pkg = w.sb.root.join("azcmagent.deb");
    std::fs::write(&pkg, "x").unwrap();
    let path = bin.display().to_string();
    let pkg_s = pkg.display().to_string();
    let r = w.run(
        &["connect", "--install-agent", "--agent-package", &pkg_s],
        &[("PATH", path.as_str())],
    );
    r.expect_code(5)
        .log_has("unpacking\\u{001b}[2J\\u{2028}ERROR forged");
    assert_no_forged_line(&r, "ERROR forged");
    assert!(!r.stderr.contains('\u{2028}') && !r.stdout.contains('\u{2028}'));
}

#[test]
fn a_hostile_tid_claim_is_refused_before_the_agent_or_the_state_file() {
    let imds = FakeImds::start(ImdsConfig {
        tenant_id: "--foo bar".into(),
        ..Default::default()
    });
    let sb = Sandbox::new("trust-tid");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(3)
        .out_has("tid claim")
        .out_has("\"--foo bar\"")
        .out_has("--tenant-id");
    assert!(
        sb.agent_calls_of("connect").is_empty(),
        "the claim reached the agent: {:?}",
        sb.agent_calls()
    );
    assert!(sb.state().is_none(), "the claim reached the state file");
    assert!(!r.stderr.contains("setting tenant_id = --foo bar"));
}

#[test]
fn hostile_claims_are_escaped_in_token_check_and_connect_output() {
    let imds = FakeImds::start(ImdsConfig {
        tenant_id: "x\u{1b}[31m\nERROR forged claim\u{2028}".into(),
        ..Default::default()
    });
    let sb = Sandbox::new("trust-claim-text");
    for (cmd, code) in [("token", 0), ("check", 8), ("connect", 3)] {
        let r = sb.run(&imds.url(), &[cmd], &[("ARC_ENROLL_TIME_SCALE", "50")]);
        assert_eq!(r.code, Some(code), "{cmd}:\n{}\n{}", r.stdout, r.stderr);
        assert_no_forged_line(&r, "ERROR forged");
        assert!(
            !r.stdout.contains('\u{2028}') && !r.stderr.contains('\u{2028}'),
            "{cmd}"
        );
    }
    assert!(sb.agent_calls_of("connect").is_empty());
}

#[test]
fn a_hostile_location_in_imds_metadata_is_refused() {
    let imds = FakeImds::start(ImdsConfig {
        location: "west\u{1b}[31meurope --x".into(),
        ..Default::default()
    });
    let sb = Sandbox::new("trust-location");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(2)
        .out_has("location")
        .out_has("IMDS instance metadata");
    assert!(sb.agent_calls_of("connect").is_empty());
    assert_no_forged_line(&r, "europe");
}

// ---------------------------------------------------------------------------------------------
// item 12: ARM only over https, redirects never leave https

#[test]
fn http_arm_endpoint_is_refused_loopback_included() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-arm-http");
    for url in [
        "http://127.0.0.1:9",
        "HTTP://localhost:8080/",
        "http://[::1]:1",
    ] {
        for cmd in ["connect", "check", "token"] {
            let r = sb.run(&imds.url(), &[cmd], &[("ARC_ENROLL_ARM_ENDPOINT", url)]);
            r.expect_code(2)
                .out_has("arm_endpoint")
                .out_has("must be an https:// URL");
        }
    }
    assert_eq!(imds.token_requests(), 0);
}

#[test]
fn a_redirect_from_https_to_http_is_never_followed() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("trust-arm-redir");
    let (http, hits) = counting_http_server();
    let (arm, env) = arm_for(&sb, |c| {
        c.redirects = vec![("/leave".into(), format!("{http}/"))];
    });
    let list = format!("{}/leave", arm.url());
    let mut env = pairs(&env);
    env.push(("ARC_ENROLL_CHECK_ENDPOINTS", list.as_str()));
    let r = sb.run(&imds.url(), &["check"], &env);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the http hop was made");
    r.out_has("refused to follow a redirect");
    assert_eq!(arm.requests_to("/leave").len(), 1);
}

#[test]
fn user_data_carries_the_installer_pin_and_override() {
    let cli = arc_enroll::cli::try_parse_from([
        "arc-enroll",
        "user-data",
        "--config",
        "",
        "--agent-installer-url",
        "http://10.0.0.1/install.sh",
        "--allow-insecure-installer",
        "--agent-installer-sha256",
        &"AB".repeat(32),
        "--agent-package",
        "/opt/images/azcmagent_1.60.deb",
    ])
    .unwrap();
    let s = arc_enroll::config::resolve(&cli.opts, &cli.sources, &arc_enroll::config::Env::new())
        .unwrap();
    let (v, _) = arc_enroll::commands::userdata::config_json(&s);
    assert_eq!(v["agent_installer_sha256"], "ab".repeat(32));
    assert_eq!(v["allow_insecure_installer"], true);
    assert_eq!(v["agent_installer_url"], "http://10.0.0.1/install.sh");
    // The package is in the VM's image, not necessarily on the machine writing the user-data.
    assert_eq!(v["agent_package"], "/opt/images/azcmagent_1.60.deb");
}
