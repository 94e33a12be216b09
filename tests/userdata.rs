//! `arc-enroll user-data`: what it writes, that cloud-init accepts it (`cloud-init schema`), that the
//! download script fetches through the proxy and checks the checksum, and that the committed
//! examples are exactly what the documented commands print.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arc_enroll_fakes::http::{Reply, Server};
use base64::Engine;
use common::*;

const SUB: &str = "11111111-1111-1111-1111-111111111111";
const TENANT: &str = "22222222-2222-2222-2222-222222222222";
const UAMI: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/nexus-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/arc-enroller";

/// The documented commands behind the committed examples (docs/user-data.md shows the same).
fn example_args(name: &str) -> Vec<&'static str> {
    match name {
        "nexus-system-assigned.yaml" => vec![
            "user-data",
            "--location",
            "eastus",
            "--proxy",
            "http://10.0.0.10:3128",
            "--no-proxy",
            "169.254.169.254,localhost,127.0.0.1",
        ],
        "nexus-user-assigned.yaml" => vec![
            "user-data",
            "--subscription-id",
            SUB,
            "--resource-group",
            "nexus-rg",
            "--tenant-id",
            TENANT,
            "--location",
            "eastus",
            "--identity-resource-id",
            UAMI,
            "--resource-name",
            "{hostname}-{vm_uuid8}",
            "--tags",
            "site=nexus-east,owner='platform team'",
            "--proxy",
            "http://10.0.0.10:3128",
            "--no-proxy",
            "169.254.169.254,localhost,127.0.0.1",
        ],
        // A golden image's locked-down agent: the agent section comes from the config file.
        "nexus-lockdown.yaml" => vec![
            "user-data",
            "--config",
            "examples/config-lockdown.json",
            "--location",
            "eastus",
            "--proxy",
            "http://10.0.0.10:3128",
            "--no-proxy",
            "169.254.169.254,localhost,127.0.0.1",
        ],
        _ => unreachable!(),
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `arc-enroll ARGS` with a clean environment and no config file.
fn user_data(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = bin_command();
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ARC_ENROLL_CONFIG", "")
        .env("ARC_ENROLL_SYSROOT", "/nonexistent-sysroot")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run_guarded(c, std::time::Duration::from_secs(30))
}

/// The config.json embedded in the user-data (`write_files[0]`, base64).
fn embedded_config(yaml: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_norway::from_str(yaml).expect("user-data is YAML");
    let f = &doc["write_files"][0];
    assert_eq!(f["path"], "/etc/arc-enroll/config.json", "{yaml}");
    assert_eq!(f["encoding"], "b64", "{yaml}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(f["content"].as_str().expect("content"))
        .expect("content is base64");
    serde_json::from_slice(&raw).expect("config is JSON")
}

/// `cloud-init schema --config-file`, installing cloud-init if missing. None = cannot run it.
fn cloud_init() -> Option<PathBuf> {
    let find = || {
        ["/usr/bin/cloud-init", "/usr/local/bin/cloud-init"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if find().is_none() {
        let _ = Command::new("bash")
            .arg(repo().join("tests/e2e/setup-host.sh"))
            .arg("schema")
            .status();
    }
    find()
}

fn skipped(what: &str, why: &str) {
    // Counted and printed so a skip is never silent (grep SKIPPED in the test output).
    eprintln!("SKIPPED 1 test: {what}: {why}");
}

fn schema_check(ci: &Path, text: &str, label: &str) {
    let dir = std::env::temp_dir().join(format!("arc-enroll-ud-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("{label}.yaml"));
    std::fs::write(&f, text).unwrap();
    let out = Command::new(ci)
        .args(["schema", "--config-file"])
        .arg(&f)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && all.contains("Valid cloud-config"),
        "{label}: cloud-init schema rejected it:\n{all}\n---\n{text}"
    );
}

#[test]
fn writes_only_given_settings_and_runs_connect_once() {
    let r = user_data(
        &[
            "user-data",
            "--resource-group",
            "rg1",
            "--resource-name",
            "{hostname}-{vm_uuid8}",
            "--timeout",
            "10m",
            "--install-agent",
        ],
        &[
            ("SUBSCRIPTION_ID", SUB),
            ("ARC_ENROLL_LOCATION", "westeurope"),
            // The workstation's proxy is not the VM's: left out, with a note.
            ("https_proxy", "http://corp-proxy:8080"),
        ],
    );
    r.expect_code(0);
    assert!(r.stdout.starts_with("#cloud-config\n"), "{}", r.stdout);
    let cfg = embedded_config(&r.stdout);
    assert_eq!(
        cfg,
        serde_json::json!({
            "subscription_id": SUB,
            "resource_group": "rg1",
            "location": "westeurope",
            "resource_name": "{hostname}-{vm_uuid8}",
            "timeout": "600s",
            "install_agent": true,
        })
    );
    assert!(r.stdout.contains("permissions: '0600'"));
    assert!(r.stdout.contains("- path: /etc/arc-enroll/config.json"));
    assert!(r.stdout.contains("  - [\"arc-enroll\",\"connect\"]\n"));
    assert!(
        r.stderr
            .contains("not putting the proxy http://corp-proxy:8080"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("corp-proxy"));
}

#[test]
fn base64_is_one_line_of_the_same_document() {
    let args = example_args("nexus-user-assigned.yaml");
    let plain = user_data(&args, &[]);
    plain.expect_code(0);
    let mut b64args = args.clone();
    b64args.push("--base64");
    let b = user_data(&b64args, &[]);
    b.expect_code(0);
    assert_eq!(b.stdout.lines().count(), 1);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b.stdout.trim_end())
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), plain.stdout);
    eprintln!(
        "user-data size (nexus-user-assigned): {} bytes, {} as base64",
        plain.stdout.len(),
        b.stdout.trim_end().len()
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    for args in [
        vec![
            "user-data",
            "--binary-url",
            "https://example.com/arc-enroll",
        ],
        vec!["user-data", "--binary-sha256", &"a".repeat(64)],
        vec![
            "user-data",
            "--binary-url",
            "ftp://example.com/x",
            "--binary-sha256",
            &"a".repeat(64),
        ],
        vec![
            "user-data",
            "--binary-url",
            "https://example.com/x",
            "--binary-sha256",
            "abc",
        ],
        vec!["user-data", "--subscription-id", "nope"],
    ] {
        let r = user_data(&args, &[]);
        r.expect_code(2);
        assert!(!r.stdout.contains("cloud-config"), "{args:?}: {}", r.stdout);
    }
}

#[test]
fn proxy_password_is_kept_when_given_and_warned_about() {
    let r = user_data(
        &["user-data", "--proxy", "http://user:s3cret@10.0.0.10:3128"],
        &[],
    );
    r.expect_code(0);
    assert_eq!(
        embedded_config(&r.stdout)["proxy"],
        "http://user:s3cret@10.0.0.10:3128"
    );
    assert!(r.stderr.contains("proxy password"), "{}", r.stderr);
    assert!(!r.stderr.contains("s3cret"), "password in the log");
}

#[test]
fn committed_examples_are_what_the_documented_commands_print() {
    let version_line = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("# Generated by"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for name in [
        "nexus-system-assigned.yaml",
        "nexus-user-assigned.yaml",
        "nexus-lockdown.yaml",
    ] {
        let r = user_data(&example_args(name), &[]);
        r.expect_code(0);
        let committed = read(&repo().join("examples").join(name));
        assert_eq!(
            version_line(&committed),
            version_line(&r.stdout),
            "examples/{name} is stale: regenerate it with the command in docs/user-data.md"
        );
    }
}

#[test]
fn cloud_init_schema_accepts_every_variant() {
    let Some(ci) = cloud_init() else {
        skipped(
            "cloud_init_schema_accepts_every_variant",
            "cloud-init is not installed and could not be installed",
        );
        return;
    };
    let sha = "0".repeat(64);
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("empty", vec!["user-data"]),
        ("system", example_args("nexus-system-assigned.yaml")),
        ("user", example_args("nexus-user-assigned.yaml")),
        (
            "fetch",
            vec![
                "user-data",
                "--proxy",
                "http://u:p@10.0.0.10:3128",
                "--binary-url",
                "https://example.com/arc-enroll",
                "--binary-sha256",
                &sha,
            ],
        ),
    ];
    for (label, args) in variants {
        let r = user_data(&args, &[]);
        r.expect_code(0);
        schema_check(&ci, &r.stdout, label);
    }
    for name in [
        "nexus-system-assigned.yaml",
        "nexus-user-assigned.yaml",
        "nexus-lockdown.yaml",
    ] {
        schema_check(&ci, &read(&repo().join("examples").join(name)), name);
    }
}

/// The runcmd download script, with its destination moved into `dst`.
fn fetch_script(yaml: &str, dst: &Path) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml; print(yaml.safe_load(sys.stdin)['runcmd'][0][2], end='')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(yaml.as_bytes()).ok()?;
            c.wait_with_output().ok()
        })?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.replace(
        "dst=/usr/local/bin/arc-enroll",
        &format!("dst={}", dst.display()),
    ))
}

