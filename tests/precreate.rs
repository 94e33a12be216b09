//! `--precreate` and `--private-relay` (issue 14, FACTS §10) against the fake ARM (HybridCompute
//! machines, NetworkCloud assignRelay as a long-running operation, HybridConnectivity) and the fake
//! agent's `connect existing`, through a real proxy. The private key must appear nowhere: not in
//! output, argv, files left behind; the token never reaches the agent.

mod common;

use arc_enroll_fakes::arm::{ArmConfig, FakeArm};
use arc_enroll_fakes::ratelimit::Limits;
use arc_enroll_fakes::secrets::PRIVATE_KEY;
use arc_enroll_fakes::store::Store;
use arc_enroll_fakes::{arm_client, jwt};
use common::*;
use std::time::Instant;

const NEXUS: &str = "Microsoft.NetworkCloud/virtualMachines";

struct World {
    sb: Sandbox,
    imds: FakeImds,
    arm: FakeArm,
    proxy: Tinyproxy,
}

fn world(name: &str, imds: ImdsConfig, tweak: impl FnOnce(&mut ArmConfig)) -> World {
    let sb = Sandbox::new(name);
    let imds = FakeImds::start(imds);
    let arm = sb.fake_arm(|cfg| {
        cfg.relay.retry_after_secs = Some(1);
        tweak(cfg);
    });
    let proxy = Tinyproxy::start(None);
    // The one designed door for the one-time key: the agent's 0600 `--config` file.
    sb.allow(PRIVATE_KEY, "agent-config:connect");
    World {
        sb,
        imds,
        arm,
        proxy,
    }
}

fn nexus() -> ImdsConfig {
    ImdsConfig {
        vm_resource_type: NEXUS.into(),
        ..Default::default()
    }
}

impl World {
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let ca = self.arm.ca_pem().display().to_string();
        let (url, proxy) = (self.arm.url(), self.proxy.url());
        let mut env: Vec<(&str, &str)> = vec![
            ("ARC_ENROLL_ARM_ENDPOINT", &url),
            ("SSL_CERT_FILE", &ca),
            ("ARC_ENROLL_PROXY", &proxy),
            ("ARC_ENROLL_TIME_SCALE", "50"),
        ];
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k, v));
        }
        self.sb.run(&self.imds.url(), args, &env)
    }

    fn machines(&self) -> Vec<arc_enroll_fakes::store::Machine> {
        Store::new(&self.sb.azure_dir).list_machines().unwrap()
    }

    /// The private key the agent was handed (from the fake agent's record of its config file).
    fn private_key(&self) -> String {
        let calls = self.sb.agent_calls_of("connect");
        let c = calls
            .iter()
            .find(|c| c["argv"][1] == "existing")
            .expect("a connect existing call");
        c["config_file"]["content"]["private-key"]
            .as_str()
            .expect("the key came in the --config file")
            .to_string()
    }

    fn arm_summary(&self) -> Vec<String> {
        self.arm
            .requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.method,
                    r.path.rsplit('/').take(2).collect::<Vec<_>>().join("<"),
                    r.status
                )
            })
            .collect()
    }
}

/// The scanner knows the one-time key (the fake agent registered its secret part when it read
/// it), so every run's output, argv, environment, files left behind and token directories were
/// checked for it; the only allowed door is the agent's 0600 `--config` file.
fn assert_key_was_scanned_for(w: &World) {
    assert!(
        w.sb.known_secrets()
            .iter()
            .any(|s| s.kind == PRIVATE_KEY && s.value.len() > 1000),
        "the private key was registered with the scanner"
    );
    assert!(w.sb.leaks().is_empty());
}

