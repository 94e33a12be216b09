//! Issue 16 (fits the ecosystem): curl's ALL_PROXY rule, `proxy URL` telling the request that
//! would really be made, the advice after a proxy refusal, the agent's newer vocabulary and
//! user-data leaving the operator's machine-local paths out.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, FakeImds, ImdsConfig, Sandbox, Tinyproxy};

const IMDS_DEAD: &str = "http://127.0.0.1:9";

/// `arc-enroll proxy URL` with `env`: the route it names ("direct" or the proxy URL). The IMDS
/// endpoint is the real one, so no loopback URL is taken for it.
fn arc_route(sb: &Sandbox, url: &str, env: &[(&str, &str)]) -> String {
    let r = sb.run("http://169.254.169.254", &["proxy", url], env);
    r.expect_code(0);
    r.stdout.trim().to_string()
}

// ---------------------------------------------------------------- item 3: ALL_PROXY

/// A loopback TCP listener that accepts and drops connections (the "server" curl talks to).
fn sink() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(false).unwrap();
    let h = std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            drop(c);
        }
    });
    (port, h)
}

/// Which of the proxies `real curl` used for `url` with exactly `env`: the index, or None for direct.
fn curl_route(url: &str, env: &[(&str, String)], proxies: &[&Tinyproxy]) -> Option<usize> {
    let before: Vec<usize> = proxies.iter().map(|p| p.log_text().len()).collect();
    let mut c = Command::new("curl");
    c.env_clear().env("PATH", "/usr/bin:/bin").args([
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "5",
        "-k",
        url,
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    let _ = c
        .status()
        .expect("curl is needed for the curl-vector tests (apt-get install curl)");
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let target = format!("127.0.0.1:{port}");
    let mut hit = None;
    for (i, p) in proxies.iter().enumerate() {
        if p.log_text()[before[i]..].contains(&target) {
            assert!(hit.is_none(), "two proxies saw {url}");
            hit = Some(i);
        }
    }
    hit
}

/// curl's own choice for each environment, observed through two real proxies, is what
/// `arc-enroll proxy URL` says: scheme-specific variables first, then all_proxy before ALL_PROXY,
/// HTTP_PROXY (upper case) never, NO_PROXY over all of them.
#[test]
fn all_proxy_follows_real_curl() {
    let a = Tinyproxy::start(None);
    let b = Tinyproxy::start(None);
    let (port, _h) = sink();
    let https = format!("https://127.0.0.1:{port}/");
    let http = format!("http://127.0.0.1:{port}/");
    let (pa, pb) = (a.url(), b.url());
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (
            "https, ALL_PROXY only",
            &https,
            vec![("ALL_PROXY", pa.clone())],
        ),
        (
            "https, all_proxy only",
            &https,
            vec![("all_proxy", pa.clone())],
        ),
        (
            "https, all_proxy before ALL_PROXY",
            &https,
            vec![("all_proxy", pa.clone()), ("ALL_PROXY", pb.clone())],
        ),
        (
            "https, HTTPS_PROXY before ALL_PROXY",
            &https,
            vec![("HTTPS_PROXY", pa.clone()), ("ALL_PROXY", pb.clone())],
        ),
        (
            "https, https_proxy before all_proxy",
            &https,
            vec![("https_proxy", pa.clone()), ("all_proxy", pb.clone())],
        ),
        (
            "https, http_proxy does not apply, ALL_PROXY does",
            &https,
            vec![("http_proxy", pa.clone()), ("ALL_PROXY", pb.clone())],
        ),
        (
            "http, ALL_PROXY only",
            &http,
            vec![("ALL_PROXY", pa.clone())],
        ),
        (
            "http, HTTP_PROXY ignored, ALL_PROXY used",
            &http,
            vec![("HTTP_PROXY", pa.clone()), ("ALL_PROXY", pb.clone())],
        ),
        (
            "http, http_proxy before all_proxy",
            &http,
            vec![("http_proxy", pa.clone()), ("all_proxy", pb.clone())],
        ),
        (
            "https, NO_PROXY over ALL_PROXY",
            &https,
            vec![("ALL_PROXY", pa.clone()), ("NO_PROXY", "127.0.0.1".into())],
        ),
        (
            "http, no_proxy over all_proxy",
            &http,
            vec![
                ("all_proxy", pa.clone()),
                ("no_proxy", "127.0.0.0/8".into()),
            ],
        ),
    ];
    let sb = Sandbox::new("allproxy-curl");
    let mut failures = Vec::new();
    for (what, url, env) in &cases {
        let curl = curl_route(url, env, &[&a, &b]);
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let ours = arc_route(&sb, url, &env_ref);
        let want = match curl {
            Some(0) => format!("via {pa}"),
            Some(_) => format!("via {pb}"),
            None => "direct".to_string(),
        };
        if !ours.contains(&format!(": {want}")) {
            failures.push(format!(
                "{what}: curl went {want}, arc-enroll says {ours:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "differs from curl:\n{}",
        failures.join("\n")
    );
}

#[test]
fn all_proxy_is_named_as_the_rule_and_read_from_etc_environment() {
    let sb = Sandbox::new("allproxy-rule");
    let r = sb.run(
        IMDS_DEAD,
        &["proxy", "https://management.azure.com/"],
        &[("all_proxy", "http://corp:3128")],
    );
    r.expect_code(0)
        .out_has("via http://corp:3128")
        .out_has("all_proxy");
    std::fs::write(
        sb.sysroot.join("etc/environment"),
        "ALL_PROXY=http://etc-all:8080\nno_proxy=169.254.169.254\n",
    )
    .unwrap();
    let r = sb.run(IMDS_DEAD, &["proxy", "https://management.azure.com/"], &[]);
    r.expect_code(0)
        .out_has("via http://etc-all:8080")
        .out_has("ALL_PROXY");
    // The process environment's scheme-specific variable wins over /etc/environment's ALL_PROXY.
    let r = sb.run(
        IMDS_DEAD,
        &["proxy", "https://management.azure.com/"],
        &[("HTTPS_PROXY", "http://env:1")],
    );
    r.expect_code(0).out_has("via http://env:1");
}

/// The agent (a Go program: it never reads ALL_PROXY) gets the ALL_PROXY proxy as https_proxy and
/// as its proxy.url, with NO_PROXY keeping IMDS local.
#[test]
fn all_proxy_reaches_the_agent_as_https_proxy_and_proxy_url() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("allproxy-agent");
    let proxy = format!("http://127.0.0.1:{}", free_port());
    let r = sb.run(
        &imds.url(),
        &["connect", "--timeout", "60s"],
        &[("ALL_PROXY", &proxy), ("NO_PROXY", "169.254.169.254")],
    );
    r.expect_code(0);
    let connect = sb.agent_calls_of("connect");
    assert_eq!(connect.len(), 1, "{}", r.stderr);
    let env = &connect[0]["env"];
    assert_eq!(
        env["https_proxy"].as_str(),
        Some(proxy.as_str()),
        "agent env: {env}"
    );
    assert!(
        env["NO_PROXY"]
            .as_str()
            .unwrap_or("")
            .contains("169.254.169.254"),
        "agent env: {env}"
    );
    let config_set: Vec<_> = sb
        .agent_calls_of("config")
        .into_iter()
        .filter(|c| c["argv"].to_string().contains("proxy.url"))
        .collect();
    assert!(
        config_set
            .iter()
            .any(|c| c["argv"].to_string().contains(&proxy)),
        "proxy.url was not set to the ALL_PROXY proxy: {config_set:?}\n{}",
        r.stderr
    );
}

// ---------------------------------------------------------------- item 4: proxy URL vs IMDS

/// Only the IMDS endpoint's own scheme, host and port go direct as IMDS; another URL on that host
/// is an ordinary request, and `proxy URL` must say what check/connect would do with it.
#[test]
fn proxy_command_treats_only_the_imds_endpoint_as_imds() {
    let sb = Sandbox::new("proxy-imds");
    let env = [
        ("https_proxy", "http://p:3128"),
        ("http_proxy", "http://p:3128"),
    ];
    let imds = "http://169.254.169.254";
    let run = |url: &str| {
        let r = sb.run(imds, &["proxy", url], &env);
        r.expect_code(0);
        r.stdout.trim().to_string()
    };
    let same = run("http://169.254.169.254/metadata/identity/oauth2/token");
    assert!(same.contains(": direct") && same.contains("IMDS"), "{same}");
    let explicit_port = run("http://169.254.169.254:80/metadata/instance");
    assert!(
        explicit_port.contains(": direct") && explicit_port.contains("IMDS"),
        "{explicit_port}"
    );
    for other in [
        "https://169.254.169.254/metadata/instance",
        "http://169.254.169.254:8080/x",
    ] {
        let out = run(other);
        assert!(
            out.contains(": via http://p:3128") && !out.contains("IMDS is never"),
            "{other} is not the IMDS endpoint {imds}, so it follows the proxy rules: {out}"
        );
    }
    // With the endpoint moved (tests, a sidecar), 169.254.169.254 is an ordinary host, and the
    // endpoint itself is IMDS.
    let moved = "http://127.0.0.1:18080";
    let r = sb.run(moved, &["proxy", "http://169.254.169.254/metadata"], &env);
    r.expect_code(0);
    assert!(r.stdout.contains(": via http://p:3128"), "{}", r.stdout);
    let r = sb.run(
        moved,
        &[
            "proxy",
            "http://127.0.0.1:18080/metadata/identity/oauth2/token",
        ],
        &env,
    );
    r.expect_code(0);
    assert!(
        r.stdout.contains(": direct") && r.stdout.contains("IMDS"),
        "{}",
        r.stdout
    );
}

// ---------------------------------------------------------------- item 5: proxy refusal advice

/// A real tinyproxy with extra configuration lines (BasicAuth, ConnectPort), logging to a file.
struct Proxy {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Proxy {
    fn start(extra: &str) -> Proxy {
        let bin = Tinyproxy::binary().expect("tinyproxy is not installed: `make setup-test`");
        let dir = std::env::temp_dir().join(format!(
            "arc-enroll-eco-proxy-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(dir.join("filter"), "^127\\.0\\.0\\.1$\n").unwrap();
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{d}/log\"\nLogLevel Connect\nAllow 127.0.0.1\n\
             Filter \"{d}/filter\"\nFilterDefaultDeny Yes\nFilterExtended On\n{extra}",
            d = dir.display()
        );
        std::fs::write(dir.join("conf"), conf).unwrap();
        let child = Command::new(bin)
            .args(["-d", "-c"])
            .arg(dir.join("conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "tinyproxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Proxy { port, child, dir }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A proxy that answers every CONNECT with 407 whatever credentials come with it, as squid does
/// for credentials it rejects.
fn squid_like_407() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = c.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// `check` against an ARM endpoint on loopback through `proxy`: the finding for that endpoint.
fn check_arm_finding(proxy: &str, arm_port: u16) -> (String, common::Run) {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("eco-check");
    let arm = format!("https://127.0.0.1:{arm_port}");
    let r = sb.run(
        &imds.url(),
        &["check", "--timeout", "30s"],
        &[
            ("ARC_ENROLL_ARM_ENDPOINT", &arm),
            ("https_proxy", proxy),
            ("NO_PROXY", "169.254.169.254"),
        ],
    );
    let mut lines = r.stdout.lines();
    let mut f = String::new();
    while let Some(l) = lines.next() {
        if l.contains(&format!("endpoint {arm}")) {
            f.push_str(l);
            for next in lines.by_ref() {
                if !next.starts_with(' ') {
                    break;
                }
                f.push('\n');
                f.push_str(next);
            }
            break;
        }
    }
    assert!(
        !f.is_empty(),
        "no finding for {arm}:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    (f, r)
}

#[test]
fn check_advice_names_the_real_port_when_the_proxy_refuses_connect() {
    let p = Proxy::start("ConnectPort 443\n");
    let arm_port = free_port();
    let (f, _) = check_arm_finding(&format!("http://127.0.0.1:{}", p.port), arm_port);
    assert!(
        f.contains(&format!("allow CONNECT to 127.0.0.1:{arm_port}")),
        "{f}"
    );
    assert!(!f.contains("127.0.0.1:443"), "{f}");
}

#[test]
fn check_advice_on_407_without_credentials_asks_for_them_once() {
    let p = Proxy::start("BasicAuth arc s3cret\n");
    let (f, _) = check_arm_finding(&format!("http://127.0.0.1:{}", p.port), free_port());
    assert!(f.contains("407"), "{f}");
    assert!(!f.contains("407/407"), "{f}");
    assert!(f.contains("user:password"), "{f}");
    assert!(!f.contains("allow CONNECT"), "{f}");
}

#[test]
fn check_advice_on_407_with_credentials_says_they_were_rejected() {
    let port = squid_like_407();
    let (f, r) = check_arm_finding(
        &format!("http://arc:wrong-pw@127.0.0.1:{port}"),
        free_port(),
    );
    assert!(f.contains("rejected the credentials"), "{f}");
    assert!(!f.contains("put user:password"), "{f}");
    assert!(!r.stdout.contains("wrong-pw") && !r.stderr.contains("wrong-pw"));
}

#[test]
fn check_advice_on_tinyproxys_401_is_about_authentication() {
    let p = Proxy::start("BasicAuth arc s3cret\n");
    let (f, r) = check_arm_finding(
        &format!("http://arc:wrong-pw@127.0.0.1:{}", p.port),
        free_port(),
    );
    assert!(f.contains("401"), "{f}");
    assert!(!f.contains("401/401"), "{f}");
    assert!(f.contains("rejected the credentials"), "{f}");
    assert!(!f.contains("allow CONNECT"), "{f}");
    assert!(!r.stdout.contains("wrong-pw") && !r.stderr.contains("wrong-pw"));
}

// ---------------------------------------------------------------- item 9: user-data and local paths

/// The config.json the user-data writes (base64 in write_files).
fn config_of(user_data: &str) -> serde_json::Value {
    use base64::Engine;
    let b64 = user_data
        .lines()
        .find_map(|l| l.trim().strip_prefix("content: "))
        .unwrap_or_else(|| panic!("no write_files content in:\n{user_data}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn user_data_leaves_the_operators_local_paths_out_and_says_so() {
    let sb = Sandbox::new("ud-paths");
    let r = sb.run(
        IMDS_DEAD,
        &["user-data", "--config", "", "--resource-name", "vm1"],
        &[
            ("ARC_ENROLL_STATE_DIR", "/home/op/arc-state"),
            ("ARC_ENROLL_AZCMAGENT", "/home/op/bin/azcmagent"),
        ],
    );
    r.expect_code(0);
    let config = config_of(&r.stdout);
    assert!(config.get("state_dir").is_none(), "{config}");
    assert!(config.get("azcmagent").is_none(), "{config}");
    assert_eq!(config["resource_name"], "vm1", "{config}");
    r.log_has("ARC_ENROLL_STATE_DIR")
        .log_has("ARC_ENROLL_AZCMAGENT");
    // Given on the command line, they are meant for the VM.
    let r = sb.run(
        IMDS_DEAD,
        &[
            "user-data",
            "--config",
            "",
            "--resource-name",
            "vm1",
            "--state-dir",
            "/var/lib/arc-vm",
        ],
        &[("ARC_ENROLL_STATE_DIR", "/home/op/arc-state")],
    );
    r.expect_code(0);
    let config = config_of(&r.stdout);
    assert_eq!(config["state_dir"], "/var/lib/arc-vm", "{config}");
}

// ---------------------------------------------------------------- item 8: the agent's vocabulary

#[test]
fn cloud_azure_local_and_use_aws_ec2_hostname_reach_the_agent() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("vocab");
    let r = sb.run(
        &imds.url(),
        &[
            "connect",
            "--timeout",
            "60s",
            "--cloud",
            "Azure.Local",
            "--use-aws-ec2-hostname",
        ],
        &[],
    );
    r.expect_code(0);
    let c = sb.agent_calls_of("connect");
    assert_eq!(c.len(), 1, "{}", r.stderr);
    let argv: Vec<String> = c[0]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect();
    let cloud = argv
        .iter()
        .position(|a| a == "--cloud")
        .map(|i| argv[i + 1].clone());
    assert_eq!(cloud.as_deref(), Some("Azure.Local"), "{argv:?}");
    assert!(
        argv.iter().any(|a| a == "--use-aws-ec2-hostname"),
        "{argv:?}"
    );
}

// ---------------------------------------------------------------- item 6: TLS advice

use arc_enroll_fakes::arm::UNTRUSTED_CA_NAME;

/// `check` against a fake ARM whose certificate comes from a CA that is not trusted, with the trust
/// store named by `env`: the ARM endpoint's finding.
fn check_tls_finding(name: &str, env: &[(&str, String)]) -> String {
    let sb = Sandbox::new(name);
    let imds = FakeImds::start(ImdsConfig::default());
    let arm = sb.fake_arm(|c| c.untrusted = true);
    let mut all: Vec<(&str, String)> = vec![
        ("ARC_ENROLL_ARM_ENDPOINT", arm.url()),
        ("ARC_ENROLL_CHECK_ENDPOINTS", format!("{}/", arm.url())),
        ("ARC_ENROLL_TIME_SCALE", "50".into()),
    ];
    for (k, v) in env {
        all.push((
            k,
            v.replace("{ca}", &arm.ca_pem().display().to_string())
                .replace(
                    "{cadir}",
                    &arm.ca_pem().parent().unwrap().display().to_string(),
                ),
        ));
    }
    let env_ref: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = sb.run(&imds.url(), &["check", "--timeout", "30s"], &env_ref);
    let want = format!("endpoint {}/", arm.url());
    let mut out = String::new();
    let mut on = false;
    for l in r.stdout.lines() {
        if l.contains(&want) {
            on = true;
        } else if on && !l.starts_with(' ') {
            break;
        }
        if on {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(
        !out.is_empty(),
        "no finding for {want}:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    out
}

#[test]
fn tls_advice_names_the_issuer_and_the_trust_store_in_effect() {
    let f = check_tls_finding("tls-file", &[("SSL_CERT_FILE", "{ca}".into())]);
    assert!(
        f.contains(UNTRUSTED_CA_NAME),
        "the presented issuer is not named:\n{f}"
    );
    assert!(f.contains("SSL_CERT_FILE"), "{f}");
    assert!(
        !f.contains("this machine trusts") && !f.contains("system store"),
        "{f}"
    );

    let f = check_tls_finding("tls-dir", &[("SSL_CERT_DIR", "{cadir}".into())]);
    assert!(f.contains(UNTRUSTED_CA_NAME), "{f}");
    assert!(f.contains("SSL_CERT_DIR"), "{f}");
}

// ---------------------------------------------------------------- item 8: installer AZCM codes

/// A stand-in for install_linux_azcmagent.sh failing the way the real one does (FACTS §4.2): the
/// code in its output and in the `--output` JSON, process exit 1 whatever the code.
const FAILING_INSTALLER: &str = r#"#!/bin/bash
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--proxy) shift 2 ;;
    -o|--output) out="$2"; shift 2 ;;
    *) echo "unknown argument $1"; exit 1 ;;
  esac
done
echo "Installing the Azure Connected Machine agent"
echo "installation failed ($INSTALL_CODE)"
[ -n "$out" ] && printf '{"status":"failed","error":{"code":"%s","message":"installation failed"}}' "$INSTALL_CODE" > "$out"
exit 1
"#;

#[test]
fn installer_azcm_codes_get_a_clear_message() {
    for (code, want) in [
        ("AZCM0130", "systemctl is missing"),
        ("AZCM0141", "refuses to install on an Azure VM"),
        ("AZCM0145", "apt/dpkg lock was held for more than 5 minutes"),
        ("AZCM0146", "repository configuration"),
        ("AZCM0147", "requested agent version"),
        ("AZCM0157", "curl was not permitted"),
    ] {
        let sb = Sandbox::new("installer-code");
        let imds = FakeImds::start(ImdsConfig::default());
        let arm = sb.fake_arm(|c| c.installer = Some(FAILING_INSTALLER.into()));
        let target = sb
            .root
            .join("opt/azcmagent/bin/azcmagent")
            .display()
            .to_string();
        let url = format!("{}/installer.sh", arm.url());
        let ca = arm.ca_pem().display().to_string();
        let r = sb.run(
            &imds.url(),
            &["connect", "--install-agent", "--timeout", "60s"],
            &[
                ("ARC_ENROLL_ARM_ENDPOINT", &arm.url()),
                ("SSL_CERT_FILE", &ca),
                ("ARC_ENROLL_AZCMAGENT", &target),
                ("ARC_ENROLL_AGENT_INSTALLER_URL", &url),
                ("INSTALL_CODE", code),
                ("ARC_ENROLL_TIME_SCALE", "50"),
            ],
        );
        r.expect_code(5);
        assert!(r.stdout.contains(code), "{code}: {}", r.stdout);
        assert!(
            r.stdout.contains(want),
            "{code}: the message does not explain it ({want}):\n{}",
            r.stdout
        );
    }
}

/// connect: a 407 from the proxy to ARM is a WARN naming what will likely fail next (the agent
/// goes through the same proxy), with the credentials advice; the run still leaves the answer to
/// the agent.
#[test]
fn connect_warns_when_the_proxy_refuses_arm() {
    let port = squid_like_407();
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("eco-connect-407");
    let proxy = format!("http://127.0.0.1:{port}");
    let r = sb.run(
        &imds.url(),
        &["connect", "--timeout", "60s"],
        &[("https_proxy", &proxy), ("NO_PROXY", "169.254.169.254")],
    );
    r.expect_code(0);
    let warn = r
        .stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("cannot check permissions in Azure"))
        .unwrap_or_else(|| panic!("no WARN for the refused ARM check:\n{}", r.stderr));
    assert!(warn.contains("407"), "{warn}");
    assert!(warn.contains("will likely fail next"), "{warn}");
    assert!(warn.contains("user:password"), "{warn}");
}

// ---------------------------------------------------------------- item 6: negative serials

/// A TLS server on loopback whose certificate has a negative serial number (made with openssl,
/// as a TLS-inspecting proxy's CA might), answering one HTTP 200 per connection. Returns the port
/// and the CA file to trust.
fn negative_serial_server(dir: &std::path::Path) -> (u16, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let sh = |args: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sh");
        assert!(
            st.success(),
            "openssl failed: {args} (is openssl installed?)"
        );
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj '/O=Contoso/CN=Contoso Inspection CA (negative serials)' \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
    sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1");
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh("openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial -0x1234567890abcdef -days 2 -extfile ext -out leaf.pem");
    sh("openssl pkcs8 -topk8 -nocrypt -in leaf.key -out leaf.p8");
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.p8")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match std::io::Read::read(&mut tls, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
                let _ = tls.flush();
            });
        }
    });
    (port, dir.join("ca.pem"))
}

#[test]
fn check_warns_about_a_negative_serial_number() {
    let sb = Sandbox::new("negserial");
    let (port, ca) = negative_serial_server(&sb.root.join("tls"));
    let imds = FakeImds::start(ImdsConfig::default());
    let url = format!("https://127.0.0.1:{port}");
    let ca = ca.display().to_string();
    let r = sb.run(
        &imds.url(),
        &["check", "--timeout", "30s"],
        &[
            ("ARC_ENROLL_ARM_ENDPOINT", &url),
            ("ARC_ENROLL_CHECK_ENDPOINTS", &format!("{url}/")),
            ("SSL_CERT_FILE", &ca),
            ("ARC_ENROLL_TIME_SCALE", "50"),
        ],
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains(&format!("endpoint {url}/")))
        .unwrap_or_else(|| panic!("no finding for {url}:\n{}", r.stdout));
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains("negative serial number"), "{line}");
    assert!(line.contains("February 2027"), "{line}");
    assert!(line.contains("CN=127.0.0.1"), "{line}");
}