#[test]
fn binary_is_fetched_through_the_proxy_and_its_checksum_checked() {
    if Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        skipped(
            "binary_is_fetched_through_the_proxy_and_its_checksum_checked",
            "python3-yaml is missing",
        );
        return;
    }
    let body = b"#!/bin/sh\necho fetched-binary-ran\n".to_vec();
    let b2 = body.clone();
    let server = Server::start(
        "127.0.0.1:0",
        Arc::new(move |req| {
            if req.path == "/arc-enroll" {
                Reply::Send {
                    status: 200,
                    headers: vec![],
                    body: b2.clone(),
                }
            } else {
                Reply::json(404, &serde_json::json!({}))
            }
        }),
    )
    .unwrap();
    let proxy = Tinyproxy::start(None);
    let sha = {
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&body)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let sb = Sandbox::new("userdata-fetch");
    let url = format!("{}/arc-enroll", server.url());
    for (good, sum) in [(false, "f".repeat(64)), (true, sha.clone())] {
        let dst = sb.root.join(if good { "good" } else { "bad" });
        let r = user_data(
            &[
                "user-data",
                "--proxy",
                &proxy.url(),
                "--binary-url",
                &url,
                "--binary-sha256",
                &sum,
            ],
            &[],
        );
        r.expect_code(0);
        assert!(r
            .stdout
            .contains("  - [\"/usr/local/bin/arc-enroll\",\"connect\"]\n"));
        let script = fetch_script(&r.stdout, &dst).expect("extract the download script");
        let out = Command::new("sh")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if good {
            assert!(out.status.success(), "download failed: {err}");
            assert_eq!(std::fs::read(&dst).unwrap(), body);
            let ran = Command::new(&dst).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&ran.stdout), "fetched-binary-ran\n");
        } else {
            assert!(!out.status.success(), "a wrong checksum must fail");
            assert!(err.contains("does not have SHA-256"), "{err}");
            assert!(
                !dst.exists(),
                "a binary with a wrong checksum was installed"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&sb.root)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().contains(".XXX") || {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.starts_with("good.") || n.starts_with("bad.")
                }
            })
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }
    let log = proxy.log_text();
    assert!(
        log.contains("/arc-enroll"),
        "the download did not go through the proxy:\n{log}"
    );
}