#[test]
fn precreate_enrolls_with_connect_existing_and_the_token_never_reaches_the_agent() {
    let w = world("precreate", ImdsConfig::default(), |_| {});
    let started = Instant::now();
    let r = w.run(&["connect", "--precreate"], &[]);
    let took = started.elapsed();
    r.expect_code(0)
        .log_has("generated a one-time RSA-2048 key pair")
        .log_has("creating the machine resource")
        .log_has("connect existing");
    let ms = w.machines();
    assert_eq!(ms.len(), 1, "one resource");
    let m = &ms[0];
    assert_eq!(m.properties.status, "Connected");
    let state = w.sb.state().expect("state written");
    assert_eq!(
        state["vm_id"],
        m.properties.vm_id.as_str(),
        "the vmId is recorded"
    );
    assert_eq!(state["resource_id"], m.id.as_str());
    assert_eq!(state["enrolled_via"], "precreate");
    assert!(
        !w.sb.state_dir.join("precreated.json").exists(),
        "the pending record is gone"
    );
    // The agent got `connect existing` with the key in a 0600 file, and never a token.
    let calls = w.sb.agent_calls_of("connect");
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c["argv"][1], "existing");
    assert_eq!(c["config_file"]["mode"], "600");
    assert_eq!(c["config_file"]["dir_mode"], "700");
    let argv = c["argv"].to_string();
    assert!(
        argv.contains(m.properties.vm_id.as_str()),
        "--vmid on argv: {argv}"
    );
    assert!(!argv.contains("private-key"), "{argv}");
    // Tokens are JWTs ("eyJ..."): none in any agent call, argv or --config file.
    for call in w.sb.agent_calls() {
        let text = call.to_string();
        assert!(
            !text.contains("eyJ") && !text.contains("access-token"),
            "a token reached the agent: {text}"
        );
    }
    assert_eq!(
        c["config_file"]["content"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["private-key".to_string()])
    );
    let key = w.private_key();
    assert!(key.len() > 1500, "a 2048-bit PKCS#1 key in base64");
    assert_key_was_scanned_for(&w);
    let puts = w
        .arm
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 1);
    eprintln!(
        "precreate: {} ARM requests ({}), enrolled in {:.2} s",
        w.arm.requests().len(),
        w.arm_summary().join(", "),
        took.as_secs_f64()
    );

    // A re-run is a no-op: nothing in Azure is touched.
    let before = w.arm.requests().len();
    w.run(&["connect", "--precreate"], &[])
        .expect_code(0)
        .out_has("already enrolled");
    assert_eq!(w.arm.requests().len(), before, "no ARM request on a re-run");
}

#[test]
fn private_relay_assigns_the_relay_through_the_long_running_operation() {
    let w = world("relay", nexus(), |c| {
        c.relay.polls_running = 2;
    });
    let started = Instant::now();
    let r = w.run(&["connect", "--private-relay"], &[]);
    let took = started.elapsed();
    r.expect_code(0)
        .log_has("(from the token's xms_mirid claim)")
        .log_has("operation running; polling again in")
        .log_has("Private Relay assigned");
    let a = w.arm.relay_assignments();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0].relay_type.as_str(), a[0].status.as_str()),
        ("Platform", "Succeeded")
    );
    let m = &w.machines()[0];
    assert!(a[0].machine_id.eq_ignore_ascii_case(&m.id));
    assert!(a[0].vm_id.to_lowercase().ends_with(&format!(
        "{}/{}",
        NEXUS.to_lowercase(),
        w.imds.config().vm_name.to_lowercase()
    )));
    assert_eq!(m.properties.status, "Connected");
    assert_eq!(w.sb.state().unwrap()["enrolled_via"], "private-relay");
    let polls = w
        .arm
        .requests()
        .iter()
        .filter(|r| r.path.contains("/operationStatuses/"))
        .count();
    assert_eq!(polls, 3, "2 running + the final answer");
    assert_eq!(
        w.arm.requests_to("/endpoints/default").len(),
        1,
        "the endpoint was looked at"
    );
    let machine_reads = w
        .arm
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.to_lowercase().ends_with("/machines/web01"))
        .count();
    assert_eq!(machine_reads, 1, "{:?}", w.arm_summary());
    let key = w.private_key();
    assert!(key.len() > 1500, "a 2048-bit PKCS#1 key in base64");
    assert_key_was_scanned_for(&w);
    eprintln!(
        "private relay: {} ARM requests ({}), enrolled in {:.2} s",
        w.arm.requests().len(),
        w.arm_summary().join(", "),
        took.as_secs_f64()
    );
}

#[test]
fn the_nexus_vm_id_setting_wins_and_user_assigned_tokens_use_xms_az_rid() {
    let imds = nexus();
    let uami = imds.uami("arc-onboarding");
    let w = world("relay-vmid", imds.with_user_assigned(uami.clone()), |_| {});
    let c = w.imds.config();
    let vm = format!(
        "/subscriptions/{}/resourceGroups/other-rg/providers/{NEXUS}/given-vm",
        c.subscription_id
    );
    w.run(
        &[
            "connect",
            "--private-relay",
            "--nexus-vm-id",
            &vm,
            "--identity-resource-id",
            &uami.resource_id,
        ],
        &[],
    )
    .expect_code(0)
    .log_has("(from flag --nexus-vm-id)");
    assert!(w.arm.relay_assignments()[0].vm_id.ends_with("/given-vm"));

    // Without the setting, a user-assigned identity's xms_mirid is the identity; xms_az_rid is the VM.
    let w = world(
        "relay-azrid",
        nexus().with_user_assigned(uami.clone()),
        |_| {},
    );
    w.run(
        &[
            "connect",
            "--private-relay",
            "--identity-resource-id",
            &uami.resource_id,
        ],
        &[],
    )
    .expect_code(0)
    .log_has("(from the token's xms_az_rid claim)");
}

