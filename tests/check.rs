//! `check`, the Azure-side checks inside `connect`, and `--install-agent`, against the fake ARM
//! over HTTPS (test CA trusted through SSL_CERT_FILE) reached through a real proxy (tinyproxy).

mod common;

use arc_enroll_fakes::arm::{self, ArmConfig, FakeArm};
use common::*;

/// One test's world: sandbox, fake IMDS, fake ARM (sharing the sandbox's fake-Azure dir), proxy.
struct World {
    sb: Sandbox,
    imds: FakeImds,
    arm: FakeArm,
    proxy: Tinyproxy,
}

fn world(name: &str, tweak: impl FnOnce(&mut ArmConfig)) -> World {
    let sb = Sandbox::new(name);
    let imds = FakeImds::start(ImdsConfig::default());
    let arm = sb.fake_arm(tweak);
    let proxy = Tinyproxy::start(None);
    World {
        sb,
        imds,
        arm,
        proxy,
    }
}

impl World {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ARC_ENROLL_ARM_ENDPOINT".into(), self.arm.url()),
            (
                "SSL_CERT_FILE".into(),
                self.arm.ca_pem().display().to_string(),
            ),
            ("ARC_ENROLL_PROXY".into(), self.proxy.url()),
            (
                "ARC_ENROLL_CHECK_ENDPOINTS".into(),
                format!("{}/", self.arm.url()),
            ),
            ("ARC_ENROLL_TIME_SCALE".into(), "50".into()),
        ]
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.sb.run(&self.imds.url(), args, &env)
    }

    fn scope(&self) -> String {
        let c = self.imds.config();
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            c.subscription_id, c.resource_group
        )
    }

    /// Another machine's (or this one's) resource named `name` in the VM's resource group.
    fn existing_machine(&self, name: &str, vm_uuid: &str) {
        let c = self.imds.config();
        arm::put_machine(
            &self.sb.azure_dir,
            &c.subscription_id,
            &c.resource_group,
            name,
            vm_uuid,
        );
    }

    fn assert_proxied(&self) {
        let needle = format!("CONNECT 127.0.0.1:{}", self.arm.addr().port());
        let log = self.proxy.log_text();
        assert!(
            log.contains(&needle),
            "the proxy log lacks {needle:?}: ARM was not reached through the proxy\n{log}"
        );
    }
}

const OTHER_UUID: &str = "11111111-2222-3333-4444-555555555555";

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_against_a_healthy_fake_passes() {
    let w = world("check-healthy", |_| {});
    let r = w.run(&["check"], &[]);
    r.expect_code(0);
    for needle in [
        "OK       settings",
        "OK       imds",
        "OK       token: obtained: tid",
        "OK       agent: azcmagent",
        "OK       provider Microsoft.HybridCompute",
        "OK       provider Microsoft.AzureArcData",
        "OK       permissions",
        "OK       resource name web01",
    ] {
        r.out_has(needle);
    }
    r.out_has(&format!(
        "OK       endpoint {}/: reachable via proxy",
        w.arm.url()
    ));
    assert!(!r.stdout.contains("PROBLEM"), "{}", r.stdout);
    w.assert_proxied();
}

#[test]
fn check_json_is_one_object_with_every_finding() {
    let w = world("check-json", |c| {
        c.unregistered = vec!["Microsoft.GuestConfiguration".into()]
    });
    let r = w.run(&["check", "--json"], &[]);
    r.expect_code(8);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected:\n{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 8);
    assert_eq!(v["problems"], 1);
    let findings = v["findings"].as_array().unwrap();
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| f["status"] == "PROBLEM")
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["item"], "provider Microsoft.GuestConfiguration");
    assert!(bad[0]["advice"]
        .as_str()
        .unwrap()
        .contains("az provider register"));
    assert!(findings
        .iter()
        .any(|f| f["item"] == "token" && f["detail"].as_str().unwrap().contains("xms_mirid")));
}

#[test]
fn check_reports_an_unregistered_provider() {
    let w = world("check-providers", |c| {
        c.unregistered = vec!["Microsoft.HybridCompute".into()]
    });
    let r = w.run(&["check"], &[]);
    r.expect_code(8);
    r.out_has("PROBLEM  provider Microsoft.HybridCompute: registrationState \"NotRegistered\"");
    r.out_has("az provider register --namespace Microsoft.HybridCompute");
    r.out_has("check found 1 problem");
}

#[test]
fn check_reports_missing_permissions_with_roles_and_scope() {
    let w = world("check-perms", |c| c.permissions_never = true);
    let r = w.run(&["check"], &[]);
    r.expect_code(8);
    r.out_has("PROBLEM  permissions: the identity lacks Microsoft.HybridCompute/machines/read");
    r.out_has("Azure Connected Machine Resource Manager");
    r.out_has("HybridCompute Machine ListAccessDetails Action");
    r.out_has(&w.scope());
}