/// The seed-flow examples in cloud-init/: cloud-init accepts them, and the exact command line
/// their runcmd runs (the Nexus guide's variables) enrolls against the fakes, with the identity,
/// subscription, group, tenant, location and proxy taken from those variables.
#[test]
fn seed_flow_examples_are_valid_and_their_runcmd_enrolls() {
    use arc_enroll_fakes::imds::{FakeImds, ImdsConfig, UserIdentity};
    for name in [
        "seed-flow-system-assigned.yaml",
        "seed-flow-user-assigned.yaml",
    ] {
        let text = read(&repo().join("cloud-init").join(name));
        if let Some(ci) = cloud_init() {
            schema_check(&ci, &text, name);
        } else {
            skipped(
                "seed_flow_examples_are_valid_and_their_runcmd_enrolls (schema part)",
                "no cloud-init",
            );
        }
        // The runcmd entry: `- - env` followed by `    - VAR=value` lines and the command.
        let items: Vec<String> = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("- - env"))
            .skip(1)
            .map_while(|l| {
                l.trim_start()
                    .strip_prefix("- ")
                    .map(|v| v.trim_matches('"').to_string())
            })
            .collect();
        let (env, cmd): (Vec<&String>, Vec<&String>) = items
            .iter()
            .partition(|i| i.contains('=') && !i.starts_with('-') && !i.starts_with('{'));
        assert_eq!(cmd[0], "arc-enroll", "{name}: {items:?}");
        let uami = env
            .iter()
            .find_map(|e| e.strip_prefix("UAMI_ID="))
            .map(|s| s.to_string());
        // The fake VM lives where the example says: same tenant, subscription and group.
        let var = |v: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(&format!("{v}=")))
                .unwrap()
                .to_string()
        };
        let mut cfg = ImdsConfig {
            tenant_id: var("TENANT_ID"),
            subscription_id: var("SUBSCRIPTION_ID"),
            resource_group: var("RESOURCE_GROUP"),
            ..Default::default()
        };
        if let Some(id) = &uami {
            cfg = cfg.with_user_assigned(UserIdentity::new(id));
        }
        let imds = FakeImds::start(cfg);
        let sb = Sandbox::new("seedflow");
        let mut c = sb.cmd(&imds.url());
        for e in &env {
            let (k, v) = e.split_once('=').unwrap();
            c.env(k, v);
        }
        c.args(&cmd[1..]);
        let r = run_guarded(c, std::time::Duration::from_secs(60));
        r.expect_code(0)
            .log_has("environment SUBSCRIPTION_ID (seed flow variable)")
            .log_has("environment HTTPS_PROXY (seed flow variable)");
        let call = &sb.agent_calls_of("connect")[0];
        let argv: Vec<&str> = call["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for (flag, var) in [
            ("--subscription-id", "SUBSCRIPTION_ID"),
            ("--resource-group", "RESOURCE_GROUP"),
            ("--tenant-id", "TENANT_ID"),
            ("--location", "LOCATION"),
        ] {
            let want = env
                .iter()
                .find_map(|e| e.strip_prefix(&format!("{var}=")))
                .unwrap();
            assert!(
                argv.windows(2).any(|w| w[0] == flag && w[1] == want),
                "{name}: {flag} {want} in {argv:?}"
            );
        }
        assert_eq!(
            call["env"]["HTTPS_PROXY"], "http://169.254.0.11:3128",
            "{name}"
        );
        let tok = imds
            .requests()
            .into_iter()
            .find(|r| r.is_token_request())
            .unwrap();
        assert_eq!(
            tok.param("msi_res_id").map(str::to_string),
            uami,
            "{name}: identity selector"
        );
        assert!(!tok.via_proxy, "{name}: IMDS through the proxy");
    }
}