#[test]
fn private_relay_errors_have_their_exit_codes() {
    // No Nexus VM id anywhere: exit 2 naming --nexus-vm-id, before any machine is created.
    let w = world("relay-novm", ImdsConfig::default(), |_| {});
    w.run(&["connect", "--private-relay"], &[])
        .expect_code(2)
        .log_has("--nexus-vm-id");

    // 403 on assignRelay: retried, then exit 4 naming the permission and the scope.
    let w = world("relay-403", nexus(), |c| c.relay.forbidden = true);
    let r = w.run(&["connect", "--private-relay", "--timeout", "3m"], &[]);
    r.expect_code(4)
        .log_has("Microsoft.NetworkCloud/virtualMachines/assignRelay/action");
    assert!(
        r.stderr
            .contains(&format!("{NEXUS}/{}", w.imds.config().vm_name)),
        "{}",
        r.stderr
    );
    assert!(
        w.sb.agent_calls_of("connect").is_empty(),
        "the agent never ran"
    );
    assert_eq!(w.machines().len(), 1, "one machine, not one per attempt");

    // The operation fails: exit 5 with its error.
    let w = world("relay-fail", nexus(), |c| {
        c.relay.polls_running = 1;
        c.relay.fail = Some((
            "RelayAssignmentFailed".into(),
            "the relay is unavailable".into(),
        ));
    });
    w.run(&["connect", "--private-relay"], &[])
        .expect_code(5)
        .log_has("RelayAssignmentFailed: the relay is unavailable");

    // The operation outlives the deadline: exit 7.
    let w = world("relay-slow", nexus(), |c| {
        c.relay.polls_running = 1000;
        c.relay.retry_after_secs = Some(30);
    });
    w.run(&["connect", "--private-relay", "--timeout", "2m"], &[])
        .expect_code(7);
}

#[test]
fn a_refused_put_names_the_property_with_exit_2() {
    let w = world("put-400", ImdsConfig::default(), |c| {
        c.relay.machine_put_error = Some((
            400,
            "HCRP400".into(),
            "The request is invalid. Missing or invalid properties: VmId".into(),
        ))
    });
    w.run(&["connect", "--precreate"], &[])
        .expect_code(2)
        .log_has("ARM named the property VmId");
    assert!(w.sb.agent_calls_of("connect").is_empty());
}

#[test]
fn a_rerun_replaces_the_resource_an_earlier_run_created_but_never_connected() {
    let w = world("stale", ImdsConfig::default(), |_| {});
    // The agent fails permanently on the first run (as it would with a bad key).
    w.sb.agent_behaviour(serde_json::json!({"connect_exits": [103]}));
    w.run(&["connect", "--precreate"], &[]).expect_code(5);
    let first = w.machines();
    assert_eq!(first.len(), 1);
    assert!(
        first[0].properties.status.is_empty(),
        "pre-created, never connected"
    );
    assert!(w.sb.state_dir.join("precreated.json").exists());
    assert!(w.sb.state().is_none());

    let r = w.run(&["connect", "--precreate"], &[]);
    r.expect_code(0).log_has(&format!(
        "the machine resource {} (vmId {}) was pre-created by an earlier run",
        first[0].id, first[0].properties.vm_id
    ));
    let now = w.machines();
    assert_eq!(now.len(), 1, "never two resources for one VM");
    assert_ne!(
        now[0].properties.vm_id, first[0].properties.vm_id,
        "re-created with a new vmId"
    );
    assert_eq!(now[0].properties.status, "Connected");
    assert_eq!(
        w.arm
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .count(),
        1
    );
}

