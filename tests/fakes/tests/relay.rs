//! The fake ARM's pre-created machine, assignRelay and HybridConnectivity routes, and the fake
//! agent's `connect existing`, against FACTS §10 (black-box: HTTPS on loopback, the binary).

use arc_enroll_fakes::arm::{ArmConfig, FakeArm};
use arc_enroll_fakes::arm_hybrid::ASSIGN_RELAY_ACTION;
use arc_enroll_fakes::jwt;
use arc_enroll_fakes::store::Store;
use base64::Engine;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const AGENT: &str = env!("CARGO_BIN_EXE_fake-azcmagent");
const SUB: &str = "22222222-2222-2222-2222-222222222222";
const TID: &str = "11111111-1111-1111-1111-111111111111";
const VMID: &str = "0b8c2d4e-1f3a-4b5c-8d9e-0a1b2c3d4e5f";
const HC: &str = "api-version=2025-02-19-preview";
const NC: &str = "api-version=2025-09-01";

static N: AtomicUsize = AtomicUsize::new(0);

struct World {
    root: PathBuf,
    arm: FakeArm,
    http: ureq::Agent,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn token() -> String {
    jwt::mint(&json!({
        "aud": "https://management.azure.com/", "tid": TID,
        "appid": "aaaaaaaa-0000-0000-0000-000000000001", "oid": "bbbbbbbb-0000-0000-0000-000000000002",
        "iat": jwt::now_unix() - 60, "nbf": jwt::now_unix() - 60, "exp": jwt::now_unix() + 3600,
    }))
}

impl World {
    fn new(tag: &str, relay: impl FnOnce(&mut ArmConfig)) -> World {
        let root = std::env::temp_dir().join(format!(
            "fake-relay-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let mut cfg = ArmConfig {
            azure_dir: Some(root.join("azure")),
            ca_dir: Some(root.join("ca")),
            ..Default::default()
        };
        relay(&mut cfg);
        let arm = FakeArm::start(cfg);
        let pem = fs::read(arm.ca_pem()).unwrap();
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let http = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .tls_config(tls)
                .build(),
        );
        World { root, arm, http }
    }

