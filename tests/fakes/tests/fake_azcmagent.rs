//! Black-box tests of the `fake-azcmagent` binary (temp dirs, no root, no network).

use arc_enroll_fakes::jwt;
use arc_enroll_fakes::store::{Authz, Store};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fake-azcmagent");
const SUB: &str = "22222222-2222-2222-2222-222222222222";
const TID: &str = "11111111-1111-1111-1111-111111111111";

static N: AtomicUsize = AtomicUsize::new(0);

/// One fake "Azure" and any number of fake machines (each its own agent dir and sysroot).
struct World {
    root: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let root = std::env::temp_dir().join(format!(
            "fake-azcmagent-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        World { root }
    }

    fn azure(&self) -> Store {
        Store::new(self.root.join("azure"))
    }

    /// Creates machine `m` (product_uuid `uuid`, hostname `m`) if needed; returns its agent dir.
    fn machine(&self, m: &str, uuid: &str) -> PathBuf {
        let sys = self.root.join(m).join("sysroot");
        fs::create_dir_all(sys.join("sys/class/dmi/id")).unwrap();
        fs::create_dir_all(sys.join("etc")).unwrap();
        fs::write(
            sys.join("sys/class/dmi/id/product_uuid"),
            format!("{uuid}\n"),
        )
        .unwrap();
        fs::write(sys.join("etc/hostname"), format!("{m}\n")).unwrap();
        self.root.join(m).join("agent")
    }

    fn cmd(&self, m: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("FAKE_AZCMAGENT_DIR", self.root.join(m).join("agent"))
            .env("FAKE_AZCMAGENT_SYSROOT", self.root.join(m).join("sysroot"))
            .env("FAKE_AZURE_DIR", self.root.join("azure"))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, m: &str, args: &[&str]) -> Output {
        self.cmd(m, args).output().unwrap()
    }

    /// A 0600 config file in a 0700 directory, like arc-enroll writes it.
    fn config_file(&self, m: &str, content: &Value) -> String {
        let dir = self.root.join(m).join("secret");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let p = dir.join("connect.json");
        fs::write(&p, content.to_string()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    }

    fn behaviour(&self, m: &str, b: &Value) {
        let d = self.root.join(m).join("agent");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("behaviour.json"), b.to_string()).unwrap();
    }

    fn calls(&self, m: &str) -> Vec<Value> {
        fs::read_to_string(self.root.join(m).join("agent/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn show(&self, m: &str) -> Value {
        let o = self.run(m, &["show", "-j"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// connect with the token on the command line and the usual mandatory flags.
    fn connect(&self, m: &str, token: &str, extra: &[&str]) -> Output {
        let mut a = vec![
            "connect",
            "--access-token",
            token,
            "--subscription-id",
            SUB,
            "--resource-group",
            "rg1",
            "--location",
            "westeurope",
        ];
        a.extend_from_slice(extra);
        self.run(m, &a)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn token_with(claims: Value) -> String {
    let mut base = json!({
        "aud": "https://management.azure.com/",
        "iss": format!("https://sts.windows.net/{TID}/"),
        "tid": TID,
        "appid": "aaaaaaaa-0000-0000-0000-000000000001",
        "oid": "bbbbbbbb-0000-0000-0000-000000000002",
        "iat": jwt::now_unix() - 60,
        "nbf": jwt::now_unix() - 60,
        "exp": jwt::now_unix() + 3600,
    });
    for (k, v) in claims.as_object().unwrap() {
        base[k] = v.clone();
    }
    jwt::mint(&base)
}

fn token() -> String {
    token_with(json!({}))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn connect_via_config_file_is_recorded_with_modes_and_env() {
    let w = World::new("cfg");
    w.machine("m1", "AAAAAAAA-1111-2222-3333-444444444444");
    let tok = token();
    let cfg = w.config_file(
        "m1",
        &json!({"access-token": tok, "subscription-id": SUB, "resource-group": "RG1",
                "location": "westeurope", "tenant-id": TID, "resource-name": "vm-one",
                "tags": "env=test,Owner='Shared Infra'", "cloud": "AzureCloud"}),
    );
    let o = w
        .cmd(
            "m1",
            &["connect", "--config", &cfg, "--location", "northeurope"],
        )
        .env("NO_PROXY", "169.254.169.254,localhost")
        .env("HTTPS_PROXY", "http://10.0.0.1:3128")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("INFO    Connecting machine to Azure... This might take a few minutes."));
    assert!(out.contains(" 100% [===============]"));
    assert!(out.contains("  INFO    Connected machine to Azure"));
    assert!(out.contains(&format!(
        "INFO    Machine overview page: https://portal.azure.com/#@{TID}/resource/subscriptions/{SUB}/resourceGroups/RG1/providers/Microsoft.HybridCompute/machines/vm-one/overview"
    )));
    assert!(!out.contains(&tok), "the agent must not echo the token");

    let calls = w.calls("m1");
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c["argv"][0], "connect");
    assert_eq!(c["config_file"]["mode"], "600");
    assert_eq!(c["config_file"]["dir_mode"], "700");
    assert_eq!(c["config_file"]["path"], cfg.as_str());
    assert_eq!(c["config_file"]["content"]["access-token"], tok.as_str());
    assert_eq!(c["env"]["NO_PROXY"], "169.254.169.254,localhost");
    assert_eq!(c["env"]["HTTPS_PROXY"], "http://10.0.0.1:3128");
    assert!(c["env"].get("no_proxy").is_none());
    assert!(c["uid"].is_u64() && c["time"].is_string());

    // command line wins over the file
    let s = w.show("m1");
    assert_eq!(s["location"], "northeurope");
    assert_eq!(s["resourceName"], "vm-one");
    assert_eq!(s["vmUuid"], "aaaaaaaa-1111-2222-3333-444444444444");
    let m = w
        .azure()
        .get_machine(SUB, "rg1", "VM-ONE")
        .unwrap()
        .unwrap();
    assert_eq!(m.tags["Owner"], "Shared Infra");
    assert_eq!(m.properties.vm_uuid, "aaaaaaaa-1111-2222-3333-444444444444");
    assert_eq!(m.properties.status, "Connected");
    assert_eq!(m.tenant_id, TID);
}

#[test]
fn invalid_tokens_exit_12_and_missing_things_have_their_codes() {
    let w = World::new("tok");
    w.machine("m1", "u1");
    for (what, t) in [
        ("empty", String::new()),
        ("null", "null".to_string()),
        ("not a jwt", "abc.def".to_string()),
        ("bearer prefix", format!("Bearer {}", token())),
        ("expired", token_with(json!({"exp": jwt::now_unix() - 10}))),
        ("no exp", token_with(json!({"exp": null}))),
        (
            "graph audience",
            token_with(json!({"aud": "https://graph.microsoft.com/"})),
        ),
        (
            "usgov audience in public cloud",
            token_with(json!({"aud": "https://management.usgovcloudapi.net/"})),
        ),
    ] {
        let o = w.connect("m1", &t, &[]);
        assert_eq!(code(&o), 12, "{what}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("AZCM0012"),
            "{what}"
        );
    }
    // all ARM audience spellings are fine
    for aud in [
        "https://management.core.windows.net/",
        "https://management.core.windows.net",
        "https://management.azure.com",
    ] {
        let o = w.connect("m1", &token_with(json!({"aud": aud})), &[]);
        assert_eq!(code(&o), 0, "{aud}: {}", text(&o));
        assert_eq!(code(&w.run("m1", &["disconnect", "--force-local-only"])), 0);
    }
    let o = w.connect(
        "m1",
        &token_with(json!({"aud": "https://management.usgovcloudapi.net/"})),
        &["--cloud", "AzureUSGovernment"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("https://portal.azure.us/"));
    w.run("m1", &["disconnect", "-f"]);

    // no credential: device code would be interactive -> exit 1 at once
    let t0 = Instant::now();
    let o = w.run(
        "m1",
        &["connect", "-s", SUB, "-g", "rg1", "-l", "westeurope"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(5));
    // mandatory parameters
    let o = w.run("m1", &["connect", "--access-token", &token(), "-g", "rg1"]);
    assert_eq!(code(&o), 16, "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("Missing mandatory parameter") && s.contains("AZCM0016"),
        "{s}"
    );
    // config file path wrong
    let o = w.run("m1", &["connect", "--config", "/nonexistent/x.json"]);
    assert_eq!(code(&o), 19, "{}", text(&o));
    // subscription by name cannot be looked up
    let o = w.run(
        "m1",
        &[
            "connect",
            "--access-token",
            &token(),
            "-s",
            "My Sub",
            "-g",
            "rg1",
            "-l",
            "westeurope",
        ],
    );
    assert_eq!(code(&o), 68, "{}", text(&o));
    // --log-stderr moves the FATAL line to stderr
    let o = w.connect("m1", "null", &["--log-stderr"]);
    assert_eq!(code(&o), 12);
    assert!(String::from_utf8_lossy(&o.stderr).contains("FATAL"));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("FATAL"));
    // -j: machine-readable failure
    let o = w.connect("m1", "null", &["-j"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["code"], "AZCM0012");
    // only the successful connects above (one resource, updated each time) reached "Azure"
    assert_eq!(w.azure().list_machines().unwrap().len(), 1);
}

#[test]
fn forced_exit_codes_are_consumed_in_order() {
    let w = World::new("forced");
    w.machine("m1", "u1");
    w.behaviour(
        "m1",
        &json!({"connect_exits": [42, 26, 0, 62], "version": "1.70.1.2"}),
    );
    let o = w.connect("m1", "null", &[]);
    assert_eq!(
        code(&o),
        42,
        "forced codes come before token validation: {}",
        text(&o)
    );
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.starts_with("FATAL   ") && s.trim_end().ends_with("AZCM0042"),
        "{s}"
    );
    let b: Value =
        serde_json::from_slice(&fs::read(w.root.join("m1/agent/behaviour.json")).unwrap()).unwrap();
    assert_eq!(b["connect_exits"], json!([26, 0, 62]));
    assert_eq!(b["version"], "1.70.1.2");
    assert_eq!(code(&w.connect("m1", &token(), &[])), 26);
    // 0 = behave normally (and still consumed)
    assert_eq!(code(&w.connect("m1", &token(), &[])), 0);
    assert_eq!(w.show("m1")["agentVersion"], "1.70.1.2");
    assert_eq!(code(&w.connect("m1", &token(), &[])), 62);
    // exhausted: normal again (already connected)
    assert_eq!(code(&w.connect("m1", &token(), &[])), 67);
    let v = w.run("m1", &["version"]);
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        "azcmagent version 1.70.1.2"
    );

    w.behaviour(
        "m1",
        &json!({"connect_exits": [26], "exit_messages": false}),
    );
    let o = w.connect("m1", &token(), &[]);
    assert_eq!(code(&o), 26);
    assert!(o.stdout.is_empty(), "{}", text(&o));
}

#[test]
fn name_conflict_across_machines_and_reconnect_of_same_machine() {
    let w = World::new("conflict");
    w.machine("a", "UUID-A");
    w.machine("b", "uuid-b");
    let name = ["--resource-name", "shared-name"];
    assert_eq!(code(&w.connect("a", &token(), &name)), 0);
    let o = w.connect("b", &token(), &name);
    assert_eq!(code(&o), 44, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("AZCM0044"));
    assert_eq!(w.show("b")["status"], "Disconnected");
    // machine a again after a local reset: same vmUuid -> update, vmId kept
    let vm_id = w.show("a")["vmId"].clone();
    assert_eq!(code(&w.run("a", &["disconnect", "--force-local-only"])), 0);
    assert_eq!(code(&w.connect("a", &token(), &name)), 0);
    assert_eq!(w.show("a")["vmId"], vm_id);
    assert_eq!(w.azure().list_machines().unwrap().len(), 1);
    // default resource name = hostname
    assert_eq!(code(&w.connect("b", &token(), &[])), 0);
    assert_eq!(w.show("b")["resourceName"], "b");
    assert_eq!(w.azure().list_machines().unwrap().len(), 2);
}

#[test]
fn clone_keeps_original_state_and_show_vm_uuid_override() {
    let w = World::new("clone");
    w.machine("orig", "uuid-orig");
    assert_eq!(code(&w.connect("orig", &token(), &[])), 0);
    // a clone: same agent state, other product_uuid
    let clone_agent = w.machine("clone", "uuid-clone");
    fs::create_dir_all(&clone_agent).unwrap();
    fs::copy(
        w.root.join("orig/agent/agent.json"),
        clone_agent.join("agent.json"),
    )
    .unwrap();
    let s = w.show("clone");
    assert_eq!(s["status"], "Connected");
    assert_eq!(s["vmUuid"], "uuid-orig");
    assert_eq!(code(&w.connect("clone", &token(), &[])), 67);
    w.behaviour("orig", &json!({"show_vm_uuid": "override-uuid"}));
    assert_eq!(w.show("orig")["vmUuid"], "override-uuid");
}

#[test]
fn disconnect_local_only_and_full() {
    let w = World::new("disc");
    w.machine("m1", "u1");
    assert_eq!(code(&w.connect("m1", &token(), &["-n", "vm1"])), 0);
    assert_eq!(code(&w.connect("m1", &token(), &["-n", "vm1"])), 67);
    let o = w.run("m1", &["disconnect", "--force-local-only"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(w.show("m1")["status"], "Disconnected");
    assert!(w.azure().get_machine(SUB, "rg1", "vm1").unwrap().is_some());
    // idempotent
    assert_eq!(code(&w.run("m1", &["disconnect", "-f"])), 0);
    // full disconnect when not connected
    assert_eq!(
        code(&w.run("m1", &["disconnect", "--access-token", &token()])),
        63
    );

    assert_eq!(code(&w.connect("m1", &token(), &["-n", "vm1"])), 0);
    assert_eq!(
        code(&w.run("m1", &["disconnect"])),
        1,
        "no credential: device code"
    );
    assert_eq!(
        code(&w.run("m1", &["disconnect", "--access-token", "null"])),
        12
    );
    let cfg = w.config_file("m1", &json!({"access-token": token()}));
    let o = w.run("m1", &["disconnect", "--config", &cfg]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(w.azure().get_machine(SUB, "rg1", "vm1").unwrap().is_none());
    assert_eq!(w.show("m1")["status"], "Disconnected");

    // resource deleted behind the agent's back -> 43, local state untouched
    assert_eq!(code(&w.connect("m1", &token(), &["-n", "vm1"])), 0);
    w.azure().delete_machine(SUB, "rg1", "vm1").unwrap();
    assert_eq!(
        code(&w.run("m1", &["disconnect", "--access-token", &token()])),
        43
    );
    assert_eq!(w.show("m1")["status"], "Connected");
}

#[test]
fn authz_propagation_and_unregistered_provider_give_42() {
    let w = World::new("authz");
    w.machine("m1", "u1");
    let az = w.azure();
    az.set_authz(&Authz {
        deny_connect_attempts: 2,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..2 {
        let o = w.connect("m1", &token(), &["-n", "vm1"]);
        assert_eq!(code(&o), 42, "{}", text(&o));
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains("The client 'aaaaaaaa-0000-0000-0000-000000000001' with object id 'bbbbbbbb-0000-0000-0000-000000000002' does not have authorization to perform action 'Microsoft.HybridCompute/machines/write' over scope '/subscriptions/"), "{s}");
    }
    assert_eq!(code(&w.connect("m1", &token(), &["-n", "vm1"])), 0);
    w.run("m1", &["disconnect", "-f"]);
    az.set_authz(&Authz {
        unregistered_providers: vec!["Microsoft.HybridCompute".into()],
        ..Default::default()
    })
    .unwrap();
    let o = w.connect("m1", &token(), &["-n", "vm2"]);
    assert_eq!(code(&o), 42);
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("The subscription isn't registered to use namespace 'Microsoft.HybridCompute'"));
}

#[test]
fn config_round_trip() {
    let w = World::new("config");
    w.machine("m1", "u1");
    let get = |p: &str| {
        let o = w.run("m1", &["config", "get", p]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(get("proxy.url"), "");
    assert_eq!(get("config.mode"), "full");
    assert_eq!(get("extensions.allowlist"), "[]");
    let o = w.run(
        "m1",
        &["config", "set", "proxy.url", "http://10.1.2.3:3128"],
    );
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout)
        .starts_with("Config property proxy.url set to value http://10.1.2.3:3128\n"));
    assert_eq!(get("proxy.url"), "http://10.1.2.3:3128");
    assert_eq!(
        code(&w.run("m1", &["config", "set", "proxy.bypass", "ARM,Arc"])),
        0
    );
    assert_eq!(
        code(&w.run("m1", &["config", "set", "proxy.bypass", "AAD", "--add"])),
        0
    );
    assert_eq!(
        code(&w.run("m1", &["config", "set", "proxy.bypass", "Arc", "-r"])),
        0
    );
    assert_eq!(get("proxy.bypass"), "[ARM,AAD]");
    assert_eq!(
        code(&w.run(
            "m1",
            &["config", "set", "proxy.bypass", "management.azure.com"]
        )),
        23
    );
    assert_eq!(
        code(&w.run(
            "m1",
            &[
                "config",
                "set",
                "extensions.allowlist",
                "Microsoft.Azure.Monitor/AzureMonitorLinuxAgent"
            ]
        )),
        0
    );
    assert_eq!(
        code(&w.run(
            "m1",
            &["config", "set", "incomingconnections.ports", "22,6516"]
        )),
        0
    );
    assert_eq!(
        code(&w.run("m1", &["config", "set", "config.mode", "monitor"])),
        0
    );
    assert_eq!(
        code(&w.run("m1", &["config", "set", "extensions.enabled", "maybe"])),
        23
    );
    assert_eq!(
        code(&w.run("m1", &["config", "set", "proxy.url", "10.1.2.3:3128"])),
        23
    );
    assert_eq!(code(&w.run("m1", &["config", "get", "no.such.prop"])), 23);
    assert_eq!(code(&w.run("m1", &["config", "bogus"])), 101);

    let o = w.run("m1", &["config", "list"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.starts_with("Local Configuration Settings\n"));
    assert!(
        s.contains("  incomingconnections.enabled (preview)                 : true\n"),
        "{s}"
    );
    assert!(s.contains("  incomingconnections.ports (preview)                   : [22,6516]\n"));
    assert!(s.contains(
        "  proxy.url                                             : http://10.1.2.3:3128\n"
    ));
    assert!(s.contains("  config.mode                                           : monitor\n"));
    let o = w.run("m1", &["config", "list", "-j"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ls = v["LocalSettings"].as_array().unwrap();
    assert_eq!(ls.len(), 12);
    let find = |k: &str| ls.iter().find(|e| e["Key"] == k).unwrap()["Value"].clone();
    assert_eq!(find("proxy.bypass"), json!(["ARM", "AAD"]));
    assert_eq!(find("extensions.blocklist"), json!([]));
    assert_eq!(find("guestconfiguration.agent.cpulimit"), "5");
    assert_eq!(w.show("m1")["httpsProxy"], "http://10.1.2.3:3128");

    assert_eq!(code(&w.run("m1", &["config", "clear", "proxy.url"])), 0);
    assert_eq!(get("proxy.url"), "");
    // settings survive connect/disconnect
    assert_eq!(code(&w.connect("m1", &token(), &[])), 0);
    assert_eq!(code(&w.run("m1", &["disconnect", "-f"])), 0);
    assert_eq!(get("config.mode"), "monitor");

    // an "old agent" that does not know a property
    w.behaviour("m1", &json!({"unknown_config_props": ["config.mode"]}));
    let o = w.run("m1", &["config", "set", "config.mode", "full"]);
    assert_eq!(code(&o), 23);
    assert!(String::from_utf8_lossy(&o.stdout).contains("unknown property"));
    assert_eq!(code(&w.run("m1", &["config", "get", "config.mode"])), 23);
    let o = w.run("m1", &["config", "list"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("config.mode"));
}

#[test]
fn show_json_shape_and_text() {
    let w = World::new("show");
    w.machine("m1", "u1");
    let keys = [
        "status",
        "resourceName",
        "resourceGroup",
        "subscriptionId",
        "tenantId",
        "location",
        "cloud",
        "resourceId",
        "vmId",
        "vmUuid",
        "agentVersion",
        "lastHeartbeat",
        "correlationId",
        "privateLinkScope",
        "httpsProxy",
    ];
    let s = w.show("m1");
    for k in keys {
        assert!(s[k].is_string(), "{k} missing in {s}");
    }
    assert_eq!(s["status"], "Disconnected");
    assert_eq!(s["resourceName"], "");
    assert_eq!(s["resourceId"], "");
    assert_eq!(s["agentVersion"], "1.61.03319.2737");

    let corr = "33333333-3333-3333-3333-333333333333";
    assert_eq!(
        code(&w.connect("m1", &token(), &["--correlation-id", corr])),
        0
    );
    let s = w.show("m1");
    assert_eq!(s["status"], "Connected");
    assert_eq!(s["resourceGroup"], "rg1");
    assert_eq!(s["subscriptionId"], SUB);
    assert_eq!(s["tenantId"], TID);
    assert_eq!(s["cloud"], "AzureCloud");
    assert_eq!(s["correlationId"], corr);
    assert_eq!(
        s["resourceId"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1"
        )
    );
    let o = w.run("m1", &["show"]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("Resource Name                           : m1\n"),
        "{t}"
    );
    assert!(t.contains("Agent Status                            : Connected\n"));
    let o = w.run("m1", &["show", "status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, json!({"status": "Connected"}));
}

#[test]
fn hang_is_killable_and_kill_self_and_noise() {
    let w = World::new("hang");
    w.machine("m1", "u1");
    w.behaviour("m1", &json!({"connect_hang_secs": 60}));
    let mut child = w
        .cmd("m1", &["connect", "--access-token", &token()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    // SIGTERM via kill(1) (std only has SIGKILL)
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if st.map(|s| !s.success()).unwrap_or(true) {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(status.signal().is_some(), "{status:?}");
    // the call was recorded before the hang
    assert_eq!(w.calls("m1").len(), 1);

    w.behaviour("m1", &json!({"kill_self_signal": 9}));
    let o = w.connect("m1", &token(), &[]);
    assert_eq!(o.status.signal(), Some(9), "{}", text(&o));

    w.behaviour("m1", &json!({"connect_output_bytes": 100000}));
    let o = w.connect("m1", &token(), &[]);
    assert_eq!(code(&o), 0);
    assert!(o.stdout.len() > 100_000);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Connected machine to Azure"));
}

#[test]
fn parsing_help_version_unknown() {
    let w = World::new("parse");
    w.machine("m1", "u1");
    assert_eq!(code(&w.run("m1", &["bogus"])), 101);
    assert_eq!(code(&w.run("m1", &["connect", "--debug"])), 101);
    assert_eq!(code(&w.run("m1", &["--help"])), 0);
    assert_eq!(code(&w.run("m1", &["connect", "-h"])), 0);
    let o = w.run("m1", &["version"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "azcmagent version 1.61.03319.2737\n"
    );
    // short flags, --flag=value, and config file YAML form
    let o = w.run(
        "m1",
        &[
            "connect",
            &format!("--access-token={}", token()),
            "-s",
            SUB,
            "-g=rg1",
            "-lwesteurope",
            "-n",
            "x1",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    w.run("m1", &["disconnect", "-f"]);
    let p = w.root.join("c.yaml");
    fs::write(
        &p,
        format!("access-token: {}\nsubscription-id: \"{SUB}\"\nresource-group: rg1\nlocation: westeurope\n", token()),
    )
    .unwrap();
    let o = w.run("m1", &["connect", "--config", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        code(&w.run(
            "m1",
            &[
                "connect",
                "--config",
                p.to_str().unwrap(),
                "--resource-name",
                "bad_"
            ]
        )),
        23
    );
    assert!(Path::new(&w.root.join("m1/agent/log/azcmagent.log")).is_file());
}