#[test]
fn check_skips_permissions_the_token_cannot_read() {
    let w = world("check-perms-403", |c| c.permissions_forbidden = true);
    let r = w.run(&["check"], &[]);
    r.expect_code(0);
    r.out_has("SKIPPED  permissions: the token cannot read its permissions");
    r.out_has("AuthorizationFailed");
}

#[test]
fn check_reports_a_name_taken_by_another_machine() {
    let w = world("check-name", |_| {});
    w.existing_machine("web01", OTHER_UUID);
    let r = w.run(&["check"], &[]);
    r.expect_code(8);
    r.out_has("PROBLEM  resource name web01:");
    r.out_has(&format!(
        "vmUuid {OTHER_UUID}, but this machine's product_uuid is {PRODUCT_UUID}"
    ));
    r.out_has("--resource-name '{hostname}-{vm_uuid8}'");
}

#[test]
fn check_accepts_a_name_held_by_this_machine() {
    let w = world("check-name-ours", |_| {});
    w.existing_machine("web01", PRODUCT_UUID);
    let r = w.run(&["check"], &[]);
    r.expect_code(0);
    r.out_has("OK       resource name web01:");
    r.out_has("is this machine");
}

#[test]
fn check_names_an_untrusted_certificate() {
    let w = world("check-untrusted", |c| c.untrusted = true);
    let r = w.run(&["check"], &[]);
    r.expect_code(8);
    r.out_has(&format!(
        "PROBLEM  endpoint {}/: not reachable via proxy",
        w.arm.url()
    ));
    r.out_has("TLS failed");
    // The trust store in effect is SSL_CERT_FILE (the test CA), not the system store; the
    // presented issuer is named (seen through the same proxy).
    r.out_has("not trusted (UnknownIssuer: its issuer is not in SSL_CERT_FILE (");
    r.out_has(&format!(
        "(issued by \"CN={}\") is not issued by a CA in SSL_CERT_FILE",
        arc_enroll_fakes::arm::UNTRUSTED_CA_NAME
    ));
    w.assert_proxied();
}

#[test]
fn check_reports_an_endpoint_the_proxy_refuses() {
    let w = world("check-proxy-refuses", |_| {});
    // tinyproxy only lets 127.0.0.1/localhost through.
    let r = w.run(
        &["check"],
        &[(
            "ARC_ENROLL_CHECK_ENDPOINTS",
            &format!("{}/,https://blocked.example.invalid/", w.arm.url()),
        )],
    );
    r.expect_code(8);
    r.out_has("PROBLEM  endpoint https://blocked.example.invalid/: not reachable via proxy");
    r.out_has(&format!("OK       endpoint {}/", w.arm.url()));
}

