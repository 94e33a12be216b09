//! Golden images and re-runs (issue 4): clones, generalize, status, disconnect, the run lock,
//! signals, and damaged state — the real binary against the fakes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CLONE_UUID: &str = "9f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
const CLONE_MID: &str = "fedcba9876543210fedcba9876543210";

fn imds() -> FakeImds {
    FakeImds::start(ImdsConfig::default())
}

/// Enroll the parent; return its resource name.
fn enroll(sb: &Sandbox, imds: &FakeImds, extra: &[&str]) {
    let mut args = vec!["connect"];
    args.extend_from_slice(extra);
    sb.run(&imds.url(), &args, &[]).expect_code(0);
}

fn machines(sb: &Sandbox) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![sb.azure_dir.join("machines")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().map(|x| x == "json").unwrap_or(false) {
                names.push(p.file_stem().unwrap().to_string_lossy().to_string());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn clone_by_product_uuid_reconnects_as_itself_and_leaves_the_parent_alone() {
    let imds = imds();
    let sb = Sandbox::new("clone-uuid");
    let template = "{hostname}-{vm_uuid8}";
    enroll(&sb, &imds, &["--resource-name", template]);
    assert_eq!(machines(&sb), vec!["web01-4c4c4544"]);
    // The disk is copied and booted with a new SMBIOS UUID; the hostname repeats.
    sb.set_machine(CLONE_UUID, MACHINE_ID, "web01");
    let r = sb.run(&imds.url(), &["connect", "--resource-name", template], &[]);
    r.expect_code(0).log_has("clone").log_has("product_uuid");
    let subs: Vec<String> = sb
        .agent_calls()
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(
        subs.iter().any(|s| s == "disconnect --force-local-only"),
        "{subs:?}"
    );
    assert!(
        !subs
            .iter()
            .any(|s| s.starts_with("disconnect --config") || s == "disconnect"),
        "the parent's resource must not be deleted: {subs:?}"
    );
    assert_eq!(
        machines(&sb),
        vec!["web01-4c4c4544", "web01-9f1e2d3c"],
        "parent kept, clone added under its own name"
    );
    assert_eq!(
        sb.state().unwrap()["fingerprint"]["product_uuid"],
        CLONE_UUID
    );
}

#[test]
fn clone_by_machine_id_alone_is_detected() {
    let imds = imds();
    let sb = Sandbox::new("clone-mid");
    enroll(&sb, &imds, &["--resource-name", "{hostname}-{machine_id8}"]);
    sb.set_machine(PRODUCT_UUID, CLONE_MID, "web01");
    let r = sb.run(
        &imds.url(),
        &["connect", "--resource-name", "{hostname}-{machine_id8}"],
        &[],
    );
    r.expect_code(0).log_has("machine_id");
    assert_eq!(machines(&sb), vec!["web01-01234567", "web01-fedcba98"]);
}

#[test]
fn clone_by_the_agents_vm_uuid_is_detected_without_our_state() {
    let imds = imds();
    let sb = Sandbox::new("clone-agent");
    enroll(&sb, &imds, &[]);
    // Our state is gone (e.g. an image captured without generalize but with the state dir wiped),
    // and the agent still holds the parent's connection and VM UUID.
    std::fs::remove_file(sb.state_dir.join("state.json")).unwrap();
    sb.set_machine(CLONE_UUID, CLONE_MID, "web02");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(0).log_has("VM UUID");
    assert_eq!(machines(&sb), vec!["web01", "web02"]);
}

#[test]
fn clone_policies_fail_and_ignore() {
    let imds = imds();
    let sb = Sandbox::new("clone-pol");
    enroll(&sb, &imds, &[]);
    sb.set_machine(CLONE_UUID, CLONE_MID, "web01");
    let r = sb.run(&imds.url(), &["connect", "--clone-policy", "fail"], &[]);
    r.expect_code(5).log_has(CLONE_UUID).log_has("generalize");
    let r = sb.run(&imds.url(), &["connect", "--clone-policy", "ignore"], &[]);
    r.expect_code(0).log_has("ignoring it");
    assert_eq!(
        sb.agent_calls_of("connect").len(),
        1,
        "neither policy connects again"
    );
    assert_eq!(sb.agent_calls_of("disconnect").len(), 0);
}

#[test]
fn ignored_clone_without_state_reports_the_resource_the_agent_holds() {
    let imds = imds();
    let sb = Sandbox::new("clone-ignore-nostate");
    enroll(&sb, &imds, &[]);
    std::fs::remove_file(sb.state_dir.join("state.json")).unwrap();
    sb.set_machine(CLONE_UUID, CLONE_MID, "web02");
    let r = sb.run(
        &imds.url(),
        &["connect", "--clone-policy", "ignore", "--json"],
        &[],
    );
    r.expect_code(0).log_has("ignoring it");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["resource_name"], "web01", "{v}");
    assert_eq!(sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn generalize_online_disconnects_locally_and_removes_state() {
    let imds = imds();
    let sb = Sandbox::new("gen-online");
    enroll(&sb, &imds, &[]);
    // Online means sysroot "/": point the identity files elsewhere is not possible, so run with the
    // default sysroot and the sandbox's state dir and agent.
    let mut c = sb.cmd(&imds.url());
    c.env_remove("ARC_ENROLL_SYSROOT").arg("generalize");
    let r = run_guarded(c, Duration::from_secs(60));
    r.expect_code(0).out_has("generalized");
    assert!(sb.state().is_none());
    let d = sb.agent_calls_of("disconnect");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["argv"][1], "--force-local-only");
    assert_eq!(
        machines(&sb),
        vec!["web01"],
        "generalize keeps the Azure resource"
    );
    // Idempotent.
    let mut c = sb.cmd(&imds.url());
    c.env_remove("ARC_ENROLL_SYSROOT").arg("generalize");
    run_guarded(c, Duration::from_secs(60))
        .expect_code(0)
        .out_has("already generalized");
}

#[test]
fn generalize_offline_on_a_mounted_image_runs_nothing_inside_it() {
    let imds = imds();
    let sb = Sandbox::new("gen-offline");
    let img = &sb.sysroot;
    for f in [
        "var/opt/azcmagent/certs/x.pem",
        "var/opt/azcmagent/tokens/t.key",
        "var/lib/arc-enroll/state.json",
    ] {
        let p = img.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "x").unwrap();
    }
    std::fs::write(img.join("var/opt/azcmagent/agentconfig.json"), "{}").unwrap();
    std::fs::create_dir_all(img.join("usr/bin")).unwrap();
    std::fs::write(img.join("usr/bin/arc-enroll"), "binary").unwrap();
    let r = sb.run(
        &imds.url(),
        &["generalize", "--state-dir", "/var/lib/arc-enroll"],
        &[],
    );
    r.expect_code(0)
        .log_has("removed")
        .log_has("agentconfig.json")
        .log_has("machine-id");
    assert!(!img.join("var/opt/azcmagent/certs").exists());
    assert!(!img.join("var/opt/azcmagent/tokens").exists());
    assert!(!img.join("var/opt/azcmagent/agentconfig.json").exists());
    assert!(!img.join("var/lib/arc-enroll/state.json").exists());
    assert!(img.join("usr/bin/arc-enroll").exists(), "the binary stays");
    assert_eq!(
        read(&img.join("etc/machine-id")),
        "",
        "machine-id emptied so systemd makes a new one"
    );
    assert!(
        sb.agent_calls().is_empty(),
        "no agent call on an offline image"
    );
    assert_eq!(imds.requests().len(), 0);
}

#[test]
fn status_json_shape() {
    let imds = imds();
    let sb = Sandbox::new("status");
    let r = sb.run(&imds.url(), &["status", "--json"], &[]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["clone"]["verdict"], "not-enrolled");
    enroll(&sb, &imds, &[]);
    let r = sb.run(&imds.url(), &["status", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["state"]["resource_name"], "web01");
    assert_eq!(v["agent"]["status"], "Connected");
    assert!(v["agent"]["last_heartbeat"].as_str().unwrap().len() > 10);
    assert_eq!(v["clone"]["verdict"], "same-machine");
    assert_eq!(v["machine"]["product_uuid"], PRODUCT_UUID);
    sb.set_machine(CLONE_UUID, MACHINE_ID, "web01");
    let r = sb.run(&imds.url(), &["status", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["clone"]["verdict"], "clone");
    assert!(v["clone"]["evidence"][0]
        .as_str()
        .unwrap()
        .contains(CLONE_UUID));
    let r = sb.run(&imds.url(), &["status"], &[]);
    r.expect_code(0).out_has("CLONE");
    let before = imds.requests().len();
    assert_eq!(
        before, 2,
        "status needs no token (only the enrollment asked IMDS)"
    );
}

#[test]
fn disconnect_deletes_the_resource_and_local_only_keeps_it() {
    let imds = imds();
    let sb = Sandbox::new("disc");
    enroll(&sb, &imds, &[]);
    sb.run(&imds.url(), &["disconnect", "--local-only"], &[])
        .expect_code(0);
    assert!(sb.state().is_none());
    assert_eq!(machines(&sb), vec!["web01"]);
    enroll(&sb, &imds, &[]);
    let tokens_before = imds.token_requests();
    let r = sb.run(&imds.url(), &["disconnect"], &[]);
    r.expect_code(0).out_has("deleted");
    assert_eq!(
        imds.token_requests(),
        tokens_before + 1,
        "a fresh token for the full disconnect"
    );
    assert!(machines(&sb).is_empty());
    assert!(sb.state().is_none());
}

#[test]
fn failed_disconnect_keeps_state() {
    let imds = imds();
    let sb = Sandbox::new("disc-fail");
    enroll(&sb, &imds, &[]);
    // The resource vanished in Azure: the agent's full disconnect fails (AZCM0043).
    std::fs::remove_dir_all(sb.azure_dir.join("machines")).unwrap();
    let r = sb.run(&imds.url(), &["disconnect"], &[]);
    r.expect_code(5).log_has("--local-only");
    assert!(
        sb.state().is_some(),
        "state is cleared only after the agent succeeded"
    );
}

#[test]
fn two_concurrent_runs_make_one_connect_call() {
    let imds = imds();
    let sb = Sandbox::new("concurrent");
    sb.agent_behaviour(json!({"connect_hang_secs": 1}));
    let spawn = || {
        let mut c = sb.cmd(&imds.url());
        c.arg("connect")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let a = spawn();
    let b = spawn();
    let oa = wait_with_limit(a, Duration::from_secs(60));
    let ob = wait_with_limit(b, Duration::from_secs(60));
    assert_eq!(
        oa.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert_eq!(
        ob.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    assert_eq!(
        sb.agent_calls_of("connect").len(),
        1,
        "one connect call in total"
    );
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&oa.stderr),
        String::from_utf8_lossy(&ob.stderr)
    );
    assert!(
        logs.contains("another arc-enroll run holds"),
        "the second run waited for the lock:\n{logs}"
    );
    assert!(logs.contains("already enrolled"), "{logs}");
}

#[test]
fn sigterm_mid_connect_stops_the_agent_removes_the_token_file_and_keeps_state() {
    let imds = imds();
    let sb = Sandbox::new("sigterm");
    sb.agent_behaviour(json!({"connect_hang_secs": 60}));
    let mut c = sb.cmd(&imds.url());
    c.arg("connect")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    // Wait until the agent's connect has started (it records the call first).
    let start = Instant::now();
    while sb.agent_calls_of("connect").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "connect never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = wait_with_limit(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let call = &sb.agent_calls_of("connect")[0];
    let token_file = call["config_file"]["path"].as_str().unwrap();
    assert!(
        !std::path::Path::new(token_file).exists(),
        "token file removed"
    );
    let agent_pid = call["pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{agent_pid}")).exists(),
        "agent child gone"
    );
    assert!(sb.state().is_none(), "state unchanged");
}

#[test]
fn corrupt_state_is_reported_and_treated_as_absent() {
    let imds = imds();
    let sb = Sandbox::new("corrupt");
    std::fs::create_dir_all(&sb.state_dir).unwrap();
    std::fs::write(sb.state_dir.join("state.json"), "{\"resource_id\": tru").unwrap();
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(0)
        .log_has("state.json")
        .log_has("treating it as absent");
    assert_eq!(sb.state().unwrap()["resource_name"], "web01");
    // Empty file too.
    std::fs::write(sb.state_dir.join("state.json"), "").unwrap();
    sb.run(&imds.url(), &["status"], &[])
        .expect_code(0)
        .out_has("unusable");
}

#[test]
fn power_cut_leftover_temp_file_is_ignored() {
    let imds = imds();
    let sb = Sandbox::new("powercut");
    enroll(&sb, &imds, &[]);
    let good = read(&sb.state_dir.join("state.json"));
    // A write that never got renamed (pid 999999 is not running).
    std::fs::write(
        sb.state_dir.join(".state.json.tmp.999999"),
        "{\"resource_id\": \"half",
    )
    .unwrap();
    let r = sb.run(&imds.url(), &[], &[]);
    r.expect_code(0).log_has("already enrolled");
    assert_eq!(read(&sb.state_dir.join("state.json")), good);
}

#[test]
fn changed_settings_are_reported_and_reconnect_on_change_moves_the_machine() {
    let imds = imds();
    let sb = Sandbox::new("change");
    enroll(&sb, &imds, &[]);
    let r = sb.run(&imds.url(), &["connect", "--tags", "env=prod"], &[]);
    r.expect_code(0)
        .log_has("tags are")
        .log_has("--reconnect-on-change");
    assert_eq!(sb.agent_calls_of("connect").len(), 1);
    let r = sb.run(
        &imds.url(),
        &["connect", "--tags", "env=prod", "--reconnect-on-change"],
        &[],
    );
    r.expect_code(0);
    assert_eq!(sb.agent_calls_of("connect").len(), 2);
    assert_eq!(sb.state().unwrap()["tags"]["env"], "prod");
}

/// A decoy of "this machine's own files" next to the image, with a fingerprint of its contents.
fn decoy_host(sb: &Sandbox) -> (std::path::PathBuf, Vec<(std::path::PathBuf, String)>) {
    let host = sb.root.join("host");
    let files = [
        "etc/machine-id",
        "etc/hostname",
        "var/opt/azcmagent/agentconfig.json",
        "var/opt/azcmagent/certs/host.pem",
        "var/lib/arc-enroll/state.json",
    ];
    let mut snap = Vec::new();
    for f in files {
        let p = host.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let content = format!("HOST {f}\n");
        std::fs::write(&p, &content).unwrap();
        snap.push((p, content));
    }
    (host, snap)
}

fn host_untouched(snap: &[(std::path::PathBuf, String)], what: &str) {
    for (p, content) in snap {
        assert_eq!(
            std::fs::read_to_string(p).ok().as_deref(),
            Some(content.as_str()),
            "{what}: host file {} was changed",
            p.display()
        );
    }
}

/// Issue 12 item 6: links inside a mounted image that point out of it (absolute or relative, as the
/// last component or on the way) never make `generalize --sysroot` empty or delete host files.
#[test]
fn generalize_offline_never_follows_a_link_out_of_the_image() {
    use std::os::unix::fs::symlink;
    let imds = imds();
    // (what, set up the image given the decoy host dir, expected exit code)
    type Setup = fn(&std::path::Path, &std::path::Path);
    let cases: &[(&str, Setup, i32)] = &[
        (
            "absolute link as etc/machine-id",
            |img, host| {
                std::fs::remove_file(img.join("etc/machine-id")).unwrap();
                symlink(host.join("etc/machine-id"), img.join("etc/machine-id")).unwrap();
            },
            0,
        ),
        (
            "relative link as etc/machine-id",
            |img, _| {
                std::fs::remove_file(img.join("etc/machine-id")).unwrap();
                symlink("../../host/etc/machine-id", img.join("etc/machine-id")).unwrap();
            },
            0,
        ),
        (
            "etc itself a relative link",
            |img, _| {
                std::fs::remove_dir_all(img.join("etc")).unwrap();
                symlink("../host/etc", img.join("etc")).unwrap();
            },
            1,
        ),
        (
            "var/opt/azcmagent an absolute link",
            |img, host| {
                std::fs::create_dir_all(img.join("var/opt")).unwrap();
                symlink(
                    host.join("var/opt/azcmagent"),
                    img.join("var/opt/azcmagent"),
                )
                .unwrap();
            },
            1,
        ),
        (
            "var an absolute link",
            |img, host| {
                symlink(host.join("var"), img.join("var")).unwrap();
            },
            1,
        ),
        (
            "var/lib/arc-enroll (the state dir) a relative link",
            |img, _| {
                std::fs::create_dir_all(img.join("var/lib")).unwrap();
                symlink(
                    "../../../host/var/lib/arc-enroll",
                    img.join("var/lib/arc-enroll"),
                )
                .unwrap();
            },
            1,
        ),
    ];
    for (what, setup, code) in cases {
        let sb = Sandbox::new("gen-link");
        let (host, snap) = decoy_host(&sb);
        setup(&sb.sysroot, &host);
        let r = sb.run(
            &imds.url(),
            &["generalize", "--state-dir", "/var/lib/arc-enroll"],
            &[],
        );
        assert_eq!(r.code, Some(*code), "{what}: {}", r.stderr);
        host_untouched(&snap, what);
        if *code != 0 {
            assert!(r.stderr.contains("symbolic link"), "{what}: {}", r.stderr);
        } else {
            assert!(
                r.stderr.contains("not a regular file"),
                "{what}: {}",
                r.stderr
            );
            assert!(
                std::fs::symlink_metadata(sb.sysroot.join("etc/machine-id"))
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "{what}: the link itself is left"
            );
        }
    }
}

/// Issue 12 item 6: reads under --sysroot (machine-id, product_uuid, hostname) follow no link out
/// of the image and survive any bytes.
#[test]
fn reads_under_a_sysroot_follow_no_link_out_of_it_and_survive_any_bytes() {
    use std::os::unix::fs::symlink;
    let imds = imds();
    let sb = Sandbox::new("sysroot-read");
    let (host, _snap) = decoy_host(&sb);
    let img = &sb.sysroot;
    std::fs::remove_file(img.join("etc/machine-id")).unwrap();
    symlink(host.join("etc/machine-id"), img.join("etc/machine-id")).unwrap();
    std::fs::remove_file(img.join("etc/hostname")).unwrap();
    symlink("../../host/etc/hostname", img.join("etc/hostname")).unwrap();
    std::fs::write(
        img.join("sys/class/dmi/id/product_uuid"),
        [0xff, 0xfe, 0x00, b'\n', 0xc3],
    )
    .unwrap();
    let r = sb.run(&imds.url(), &["status", "--json"], &[]);
    r.expect_code(0);
    assert!(!r.stdout.contains("HOST"), "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["machine"]["machine_id"], serde_json::Value::Null, "{v}");
    assert_eq!(v["machine"]["hostname"], serde_json::Value::Null, "{v}");
    assert_eq!(v["machine"]["product_uuid"], serde_json::Value::Null, "{v}");
}

/// Issue 12 item 13: SIGTERM while an IMDS request hangs used to wait for the request's own
/// time-out (10 s); now the wait ends at once: exit 143 within about a second.
#[test]
fn sigterm_during_a_hanging_imds_request_exits_143_at_once() {
    use arc_enroll_fakes::imds::Step;
    let imds =
        FakeImds::start(ImdsConfig::default().with_script([Step::Hang(Duration::from_secs(30))]));
    let sb = Sandbox::new("sigterm-imds");
    let mut c = sb.cmd(&imds.url());
    c.arg("token")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let start = Instant::now();
    while imds.requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no IMDS request");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = wait_with_limit(child, Duration::from_secs(30));
    let took = sent.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} after SIGTERM\n{stderr}"
    );
    assert_eq!(imds.requests().len(), 1, "no retry after the signal");
}

/// Is process `pid` gone (no /proc entry, or a zombie nobody has reaped yet)?
fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}