#[test]
fn private_relay_user_data_is_the_whole_nexus_flow() {
    let r = user_data(
        // No --subscription-id: "subscription" base64-encoded can line up with the fake IMDS's
        // tokens (their xms_mirid) in the scanner's 16-character fragments.
        &["user-data", "--private-relay", "--location", "eastus"],
        &[],
    );
    r.expect_code(0).log_has("169.254.0.11:3128");
    let cfg = embedded_config(&r.stdout);
    assert_eq!(cfg["private_relay"], true, "{cfg}");
    assert_eq!(
        cfg["proxy"], "http://169.254.0.11:3128",
        "the Nexus CSN proxy: {cfg}"
    );
    assert_eq!(
        cfg["no_proxy"], "169.254.169.254,localhost,127.0.0.1",
        "IMDS stays direct"
    );
    assert!(
        r.stdout.contains(r#"["arc-enroll","connect"]"#),
        "{}",
        r.stdout
    );
    // A proxy given for the VM wins over the Nexus default; --precreate alone adds no proxy.
    let r = user_data(
        &[
            "user-data",
            "--private-relay",
            "--proxy",
            "http://10.0.0.1:8080",
        ],
        &[],
    );
    assert_eq!(embedded_config(&r.stdout)["proxy"], "http://10.0.0.1:8080");
    let cfg = embedded_config(&user_data(&["user-data", "--precreate"], &[]).stdout);
    assert_eq!(
        (cfg["precreate"].as_bool(), cfg.get("proxy")),
        (Some(true), None)
    );
}