#[test]
fn check_rides_out_arm_throttling() {
    let w = world("check-429", |c| {
        c.throttle_first = 2;
        c.retry_after_secs = 3;
    });
    let r = w.run(&["check"], &[]);
    r.expect_code(0);
    r.log_has("HTTP 429");
    r.log_has("Retry-After 3.0s");
    let statuses: Vec<u16> = w.arm.requests().iter().map(|q| q.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// connect: the Azure side before the agent

#[test]
fn connect_waits_for_permissions_then_succeeds() {
    let w = world("connect-perms-later", |c| c.permissions_missing_polls = 2);
    let r = w.run(&["connect"], &[("ARC_ENROLL_TIMEOUT", "10m")]);
    r.expect_code(0);
    r.log_has("not ready: the identity lacks Microsoft.HybridCompute/machines/read");
    r.log_has("polling until");
    r.log_has("everything needed is in place now");
    let reads = w.arm.requests_to(arm::PERMISSIONS_PATH_SUFFIX);
    assert_eq!(reads.len(), 3, "two polls without roles, one with");
    // Roles show in fresh tokens only: one token per poll, then one for the agent attempt.
    assert!(
        w.imds.token_requests() >= 3,
        "{} token requests",
        w.imds.token_requests()
    );
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
    w.assert_proxied();
}

#[test]
fn connect_without_permissions_at_the_deadline_exits_4_naming_roles_and_scope() {
    let w = world("connect-perms-never", |c| c.permissions_never = true);
    let r = w.run(&["connect"], &[("ARC_ENROLL_TIMEOUT", "2m")]);
    r.expect_code(4);
    r.out_has("Azure Connected Machine Resource Manager");
    r.out_has("HybridCompute Machine ListAccessDetails Action");
    r.out_has(&format!("--scope {}", w.scope()));
    assert!(
        w.sb.agent_calls_of("connect").is_empty(),
        "the agent must not run"
    );
    assert!(w.arm.requests_to(arm::PERMISSIONS_PATH_SUFFIX).len() >= 2);
}

#[test]
fn connect_with_roles_and_providers_missing_waits_naming_both_then_exits_4() {
    let w = world("connect-providers", |c| {
        c.permissions_never = true;
        c.unregistered = vec!["Microsoft.HybridConnectivity".into()]
    });
    let r = w.run(&["connect"], &[("ARC_ENROLL_TIMEOUT", "2m")]);
    r.expect_code(4);
    r.log_has("resource provider Microsoft.HybridConnectivity is NotRegistered");
    r.log_has("the identity lacks Microsoft.HybridCompute/machines/read");
    assert!(w.sb.agent_calls_of("connect").is_empty());
}

/// With the roles in place the providers are not read (issue 17: a fleet shares ARM's budget);
/// the agent's own write names the unregistered namespace, retried until the deadline, exit 4.
#[test]
fn connect_with_an_unregistered_provider_learns_it_from_the_agent_and_exits_4_with_register_advice()
{
    let w = world("connect-providers-agent", |_| {});
    let store = arc_enroll_fakes::store::Store::new(&w.sb.azure_dir);
    store
        .set_authz(&arc_enroll_fakes::store::Authz {
            unregistered_providers: vec!["Microsoft.HybridCompute".into()],
            ..Default::default()
        })
        .unwrap();
    let r = w.run(&["connect"], &[("ARC_ENROLL_TIMEOUT", "2m")]);
    r.expect_code(4);
    r.log_has("isn't registered to use namespace 'Microsoft.HybridCompute'");
    r.out_has("az provider register --namespace Microsoft.HybridCompute");
    assert!(!w.sb.agent_calls_of("connect").is_empty());
    assert!(
        w.arm
            .requests()
            .iter()
            .all(|q| !q.path.ends_with("/providers/Microsoft.HybridCompute")),
        "no provider read on the happy path"
    );
}

#[test]
fn connect_refuses_a_name_taken_by_another_machine_before_the_agent_runs() {
    let w = world("connect-name-taken", |_| {});
    w.existing_machine("web01", OTHER_UUID);
    let r = w.run(&["connect"], &[]);
    r.expect_code(6);
    r.out_has("found before running the agent");
    r.out_has("--resource-name '{hostname}-{vm_uuid8}'");
    assert!(
        w.sb.agent_calls_of("connect").is_empty(),
        "no agent connect call"
    );
}

#[test]
fn connect_proceeds_when_the_name_is_this_machines() {
    let w = world("connect-name-ours", |_| {});
    w.existing_machine("web01", PRODUCT_UUID);
    let r = w.run(&["connect"], &[]);
    r.expect_code(0);
    r.log_has("already exists and is this machine");
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn connect_honours_arm_retry_after() {
    let w = world("connect-429", |c| {
        c.throttle_first = 1;
        c.retry_after_secs = 2;
    });
    let r = w.run(&["connect"], &[]);
    r.expect_code(0);
    r.log_has("HTTP 429: TooManyRequests");
    r.log_has("server asked for Retry-After 2.0s");
    let first = &w.arm.requests()[..2];
    assert_eq!(first[0].status, 429);
    assert_eq!(first[1].status, 200);
    assert!(
        first[1].at - first[0].at >= std::time::Duration::from_millis(35),
        "{first:?}"
    );
}

#[test]
fn connect_falls_back_to_the_agent_when_permissions_cannot_be_read() {
    let w = world("connect-perms-403", |c| c.permissions_forbidden = true);
    let r = w.run(&["connect"], &[]);
    r.expect_code(0);
    r.log_has("the token cannot read its permissions");
    r.log_has("relying on the agent's own answer");
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn connect_with_an_untrusted_arm_certificate_says_so_and_leaves_it_to_the_agent() {
    let w = world("connect-untrusted", |c| c.untrusted = true);
    let r = w.run(&["connect"], &[]);
    r.expect_code(0);
    r.log_has("cannot check permissions in Azure (TLS failed");
    r.log_has("UnknownIssuer");
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn the_token_never_reaches_the_log_or_the_arm_record() {
    let w = world("connect-secret", |c| c.permissions_missing_polls = 1);
    let r = w.run(&["connect", "-vv"], &[]);
    r.expect_code(0);
    for q in w.arm.requests() {
        if q.path.starts_with("/subscriptions") && q.status != 429 {
            assert!(
                q.bearer_oid.is_some(),
                "{} came without a bearer token",
                q.path
            );
        }
    }
    // Every token the fake IMDS minted carries this tenant; a leaked JWT would show its header.
    assert!(
        !r.stderr.contains("eyJ0eXAiOiJKV1Qi"),
        "a JWT leaked into the log"
    );
    assert!(
        !r.stdout.contains("eyJ0eXAiOiJKV1Qi"),
        "a JWT leaked into stdout"
    );
}

// ---------------------------------------------------------------------------------------------
// --install-agent

const INSTALLER: &str = r#"#!/bin/bash
# A stand-in for install_linux_azcmagent.sh (FACTS §4.2): takes -p/--proxy and -o/--output,
# installs "the agent"; on failure it writes the code to --output as the real one does.
set -e
proxy=""
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--proxy) proxy="$2"; shift 2 ;;
    -o|--output) output="$2"; shift 2 ;;
    *) echo "unknown argument $1"; exit 1 ;;
  esac
done
{ echo "proxy=$proxy"; echo "https_proxy=$https_proxy"; echo "no_proxy=$NO_PROXY"; } > "$INSTALL_RECORD"
if [ -n "$INSTALL_FAIL" ]; then
  echo "Installing azcmagent"
  echo "FATAL: failed to install the package (AZCM0143)"
  [ -n "$output" ] && echo '{"status":"failed","error":{"code":"AZCM0143","message":"failed to install the package"}}' > "$output"
  exit 1
fi
mkdir -p "$(dirname "$INSTALL_TARGET")"
cp "$INSTALL_SOURCE" "$INSTALL_TARGET"
chmod 755 "$INSTALL_TARGET"
echo "Latest version of azcmagent is installed."
"#;

fn install_world(name: &str) -> (World, String, String) {
    let w = world(name, |c| c.installer = Some(INSTALLER.into()));
    let target = w.sb.root.join("opt/azcmagent/bin/azcmagent");
    let record = w.sb.root.join("installer-record");
    (
        w,
        target.display().to_string(),
        record.display().to_string(),
    )
}

#[test]
fn install_agent_downloads_and_runs_the_installer_through_the_proxy() {
    let (w, target, record) = install_world("install-ok");
    let url = format!("{}/installer.sh", w.arm.url());
    let src = fake_agent_bin().display().to_string();
    let tmp = w.sb.root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let tmp_s = tmp.display().to_string();
    let r = w.run(
        &["connect", "--install-agent"],
        &[
            ("ARC_ENROLL_AZCMAGENT", &target),
            ("ARC_ENROLL_AGENT_INSTALLER_URL", &url),
            ("INSTALL_SOURCE", &src),
            ("INSTALL_TARGET", &target),
            ("INSTALL_RECORD", &record),
            ("TMPDIR", &tmp_s),
        ],
    );
    r.expect_code(0);
    r.log_has("it will be installed after the token is obtained");
    r.log_has(&format!("downloading the agent installer from {url} via"));
    r.log_has("Latest version of azcmagent is installed.");
    r.log_has(&format!("installed at {target}"));
    let rec = read(std::path::Path::new(&record));
    assert!(rec.contains(&format!("proxy={}", w.proxy.url())), "{rec}");
    assert!(
        rec.contains(&format!("https_proxy={}", w.proxy.url())),
        "{rec}"
    );
    assert!(rec.contains("169.254.169.254"), "{rec}");
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
    assert_eq!(w.arm.requests_to("/installer.sh").len(), 1);
    w.assert_proxied();
    // The private copy of the installer is gone.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}

#[test]
fn install_agent_failure_exits_5_with_the_installers_last_lines() {
    let (w, target, record) = install_world("install-fails");
    let url = format!("{}/installer.sh", w.arm.url());
    let src = fake_agent_bin().display().to_string();
    let r = w.run(
        &["connect", "--install-agent"],
        &[
            ("ARC_ENROLL_AZCMAGENT", &target),
            ("ARC_ENROLL_AGENT_INSTALLER_URL", &url),
            ("INSTALL_SOURCE", &src),
            ("INSTALL_TARGET", &target),
            ("INSTALL_RECORD", &record),
            ("INSTALL_FAIL", "1"),
        ],
    );
    r.expect_code(5);
    r.out_has("the agent installer from");
    r.out_has("failed (exit 1)");
    r.out_has("FATAL: failed to install the package (AZCM0143)");
    assert!(!std::path::Path::new(&target).exists());
}

#[test]
fn install_agent_refuses_what_is_not_a_script() {
    let (w, target, _record) = install_world("install-404");
    let url = format!("{}/no-such-installer.sh", w.arm.url());
    let r = w.run(
        &["connect", "--install-agent"],
        &[
            ("ARC_ENROLL_AZCMAGENT", &target),
            ("ARC_ENROLL_AGENT_INSTALLER_URL", &url),
        ],
    );
    r.expect_code(5);
    r.out_has("answered HTTP 404");
}