#[test]
fn someone_elses_resource_of_that_name_is_a_name_conflict() {
    let w = world("conflict", ImdsConfig::default(), |_| {});
    let c = w.imds.config();
    arc_enroll_fakes::arm::put_machine(
        &w.sb.azure_dir,
        &c.subscription_id,
        &c.resource_group,
        "web01",
        "99999999-9999-9999-9999-999999999999",
    );
    w.run(&["connect", "--precreate"], &[]).expect_code(6);
    assert_eq!(
        w.arm
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" || r.method == "DELETE")
            .count(),
        0
    );
}

#[test]
fn settings_for_the_new_paths_are_validated_before_any_network_call() {
    let sb = Sandbox::new("relay-settings");
    // No IMDS at all: every one of these fails before it would be needed.
    let imds = "http://127.0.0.1:9";
    let bad_id = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v";
    sb.run(
        imds,
        &["connect", "--private-relay", "--nexus-vm-id", bad_id],
        &[],
    )
    .expect_code(2)
    .log_has("nexus_vm_id");
    let good = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/g/providers/Microsoft.NetworkCloud/virtualMachines/v";
    sb.run(imds, &["connect", "--nexus-vm-id", good], &[])
        .expect_code(2)
        .log_has("only used with --private-relay");
    sb.run(imds, &["connect", "--precreate", "--gateway-id", "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/g/providers/Microsoft.HybridCompute/gateways/gw"], &[])
        .expect_code(2)
        .log_has("connect existing");
    sb.run(
        imds,
        &["connect", "--private-relay", "--precreate=false"],
        &[],
    )
    .expect_code(2);
    sb.run(imds, &["connect"], &[("ARC_ENROLL_PRIVATE_RELAY", "maybe")])
        .expect_code(2);
    std::fs::write(&sb.config, r#"{"private_relay": true, "nexus_vm_id": 5}"#).unwrap();
    sb.run(imds, &["connect"], &[]).expect_code(2);
}

#[test]
fn check_reports_the_write_the_vm_and_the_relay_permission() {
    let w = world("relay-check", nexus(), |c| c.relay.forbidden = true);
    let r = w.run(
        &["check", "--private-relay"],
        &[("ARC_ENROLL_CHECK_ENDPOINTS", &format!("{}/", w.arm.url()))],
    );
    r.expect_code(8)
        .out_has("machine write")
        .out_has("nexus vm")
        .out_has("the identity lacks Microsoft.NetworkCloud/virtualMachines/assignRelay/action");
    let w = world("relay-check-ok", nexus(), |_| {});
    w.run(
        &["check", "--private-relay"],
        &[("ARC_ENROLL_CHECK_ENDPOINTS", &format!("{}/", w.arm.url()))],
    )
    .expect_code(0)
    .out_has("the identity may Microsoft.NetworkCloud/virtualMachines/assignRelay/action");
    let w = world("relay-check-novm", ImdsConfig::default(), |_| {});
    w.run(
        &["check", "--private-relay"],
        &[("ARC_ENROLL_CHECK_ENDPOINTS", &format!("{}/", w.arm.url()))],
    )
    .expect_code(8)
    .out_has("pass --nexus-vm-id");
}

#[test]
fn the_token_path_leaves_the_machine_write_to_the_agent() {
    let w = world("token-compare", ImdsConfig::default(), |_| {});
    let started = Instant::now();
    w.run(&["connect"], &[]).expect_code(0);
    let took = started.elapsed();
    assert!(
        w.arm.requests().iter().all(|r| r.method == "GET"),
        "arc-enroll itself only reads on the token path: {:?}",
        w.arm_summary()
    );
    assert_ne!(w.sb.agent_calls_of("connect")[0]["argv"][1], "existing");
    eprintln!(
        "token: {} ARM requests by arc-enroll ({}), enrolled in {:.2} s",
        w.arm.requests().len(),
        w.arm_summary().join(", "),
        took.as_secs_f64()
    );
}

#[test]
fn a_clone_precreates_its_own_resource_under_its_own_name() {
    let w = world("precreate-clone", ImdsConfig::default(), |_| {});
    let template = "{hostname}-{vm_uuid8}";
    w.run(
        &["connect", "--precreate", "--resource-name", template],
        &[],
    )
    .expect_code(0);
    let parent = w.machines();
    assert_eq!(parent.len(), 1);
    // The disk is copied and booted with a new SMBIOS UUID; the hostname repeats.
    w.sb.set_machine("9f1e2d3c-0000-4000-8000-000000000001", MACHINE_ID, "web01");
    w.run(
        &["connect", "--precreate", "--resource-name", template],
        &[],
    )
    .expect_code(0)
    .log_has("clone");
    let now = w.machines();
    assert_eq!(
        now.len(),
        2,
        "the parent's resource is left, the clone has its own"
    );
    assert!(now
        .iter()
        .any(|m| m.name == parent[0].name && m.properties.vm_id == parent[0].properties.vm_id));
    let clone = now
        .iter()
        .find(|m| m.name == "web01-9f1e2d3c")
        .expect("the clone's name");
    assert_eq!(clone.properties.status, "Connected");
    assert_ne!(clone.properties.vm_id, parent[0].properties.vm_id);
    assert_eq!(
        w.sb.state().unwrap()["vm_id"],
        clone.properties.vm_id.as_str()
    );
    assert!(
        w.arm.requests().iter().all(|r| r.method != "DELETE"),
        "nothing deleted"
    );
}

#[test]
fn key_on_command_line_puts_the_key_on_argv_only() {
    let w = world("key-argv", ImdsConfig::default(), |_| {});
    // Asked for: the key on the agent's argv (for agents without --config), nowhere else.
    w.sb.allow(PRIVATE_KEY, "agent-argv:connect");
    w.run(&["connect", "--precreate", "--key-on-command-line"], &[])
        .expect_code(0)
        .log_has("on the command line (--key-on-command-line)");
    let c = &w.sb.agent_calls_of("connect")[0];
    let argv: Vec<&str> = c["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let i = argv
        .iter()
        .position(|a| *a == "--private-key")
        .expect("--private-key on argv");
    assert!(argv[i + 1].len() > 1500);
    assert!(c["config_file"].is_null(), "no --config file: {c}");
    assert_key_was_scanned_for(&w);
    assert_eq!(w.machines()[0].properties.status, "Connected");
}

/// ARM's buckets ×0.01 globally (reads 37.5, writes 30), each principal's as documented, and the
/// global bucket of `op` (0 reads, 1 writes) refilled at `refill`/s. arc-enroll is told the scale.
fn scaled_global(op: usize, refill: f64) -> Limits {
    let mut l = Limits::scaled(0.01);
    l.principal = Limits::documented().principal;
    l.global[op].refill_per_sec = refill;
    l
}

impl World {
    /// `n` requests (`GET`: reads, `POST`: writes) by `n` other principals (other VMs of the fleet).
    fn others(&self, method: &str, n: usize) {
        let sub = &self.imds.config().subscription_id;
        let url = format!(
            "{}/subscriptions/{sub}/providers/Microsoft.Compute?api-version=2021-04-01",
            self.arm.url()
        );
        let body = (method != "GET").then_some("{}");
        for i in 0..n {
            let t = jwt::mint(&serde_json::json!({"oid": format!("other-vm-{i}"), "tid": "t"}));
            let a = arm_client::request(method, &url, self.arm.ca_pem(), &t, body).unwrap();
            assert_ne!(a.status, 429, "other VM's {method} {i}: {}", a.body);
        }
    }
}

#[test]
fn relay_requests_are_counted_and_a_low_write_budget_paces_the_assignment() {
    // Global writes: 30 tokens (ARM's ×0.01) refilled at 2/s; 29 writes by other VMs leave one,
    // which the PUT takes. Unpaced, the assignRelay POST right after it would find none and get a
    // 429; paced, it waits (3 − 0) / 2 s × [0.5, 1.5) first. Real time here (scale 1): the fake's
    // buckets refill in real time.
    let w = world("relay-budget", nexus(), |c| {
        c.rate_limits = Some(scaled_global(1, 2.0));
        c.relay.polls_running = 1;
    });
    w.others("POST", 29);
    let r = w.run(
        &["connect", "--private-relay", "--json"],
        &[
            ("ARC_ENROLL_ARM_LIMITS_SCALE", "0.01"),
            ("ARC_ENROLL_TIME_SCALE", "1"),
        ],
    );
    r.expect_code(0)
        .log_has("writes left in the subscription's global bucket; waiting")
        .log_has("before ARM POST assignRelay");
    let oid = w.imds.config().system_object_id.clone();
    let ours: Vec<_> = w
        .arm
        .requests()
        .into_iter()
        .filter(|q| q.bearer_oid.as_deref() == Some(oid.as_str()))
        .collect();
    assert!(ours.iter().all(|q| q.status != 429), "{ours:?}");
    let line = r.stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    // Every request of the flow: reads, the PUT, the POST, the polls, the endpoint read.
    assert_eq!(v["arm_requests"], ours.len(), "{v} {:?}", w.arm_summary());
    assert_eq!(v["arm_throttled"], 0, "{v}");
}

#[test]
fn an_agent_that_cannot_share_the_fake_azure_reads_the_precreated_machine_through_its_proxy() {
    // `make e2e`'s set-up: the VM's fake agent has its own fake-Azure directory and reaches the
    // fake ARM only as the real agent reaches Azure, through its proxy.url (FAKE_AZCMAGENT_REMOTE_AZURE).
    let w = world("precreate-remote", nexus(), |c| c.relay.polls_running = 0);
    let local = w.sb.root.join("vm-local-azure");
    let (url, local_s) = (w.arm.url(), local.display().to_string());
    // Redacted in the agent's record (below): no door left open for the key at all.
    w.sb.disallow(PRIVATE_KEY, "agent-config:connect");
    let r = w.run(
        &["connect", "--private-relay"],
        &[
            ("FAKE_AZURE_DIR", &local_s),
            ("FAKE_AZCMAGENT_REMOTE_AZURE", &url),
            ("FAKE_AZCMAGENT_REDACT", "private-key"),
        ],
    );
    r.expect_code(0);
    let m = &w.machines()[0];
    let vmid = m.properties.vm_id.to_lowercase();
    let agent_reads: Vec<_> = w
        .arm
        .requests()
        .into_iter()
        .filter(|q| q.bearer_oid.as_deref() == Some(vmid.as_str()))
        .collect();
    assert_eq!(agent_reads.len(), 1, "{:?}", w.arm_summary());
    assert_eq!(agent_reads[0].method, "GET");
    assert!(agent_reads[0].path.eq_ignore_ascii_case(&m.id));
    // The agent checked the key against the fake ARM's clientPublicKey and connected its copy.
    let copy = Store::new(&local).list_machines().unwrap();
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].properties.status, "Connected");
    assert_eq!(
        copy[0].properties.extra.get("clientPublicKey"),
        m.properties.extra.get("clientPublicKey")
    );
    let calls = w.sb.agent_calls_of("connect");
    assert_eq!(
        calls[0]["config_file"]["content"]["private-key"]
            .as_str()
            .unwrap_or_default()
            .split(':')
            .next(),
        Some("<redacted")
    );
    assert_key_was_scanned_for(&w);
}