    fn call(&self, method: &str, path_or_url: &str, body: Option<Value>) -> Resp {
        let url = if path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.arm.url())
        };
        let auth = format!("Bearer {}", token());
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", auth)
            .header("Content-Type", "application/json");
        let mut resp = match body {
            Some(b) => self.http.run(req.body(b.to_string()).unwrap()),
            None => self.http.run(req.body(()).unwrap()),
        }
        .unwrap();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Resp {
            status: resp.status().as_u16(),
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    fn machine_path(name: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/{name}")
    }

    fn put(&self, name: &str, vm_id: &str, key: &str) -> Resp {
        self.call(
            "PUT",
            &format!("{}?{HC}", Self::machine_path(name)),
            Some(
                json!({"location": "eastus", "identity": {"type": "SystemAssigned"},
                        "properties": {"osName": "linux", "clientPublicKey": key, "vmId": vm_id}}),
            ),
        )
    }

    fn assign(&self, vm: &str, machine_id: &str) -> Resp {
        self.call(
            "POST",
            &format!("/subscriptions/{SUB}/resourceGroups/nexus-rg/providers/Microsoft.NetworkCloud/virtualMachines/{vm}/assignRelay?{NC}"),
            Some(json!({"machineId": machine_id, "relayType": "Platform"})),
        )
    }

    fn agent(&self, args: &[&str]) -> Output {
        let m = self.root.join("vm");
        fs::create_dir_all(m.join("sysroot/sys/class/dmi/id")).unwrap();
        fs::write(
            m.join("sysroot/sys/class/dmi/id/product_uuid"),
            "AAAA-1111\n",
        )
        .unwrap();
        Command::new(AGENT)
            .args(args)
            .env("FAKE_AZCMAGENT_DIR", m.join("agent"))
            .env("FAKE_AZCMAGENT_SYSROOT", m.join("sysroot"))
            .env("FAKE_AZURE_DIR", self.root.join("azure"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn config_file(&self, content: &Value) -> String {
        let dir = self.root.join("secret");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let p = dir.join("connect.json");
        fs::write(&p, content.to_string()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// (private PKCS#1 base64, private PKCS#8 base64, public PKCS#1 base64)
fn keys() -> (String, String, String) {
    let k = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    (
        b64(k.to_pkcs1_der().unwrap().as_bytes()),
        b64(k.to_pkcs8_der().unwrap().as_bytes()),
        b64(k.to_public_key().to_pkcs1_der().unwrap().as_bytes()),
    )
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn machine_put_get_delete_follow_the_2025_02_19_preview_spec() {
    let w = World::new("machine", |_| {});
    let (_, _, public) = keys();
    let bad = w.put("web01", "not-a-guid", &public);
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.body["error"]["code"], "HCRP400");
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Missing or invalid properties: VmId"));
    let missing = w.put("web01", "", &public);
    assert_eq!(missing.status, 400, "a vmId is needed on create");
    let long = w.put(&"x".repeat(55), VMID, &public);
    assert_eq!(long.status, 400, "name longer than 54");
    assert_eq!(w.put("web!01", VMID, &public).status, 400, "name pattern");
    let old = w.call(
        "GET",
        &format!("{}?api-version=2019-01-01", World::machine_path("web01")),
        None,
    );
    assert_eq!(old.status, 400, "unknown api-version");
    assert_eq!(
        w.call(
            "GET",
            &format!("{}?{HC}", World::machine_path("web01")),
            None
        )
        .status,
        404
    );

    let made = w.put("web01", VMID, &public);
    assert_eq!(made.status, 200, "200, never 201: {:?}", made.body);
    let m = &made.body;
    assert_eq!(m["identity"]["type"], "SystemAssigned");
    assert_eq!(m["properties"]["vmId"], VMID);
    assert_eq!(m["properties"]["clientPublicKey"], public.as_str());
    assert!(
        m["properties"]["status"].is_null(),
        "status null until an agent connects: {m}"
    );
    assert_eq!(m["id"], World::machine_path("web01"));
    let got = w.call(
        "GET",
        &format!("{}?{HC}", World::machine_path("web01")),
        None,
    );
    assert_eq!((got.status, &got.body), (200, m));
    // The older api-version arc-enroll reads machines with sees the same resource.
    let older = w.call(
        "GET",
        &format!("{}?api-version=2024-07-10", World::machine_path("WEB01")),
        None,
    );
    assert_eq!(older.status, 200, "names are case-insensitive");

    // Create-only properties: the same again is fine, a change is refused.
    assert_eq!(w.put("web01", VMID, &public).status, 200);
    let other = w.put("web01", "0b8c2d4e-1f3a-4b5c-8d9e-000000000000", &public);
    assert_eq!(
        (other.status, other.body["error"]["code"].as_str()),
        (400, Some("HCRP400"))
    );
    let (_, _, other_key) = keys();
    assert_eq!(
        w.put("web01", VMID, &other_key).status,
        400,
        "clientPublicKey is create-only"
    );

    let del = w.call(
        "DELETE",
        &format!("{}?{HC}", World::machine_path("web01")),
        None,
    );
    assert_eq!(del.status, 202);
    let loc = del.header("location").expect("Location on 202").to_string();
    assert!(
        loc.starts_with("https://") && loc.contains("/operationStatus/"),
        "{loc}"
    );
    assert!(del.header("azure-asyncoperation").is_some() && del.header("retry-after").is_some());
    let done = w.call("GET", &loc, None);
    assert_eq!(
        (done.status, done.body["status"].as_str()),
        (200, Some("Succeeded"))
    );
    assert_eq!(
        w.call(
            "DELETE",
            &format!("{}?{HC}", World::machine_path("web01")),
            None
        )
        .status,
        204
    );
    assert_eq!(
        w.call(
            "GET",
            &format!("{}?{HC}", World::machine_path("web01")),
            None
        )
        .status,
        404
    );
}

#[test]
fn machine_writes_honour_authz_propagation() {
    let w = World::new("authz", |_| {});
    let store = Store::new(w.root.join("azure"));
    store
        .set_authz(&arc_enroll_fakes::store::Authz {
            deny_connect_attempts: 1,
            ..Default::default()
        })
        .unwrap();
    let (_, _, public) = keys();
    let denied = w.put("web01", VMID, &public);
    assert_eq!(denied.status, 403);
    assert!(denied.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.HybridCompute/machines/write"));
    assert_eq!(
        w.put("web01", VMID, &public).status,
        200,
        "the next write is allowed"
    );
}

#[test]
fn assign_relay_is_a_long_running_operation_polled_through_location() {
    let w = World::new("lro", |c| {
        c.relay.polls_running = 3;
        c.relay.retry_after_secs = Some(2);
    });
    let (_, _, public) = keys();
    let machine = w.put("web01", VMID, &public).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let endpoint = format!(
        "{machine}/providers/Microsoft.HybridConnectivity/endpoints/default?api-version=2023-03-15"
    );
    assert_eq!(
        w.call("GET", &endpoint, None).status,
        404,
        "no endpoint before the relay"
    );
    let r = w.assign("nexus-vm1", &machine);
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.header("retry-after"), Some("2"));
    let mut loc = r.header("location").unwrap().to_string();
    assert!(
        loc.starts_with(&w.arm.url())
            && loc.contains(&format!("/subscriptions/{SUB}/providers/Microsoft.NetworkCloud/locations/eastus/operationStatuses/"))
            && loc.ends_with(NC),
        "{loc}"
    );
    for i in 0..3 {
        let p = w.call("GET", &loc, None);
        assert_eq!(p.status, 202, "poll {i}");
        assert_eq!(p.header("retry-after"), Some("2"));
        loc = p.header("location").unwrap_or(&loc).to_string();
    }
    let fin = w.call("GET", &loc, None);
    assert_eq!(fin.status, 200);
    assert_eq!(fin.body["status"], "Succeeded");
    assert!(fin.body["error"].is_null() && fin.body["endTime"].is_string());
    let a = w.arm.relay_assignments();
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].relay_type.as_str(), a[0].status.as_str()),
        ("Platform", "Succeeded")
    );
    assert!(a[0]
        .vm_id
        .ends_with("/Microsoft.NetworkCloud/virtualMachines/nexus-vm1"));
    let e = w.call("GET", &endpoint, None);
    assert_eq!(e.status, 200);
    assert_eq!(e.body["name"], "default");
    assert_eq!(e.body["type"], "Microsoft.HybridConnectivity/endpoints");
    assert_eq!(e.body["properties"]["type"], "default");
    assert!(
        e.body["properties"].get("endpointType").is_none(),
        "not in the spec"
    );
}

#[test]
fn assign_relay_failure_modes() {
    // The operation fails.
    let w = World::new("fail", |c| {
        c.relay.polls_running = 0;
        c.relay.retry_after_secs = None;
        c.relay.fail = Some((
            "RelayAssignmentFailed".into(),
            "The relay could not be assigned.".into(),
        ));
    });
    let (_, _, public) = keys();
    let machine = w.put("web01", VMID, &public).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.assign("vm1", &machine);
    assert_eq!(r.status, 202);
    assert_eq!(
        r.header("retry-after"),
        None,
        "configurable: no Retry-After"
    );
    let fin = w.call("GET", r.header("location").unwrap(), None);
    assert_eq!(
        (fin.status, fin.body["status"].as_str()),
        (200, Some("Failed"))
    );
    assert_eq!(fin.body["error"]["code"], "RelayAssignmentFailed");
    // A machine that does not exist, a bad relayType.
    let ghost = World::machine_path("ghost");
    assert_eq!(w.assign("vm1", &ghost).status, 400);
    let bad = w.call(
        "POST",
        &format!("/subscriptions/{SUB}/resourceGroups/nexus-rg/providers/Microsoft.NetworkCloud/virtualMachines/vm1/assignRelay?{NC}"),
        Some(json!({"machineId": machine, "relayType": "Private"})),
    );
    assert_eq!(bad.status, 400);

    // 403 without the action, and the permissions API agrees.
    let w = World::new("forbidden", |c| c.relay.forbidden = true);
    let machine = w.put("web01", VMID, &public).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.assign("vm1", &machine);
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["code"], "AuthorizationFailed");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(ASSIGN_RELAY_ACTION) && msg.contains("/virtualMachines/vm1"),
        "{msg}"
    );
    let perms = w.call(
        "GET",
        &format!("/subscriptions/{SUB}/resourceGroups/nexus-rg/providers/Microsoft.NetworkCloud/virtualMachines/vm1/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"),
        None,
    );
    assert_eq!(perms.status, 200);
    assert!(!perms.body.to_string().contains(ASSIGN_RELAY_ACTION));

    // Only listed VMs exist when a list is given; the granted caller sees the action.
    let w = World::new("vms", |c| {
        c.relay.vms = vec![format!("/subscriptions/{SUB}/resourceGroups/nexus-rg/providers/Microsoft.NetworkCloud/virtualMachines/vm1")]
    });
    let machine = w.put("web01", VMID, &public).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(w.assign("vm2", &machine).status, 404);
    assert_eq!(
        w.assign("VM1", &machine).status,
        202,
        "resource ids are case-insensitive"
    );
    let perms = w.call(
        "GET",
        &format!("/subscriptions/{SUB}/resourceGroups/nexus-rg/providers/Microsoft.NetworkCloud/virtualMachines/vm1/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"),
        None,
    );
    assert!(perms.body.to_string().contains(ASSIGN_RELAY_ACTION));
    let vm = w.call("GET", &format!("/subscriptions/{SUB}/resourceGroups/nexus-rg/providers/Microsoft.NetworkCloud/virtualMachines/vm2?{NC}"), None);
    assert_eq!(vm.status, 404);
}

fn existing_args(cfg: &str) -> Vec<&str> {
    vec![
        "connect",
        "existing",
        "--config",
        cfg,
        "--subscription-id",
        SUB,
        "--resource-group",
        "rg1",
        "--resource-name",
        "web01",
        "--location",
        "eastus",
        "--tenant-id",
        TID,
    ]
}

#[test]
fn connect_existing_proves_the_key_from_the_config_file_or_argv() {
    let w = World::new("existing", |_| {});
    let (private, pkcs8, public) = keys();
    assert_eq!(w.put("web01", VMID, &public).status, 200);

    // PKCS#8 fails like the real agent.
    let cfg = w.config_file(&json!({"private-key": pkcs8, "vmid": VMID}));
    let o = w.agent(&existing_args(&cfg));
    assert_eq!(o.status.code(), Some(103), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("asn1: structure error"),
        "{}",
        text(&o)
    );
    // Another key than the resource's.
    let (other, _, _) = keys();
    let cfg = w.config_file(&json!({"private-key": other, "vmid": VMID}));
    assert_eq!(w.agent(&existing_args(&cfg)).status.code(), Some(104));
    // Not base64.
    let cfg = w.config_file(&json!({"private-key": "%%%", "vmid": VMID}));
    assert_eq!(w.agent(&existing_args(&cfg)).status.code(), Some(104));
    // Another vmId.
    let cfg = w.config_file(
        &json!({"private-key": private, "vmid": "0b8c2d4e-1f3a-4b5c-8d9e-000000000000"}),
    );
    assert_eq!(w.agent(&existing_args(&cfg)).status.code(), Some(42));
    // A flag `existing` does not have.
    let cfg = w.config_file(&json!({"private-key": private, "vmid": VMID}));
    let mut a = existing_args(&cfg);
    a.extend(["--tags", "a=b"]);
    assert_eq!(
        w.agent(&a).status.code(),
        Some(101),
        "unknown flag for connect existing"
    );
    // Missing the key altogether.
    let empty = w.config_file(&json!({"vmid": VMID}));
    let o = w.agent(&existing_args(&empty));
    assert_eq!(o.status.code(), Some(16), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--private-key"));
    assert!(
        Store::new(w.root.join("azure"))
            .get_machine(SUB, "rg1", "web01")
            .unwrap()
            .unwrap()
            .properties
            .status
            .is_empty(),
        "still not connected"
    );

    // The right key through the 0600 config file.
    let cfg = w.config_file(&json!({"private-key": private, "vmid": VMID}));
    let o = w.agent(&existing_args(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m = Store::new(w.root.join("azure"))
        .get_machine(SUB, "rg1", "web01")
        .unwrap()
        .unwrap();
    assert_eq!(m.properties.status, "Connected");
    assert_eq!(m.properties.vm_uuid, "aaaa-1111");
    let show = w.agent(&["show", "-j"]);
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["status"], "Connected", "{v}");
    let got = w.call(
        "GET",
        &format!("{}?{HC}", World::machine_path("web01")),
        None,
    );
    assert_eq!(got.body["properties"]["status"], "Connected");
    // Connected now: a second connect is AZCM0067.
    assert_eq!(w.agent(&existing_args(&cfg)).status.code(), Some(67));

    // On argv (the documented form), after a local disconnect.
    assert_eq!(
        w.agent(&["disconnect", "--force-local-only"]).status.code(),
        Some(0)
    );
    let o = w.agent(&[
        "connect",
        "existing",
        "--private-key",
        &private,
        "--vmid",
        VMID,
        "--subscription-id",
        SUB,
        "--resource-group",
        "rg1",
        "--resource-name",
        "web01",
        "--location",
        "eastus",
        "--tenant-id",
        TID,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
