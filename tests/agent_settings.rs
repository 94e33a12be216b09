//! The config file's `agent` section end to end: the real binary, the fake IMDS and the fake
//! agent (which records every call and keeps its `config` properties in agent.json).

mod common;

use common::{fake_agent_bin, FakeImds, ImdsConfig, Sandbox};
use serde_json::{json, Value};

const AMA: &str = "Microsoft.Azure.Monitor/AzureMonitorLinuxAgent";
const MDE: &str = "Microsoft.Azure.AzureDefenderForServers/MDE.Linux";

fn write_config(sb: &Sandbox, agent: Value) {
    std::fs::write(&sb.config, json!({ "agent": agent }).to_string()).unwrap();
}

/// `config set`/`config clear` calls, as "set KEY VALUE" / "clear KEY".
fn changes(sb: &Sandbox) -> Vec<String> {
    sb.agent_calls_of("config")
        .iter()
        .filter_map(|c| {
            let argv: Vec<&str> = c["argv"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            matches!(argv.get(1), Some(&"set") | Some(&"clear")).then(|| argv[1..].join(" "))
        })
        .filter(|c| !c.starts_with("set proxy.url"))
        .collect()
}

/// Run the fake agent directly, as an administrator at the console would (`azcmagent config set`).
fn agent_by_hand(sb: &Sandbox, args: &[&str]) {
    let st = std::process::Command::new(fake_agent_bin())
        .args(args)
        .env("FAKE_AZCMAGENT_DIR", &sb.agent_dir)
        .env("FAKE_AZCMAGENT_SYSROOT", &sb.sysroot)
        .env("FAKE_AZURE_DIR", &sb.azure_dir)
        .output()
        .unwrap();
    assert!(st.status.success(), "fake agent {args:?}: {st:?}");
}

/// The fake agent's current value of a property (`config get -j`).
fn agent_value(sb: &Sandbox, prop: &str) -> Value {
    let out = std::process::Command::new(fake_agent_bin())
        .args(["config", "get", prop, "-j"])
        .env("FAKE_AZCMAGENT_DIR", &sb.agent_dir)
        .env("FAKE_AZCMAGENT_SYSROOT", &sb.sysroot)
        .env("FAKE_AZURE_DIR", &sb.azure_dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Value"].clone()
}

fn lockdown() -> Value {
    json!({
        "config.mode": "monitor",
        "extensions.allowlist": [AMA, MDE],
        "guestconfiguration.enabled": true,
        "proxy.bypass": [],
    })
}

#[test]
fn applies_before_connect_setting_only_what_differs_and_verifies_after() {
    let sb = Sandbox::new("agentset-apply");
    let imds = FakeImds::start(ImdsConfig::default());
    write_config(&sb, lockdown());
    let run = sb.run(&imds.url(), &["connect"], &[]);
    run.expect_code(0)
        .log_has("config.mode: set to monitor (was full)")
        .log_has(&format!(
            "extensions.allowlist: set to [{AMA}, {MDE}] (was [])"
        ))
        // Both already hold the agent's defaults: read, not set.
        .log_has("guestconfiguration.enabled: already as wanted")
        .log_has("proxy.bypass: already as wanted")
        .log_has(&format!("extensions.allowlist: verified [{AMA}, {MDE}]"));
    assert_eq!(
        changes(&sb),
        vec![
            "set config.mode monitor".to_string(),
            format!("set extensions.allowlist {AMA},{MDE}"),
        ],
        "only the two differing settings are set"
    );
    // Every set happened before the (one) connect.
    let calls = sb.agent_calls();
    let sub = |c: &Value, i: usize| c["argv"][i].as_str().unwrap_or("").to_string();
    let connect_at = calls
        .iter()
        .position(|c| sub(c, 0) == "connect")
        .expect("connect ran");
    let last_set = calls
        .iter()
        .rposition(|c| sub(c, 0) == "config" && sub(c, 1) == "set")
        .unwrap();
    assert!(last_set < connect_at, "a config set ran after connect");
    let gets_after = calls[connect_at..]
        .iter()
        .filter(|c| sub(c, 0) == "config" && sub(c, 1) == "get")
        .count();
    assert_eq!(gets_after, 4, "each setting is read back after connect");
    assert_eq!(agent_value(&sb, "config.mode"), json!("monitor"));
    assert_eq!(sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn a_second_run_changes_nothing() {
    let sb = Sandbox::new("agentset-idem");
    let imds = FakeImds::start(ImdsConfig::default());
    write_config(&sb, lockdown());
    sb.run(&imds.url(), &["connect"], &[]).expect_code(0);
    let before = changes(&sb).len();
    let token_requests = imds.token_requests();
    sb.run(&imds.url(), &["connect"], &[])
        .expect_code(0)
        .log_has("config.mode: already as wanted")
        .out_has("nothing to do");
    assert_eq!(
        changes(&sb).len(),
        before,
        "no config set on an unchanged machine"
    );
    assert_eq!(imds.token_requests(), token_requests);
}

#[test]
fn rerun_repairs_drift_without_reconnecting() {
    let sb = Sandbox::new("agentset-drift");
    let imds = FakeImds::start(ImdsConfig::default());
    write_config(&sb, lockdown());
    sb.run(&imds.url(), &["connect"], &[]).expect_code(0);
    // Someone widens the allowlist by hand.
    agent_by_hand(
        &sb,
        &[
            "config",
            "set",
            "extensions.allowlist",
            &format!("{AMA},Microsoft.Azure.Extensions/CustomScript"),
        ],
    );
    let status = sb.run(&imds.url(), &["status", "--json"], &[]);
    status.expect_code(0);
    let v: Value = serde_json::from_str(status.stdout.trim()).expect("status --json is JSON");
    let rows = v["agent_settings"]["settings"]
        .as_array()
        .expect("settings rows")
        .clone();
    let row = |k: &str| rows.iter().find(|r| r["key"] == k).unwrap().clone();
    assert_eq!(row("extensions.allowlist")["drift"], json!(true), "{v}");
    assert_eq!(row("config.mode")["drift"], json!(false), "{v}");
    assert_eq!(v["agent_settings"]["drift"], json!(true));
    sb.run(&imds.url(), &["status"], &[])
        .expect_code(0)
        .out_has("DRIFT");

    let sets_before = changes(&sb).len();
    let connects_before = sb.agent_calls_of("connect").len();
    imds.clear_requests();
    sb.run(&imds.url(), &["connect"], &[])
        .expect_code(0)
        .log_has(&format!(
            "extensions.allowlist: set to [{AMA}, {MDE}] (was [{AMA}, Microsoft.Azure.Extensions/CustomScript])"
        ))
        .out_has("agent settings repaired");
    let new_sets = &changes(&sb)[sets_before..];
    assert_eq!(
        new_sets,
        [format!("set extensions.allowlist {AMA},{MDE}")],
        "exactly one set"
    );
    assert_eq!(
        sb.agent_calls_of("connect").len(),
        connects_before,
        "no reconnect"
    );
    assert_eq!(imds.requests().len(), 0, "IMDS not contacted for a repair");
    assert_eq!(agent_value(&sb, "extensions.allowlist"), json!([AMA, MDE]));

    let status = sb.run(&imds.url(), &["status"], &[]);
    status.expect_code(0);
    assert!(!status.stdout.contains("DRIFT"), "{}", status.stdout);
}

#[test]
fn an_old_agent_without_a_property_fails_with_its_version() {
    let sb = Sandbox::new("agentset-old");
    let imds = FakeImds::start(ImdsConfig::default());
    sb.agent_behaviour(
        json!({"unknown_config_props": ["config.mode"], "version": "1.20.01234.123"}),
    );
    write_config(&sb, lockdown());
    sb.run(&imds.url(), &["connect"], &[])
        .expect_code(5)
        .log_has("config.mode")
        .log_has("1.20.01234.123")
        .log_has("agent.optional");
    assert!(
        changes(&sb).is_empty(),
        "nothing is changed when a setting is unknown"
    );
    assert_eq!(sb.agent_calls_of("connect").len(), 0, "not connected");
}

#[test]
fn an_old_agent_without_an_optional_property_warns_and_connects() {
    let sb = Sandbox::new("agentset-optional");
    let imds = FakeImds::start(ImdsConfig::default());
    sb.agent_behaviour(
        json!({"unknown_config_props": ["config.mode"], "version": "1.20.01234.123"}),
    );
    let mut agent = lockdown();
    agent["optional"] = json!(["config.mode"]);
    write_config(&sb, agent);
    sb.run(&imds.url(), &["connect"], &[])
        .expect_code(0)
        .log_has("WARN")
        .log_has("config.mode: the installed agent 1.20.01234.123 does not know this setting");
    assert_eq!(
        changes(&sb),
        [format!("set extensions.allowlist {AMA},{MDE}")]
    );
    assert_eq!(sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn a_setting_that_does_not_hold_after_connect_is_exit_5() {
    // Something changes a setting while the agent connects (as an Azure-side config push could):
    // a wrapper around the fake agent sets extensions.enabled back to true after connect.
    let sb = Sandbox::new("agentset-verify");
    let imds = FakeImds::start(ImdsConfig::default());
    write_config(
        &sb,
        json!({"extensions.enabled": false, "config.mode": "monitor"}),
    );
    let wrapper = sb.root.join("azcmagent-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\"{fake}\" \"$@\"; rc=$?\nif [ \"$1\" = connect ] && [ $rc = 0 ]; then \"{fake}\" config set extensions.enabled true >/dev/null; fi\nexit $rc\n",
            fake = fake_agent_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.display().to_string();
    let run = sb.run(
        &imds.url(),
        &["connect"],
        &[("ARC_ENROLL_AZCMAGENT", wrapper.as_str())],
    );
    run.expect_code(5)
        .log_has("extensions.enabled: set to false (was true)")
        .log_has("config.mode: verified monitor")
        .log_has("extensions.enabled is true but false is wanted");
    assert_eq!(sb.agent_calls_of("connect").len(), 1);
    assert!(sb.state().is_some(), "the enrollment itself is recorded");

    // The re-run repairs it without reconnecting (through the plain fake agent now).
    sb.run(&imds.url(), &["connect"], &[])
        .expect_code(0)
        .log_has("extensions.enabled: set to false (was true)");
    assert_eq!(sb.agent_calls_of("connect").len(), 1, "no reconnect");
}

#[test]
fn every_validation_error_is_exit_2_before_any_network_call() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"extensions.allowlist": ["AzureMonitorLinuxAgent"]}),
            "agent.extensions.allowlist",
        ),
        (
            json!({"extensions.blocklist": ["a/b/c"]}),
            "agent.extensions.blocklist",
        ),
        (
            json!({"extensions.allowlist": [AMA], "extensions.blocklist": [AMA]}),
            "agent.extensions.blocklist",
        ),
        (
            json!({"extensions.enabled": "no"}),
            "agent.extensions.enabled",
        ),
        (
            json!({"guestconfiguration.enabled": 1}),
            "agent.guestconfiguration.enabled",
        ),
        (json!({"config.mode": "audit"}), "agent.config.mode"),
        (
            json!({"incomingconnections.ports": [70000]}),
            "agent.incomingconnections.ports",
        ),
        (
            json!({"proxy.bypass": ["management.azure.com"]}),
            "agent.proxy.bypass",
        ),
        (json!({"proxy.url": "http://p:3128"}), "agent.proxy.url"),
        (json!({"optional": ["nope"]}), "agent.optional"),
        (json!(["config.mode"]), "agent"),
    ];
    for (agent, key) in cases {
        let sb = Sandbox::new("agentset-invalid");
        let imds = FakeImds::start(ImdsConfig::default());
        write_config(&sb, agent.clone());
        let run = sb.run(&imds.url(), &["connect"], &[]);
        assert_eq!(run.code, Some(2), "{agent}: {}", run.stderr);
        assert!(
            run.stderr.contains(key),
            "{agent}: log lacks {key}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&sb.config.display().to_string()),
            "{agent}: log lacks the config file path: {}",
            run.stderr
        );
        assert_eq!(imds.requests().len(), 0, "{agent}: IMDS was contacted");
        assert!(sb.agent_calls().is_empty(), "{agent}: the agent was run");
    }
}

#[test]
fn the_lockdown_example_is_accepted_by_the_binary() {
    let sb = Sandbox::new("agentset-example");
    let imds = FakeImds::start(ImdsConfig::default());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config-lockdown.json");
    std::fs::copy(example, &sb.config).unwrap();
    sb.run(&imds.url(), &["connect"], &[])
        .expect_code(0)
        .log_has("config.mode: set to monitor (was full)");
    assert_eq!(agent_value(&sb, "config.mode"), json!("monitor"));
}