#[test]
fn throttled_operation_polls_are_waited_out_not_read_as_a_failed_relay() {
    // More 429s in a row than the attempts a failing request gets (found by `make fleet-arm` at
    // ×0.1: 92 of 1,000 VMs exited 5, "the assignRelay operation ... ended HTTP 429").
    let throttled = arc_enroll::azure::machines::ARM_WRITE_ATTEMPTS + 3;
    let w = world("relay-poll-429", nexus(), |c| {
        c.relay.polls_running = 1;
        c.relay.poll_throttle = throttled;
    });
    let r = w.run(&["connect", "--private-relay", "--json"], &[]);
    r.expect_code(0)
        .log_has("HTTP 429: SubscriptionRequestsThrottled")
        .log_has("Private Relay assigned");
    let polls: Vec<u16> = w
        .arm
        .requests()
        .iter()
        .filter(|q| q.path.contains("/operationStatuses/"))
        .map(|q| q.status)
        .collect();
    assert_eq!(
        polls.iter().filter(|s| **s == 429).count() as u32,
        throttled,
        "{polls:?}"
    );
    assert_eq!(polls.last(), Some(&200), "{polls:?}");
    let line = r.stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["arm_throttled"], throttled, "{v}");
}

#[test]
fn a_low_read_budget_leaves_out_the_endpoint_confirmation() {
    // Global reads: 37.5 tokens (×0.01) refilled at 0.1/s; 32 reads by other VMs leave 5.5.
    // Permissions, the machine read and the one poll leave 2.5, under a tenth of the bucket: the
    // optional HybridConnectivity read is skipped (the agent's connect does not need it).
    let w = world("relay-low-reads", nexus(), |c| {
        c.rate_limits = Some(scaled_global(0, 0.1));
        c.relay.polls_running = 0;
    });
    w.others("GET", 32);
    let r = w.run(
        &["connect", "--private-relay"],
        &[("ARC_ENROLL_ARM_LIMITS_SCALE", "0.01")],
    );
    r.expect_code(0)
        .log_has("not confirming the HybridConnectivity endpoint");
    assert!(
        w.arm.requests_to("/endpoints/default").is_empty(),
        "{:?}",
        w.arm_summary()
    );
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
}