/// Issue 12 item 10: a SIGKILLed connect used to leave the agent running and the token file (valid
/// for hours) behind. Now the agent dies with us (PR_SET_PDEATHSIG) and the next run removes the
/// dead run's token directory.
#[test]
fn sigkill_mid_connect_takes_the_agent_along_and_the_next_run_removes_the_token_dir() {
    let imds = imds();
    let sb = Sandbox::new("sigkill");
    let run_dir = sb.root.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    // Not ours to remove: another user's dir, a link, a name that only looks like ours.
    std::fs::create_dir_all(run_dir.join("arc-enroll-1-x")).unwrap();
    let foreign = run_dir.join("arc-enroll-4000000-5");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::set_permissions(
        &foreign,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
    std::fs::create_dir_all(run_dir.join("elsewhere/keep")).unwrap();
    std::os::unix::fs::symlink(run_dir.join("elsewhere"), run_dir.join("arc-enroll-2-3")).unwrap();
    let env = [("ARC_ENROLL_RUNTIME_DIR", run_dir.to_str().unwrap())];
    // The SIGKILLed run's token file is there between the kill and the next run (this test checks
    // that it is, then that the next run removes it).
    sb.allow(ACCESS_TOKEN, "file:run/arc-enroll-");
    sb.agent_behaviour(json!({"connect_hang_secs": 60}));
    let mut c = sb.cmd(&imds.url());
    c.arg("connect")
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while sb.agent_calls_of("connect").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "connect never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let call = &sb.agent_calls_of("connect")[0];
    let agent_pid = call["pid"].as_u64().unwrap();
    let token_file = std::path::PathBuf::from(call["config_file"]["path"].as_str().unwrap());
    let token_dir = token_file.parent().unwrap().to_path_buf();
    assert_eq!(
        token_dir.parent().unwrap(),
        run_dir,
        "the token dir follows ARC_ENROLL_RUNTIME_DIR"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    while !process_gone(agent_pid) {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the agent (pid {agent_pid}) outlived the SIGKILLed run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("agent gone {:?} after the SIGKILL", killed.elapsed());
    assert!(
        token_file.exists(),
        "a SIGKILLed run cannot clean up after itself"
    );

    sb.agent_behaviour(json!({}));
    let r = sb.run(&imds.url(), &["connect"], &env);
    r.expect_code(0)
        .log_has("a token directory left by arc-enroll run");
    assert!(!token_dir.exists(), "the dead run's token dir is removed");
    assert!(run_dir.join("arc-enroll-1-x").exists(), "not our naming");
    assert!(
        run_dir.join("elsewhere/keep").exists(),
        "a link is not followed"
    );
    assert!(
        std::fs::symlink_metadata(run_dir.join("arc-enroll-2-3")).is_ok(),
        "a link is not ours"
    );
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(foreign.exists(), "another user's dir is not ours");
    assert_eq!(
        left.len(),
        4,
        "the second run's own token dir is gone too: {left:?}"
    );
}
