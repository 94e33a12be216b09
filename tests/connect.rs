//! The real binary against the fake IMDS and the fake azcmagent: the `connect` path (issue 3).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use arc_enroll_fakes::imds::UserIdentity;
use common::*;
use serde_json::json;

fn imds() -> FakeImds {
    FakeImds::start(ImdsConfig::default())
}

#[test]
fn system_assigned_enrolls_with_derived_settings_and_a_private_token_file() {
    let imds = imds();
    let sb = Sandbox::new("sa");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(0)
        .out_has("enrolled")
        .log_has("derived from the token's xms_mirid claim");
    let connects = sb.agent_calls_of("connect");
    assert_eq!(connects.len(), 1, "one connect call");
    let c = &connects[0];
    let argv = c["argv"].as_array().unwrap();
    let cfg = imds.config();
    let has = |flag: &str, val: &str| argv.windows(2).any(|w| w[0] == flag && w[1] == val);
    assert!(has("--subscription-id", &cfg.subscription_id), "{argv:?}");
    assert!(has("--resource-group", &cfg.resource_group), "{argv:?}");
    assert!(has("--tenant-id", &cfg.tenant_id), "{argv:?}");
    assert!(has("--location", &cfg.location), "{argv:?}");
    assert!(has("--resource-name", "web01"), "{argv:?}");
    assert!(
        !argv.iter().any(|a| a == "--access-token"),
        "token must not be on the command line"
    );
    // Token file: 0600 in a 0700 dir, removed afterwards.
    assert_eq!(c["config_file"]["mode"], "600");
    assert_eq!(c["config_file"]["dir_mode"], "700");
    let path = c["config_file"]["path"].as_str().unwrap();
    assert!(
        !std::path::Path::new(path).exists(),
        "token file {path} must be removed"
    );
    // The agent's NO_PROXY keeps its local calls local.
    assert_eq!(c["env"]["NO_PROXY"], "169.254.169.254,localhost,127.0.0.1");
    // State: 0600 in 0700.
    let st = sb.state().expect("state written");
    assert_eq!(st["resource_name"], "web01");
    assert_eq!(st["fingerprint"]["product_uuid"], PRODUCT_UUID);
    let mode = std::fs::metadata(sb.state_dir.join("state.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let dmode = std::fs::metadata(&sb.state_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!((mode, dmode), (0o600, 0o700));
    // IMDS was asked for the ARM audience, directly, with the Metadata header.
    let reqs = imds.requests();
    let tok = reqs.iter().find(|r| r.is_token_request()).unwrap();
    assert_eq!(tok.param("resource"), Some("https://management.azure.com/"));
    assert!(!tok.via_proxy);
    assert_eq!(tok.header("Metadata"), Some("true"));
}

#[test]
fn json_result_line() {
    let imds = imds();
    let sb = Sandbox::new("json");
    let r = sb.run(&imds.url(), &["connect", "--json"], &[]);
    r.expect_code(0);
    let v: serde_json::Value =
        serde_json::from_str(r.stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(v["ok"], true);
    assert_eq!(v["resource_name"], "web01");
}

#[test]
fn user_assigned_by_each_selector_reaches_imds_with_the_right_parameter() {
    let cfg = ImdsConfig::default();
    let ua = cfg.uami("uami-arc");
    let imds = FakeImds::start(ImdsConfig::default().with_user_assigned(ua.clone()));
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, String);
    let cases: Vec<Case> = vec![
        (
            "seed UAMI_ID",
            vec![("UAMI_ID", ua.resource_id.clone())],
            "msi_res_id",
            ua.resource_id.clone(),
        ),
        (
            "seed UAMI_CLIENT_ID",
            vec![("UAMI_CLIENT_ID", ua.client_id.clone())],
            "client_id",
            ua.client_id.clone(),
        ),
        (
            "ARC_ENROLL_OBJECT_ID",
            vec![("ARC_ENROLL_OBJECT_ID", ua.object_id.clone())],
            "object_id",
            ua.object_id.clone(),
        ),
    ];
    for (name, env, param, value) in cases {
        let sb = Sandbox::new("ua");
        let before = imds.requests().len();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = sb.run(&imds.url(), &["connect"], &env);
        r.expect_code(0);
        let reqs = imds.requests();
        let tok = reqs[before..]
            .iter()
            .find(|r| r.is_token_request())
            .unwrap_or_else(|| panic!("{name}: no token request"));
        assert_eq!(tok.param(param), Some(value.as_str()), "{name}");
        let st = sb.state().unwrap();
        assert!(
            st["identity"]
                .as_str()
                .unwrap()
                .starts_with("user-assigned"),
            "{name}: {st}"
        );
    }
}

#[test]
fn identity_not_found_exits_3_with_advice_and_never_runs_the_agent() {
    let imds = FakeImds::start(ImdsConfig::default().without_system_assigned());
    let sb = Sandbox::new("noid");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(3)
        .log_has("Identity not found")
        .log_has("system-assigned");
    assert_eq!(sb.agent_calls_of("connect").len(), 0);
    assert_eq!(imds.token_requests(), 1, "a 400 is not retried");
}

#[test]
fn imds_410_and_429_are_retried_and_each_wait_is_logged() {
    let imds = FakeImds::start(ImdsConfig::default().with_script([
        Step::gone(),
        Step::gone(),
        Step::throttled_retry_after(2),
        Step::server_error(),
    ]));
    let sb = Sandbox::new("retry");
    let r = sb.run(
        &imds.url(),
        &["connect"],
        &[("ARC_ENROLL_TIME_SCALE", "20")],
    );
    r.expect_code(0)
        .log_has("HTTP 410")
        .log_has("Retry-After 2.0s")
        .log_has("HTTP 500")
        .log_has("retrying in");
    assert_eq!(imds.token_requests(), 5);
}

#[test]
fn permission_propagation_clears_after_two_attempts_with_a_fresh_token_each_time() {
    let imds = imds();
    let sb = Sandbox::new("perm");
    sb.agent_behaviour(json!({"connect_exits": [42, 42]}));
    let r = sb.run(
        &imds.url(),
        &["connect"],
        &[("ARC_ENROLL_TIME_SCALE", "50")],
    );
    r.expect_code(0).log_has("not (yet) allowed");
    assert_eq!(sb.agent_calls_of("connect").len(), 3);
    assert_eq!(
        imds.token_requests(),
        3,
        "a fresh token before every attempt"
    );
}

#[test]
fn permissions_still_missing_at_the_deadline_exit_4_naming_the_roles() {
    let imds = imds();
    let sb = Sandbox::new("perm4");
    std::fs::write(
        sb.azure_dir.join("authz.json"),
        json!({"deny_connect_attempts": 1000}).to_string(),
    )
    .unwrap();
    let r = sb.run(
        &imds.url(),
        &["connect", "--timeout", "3m"],
        &[("ARC_ENROLL_TIME_SCALE", "100")],
    );
    r.expect_code(4)
        .log_has("Azure Connected Machine Resource Manager")
        .log_has("ListAccessDetails");
    assert!(sb.agent_calls_of("connect").len() >= 3);
    assert!(sb.state().is_none(), "no state after a failure");
}

#[test]
fn transient_agent_failures_until_the_deadline_exit_7() {
    let imds = imds();
    let sb = Sandbox::new("deadline");
    sb.agent_behaviour(json!({"connect_exits": vec![26; 200]}));
    let r = sb.run(
        &imds.url(),
        &["connect", "--timeout", "2m"],
        &[("ARC_ENROLL_TIME_SCALE", "100")],
    );
    r.expect_code(7).log_has("deadline");
    assert!(
        r.elapsed.as_secs() < 30,
        "the deadline bounds the run: {:?}",
        r.elapsed
    );
}

#[test]
fn name_conflict_exits_6_with_template_advice() {
    let imds = imds();
    let parent = Sandbox::new("conflict-a");
    parent.run(&imds.url(), &["connect"], &[]).expect_code(0);
    // Another machine, same hostname, shares the same "Azure".
    let other = Sandbox::new("conflict-b");
    other.set_machine(
        "11111111-2222-3333-4444-555555555555",
        "ffffffffffffffffffffffffffffffff",
        "web01",
    );
    let r = other.run(
        &imds.url(),
        &["connect"],
        &[("FAKE_AZURE_DIR", parent.azure_dir.to_str().unwrap())],
    );
    r.expect_code(6).log_has("{vm_uuid8}");
    assert_eq!(
        other.agent_calls_of("connect").len(),
        1,
        "a name conflict is not retried"
    );
}

#[test]
fn already_enrolled_rerun_is_a_no_op_without_imds_or_connect() {
    let imds = imds();
    let sb = Sandbox::new("idem");
    sb.run(&imds.url(), &["connect"], &[]).expect_code(0);
    let before = imds.requests().len();
    let r = sb.run(&imds.url(), &[], &[]);
    r.expect_code(0)
        .log_has("already enrolled")
        .out_has("nothing to do");
    assert_eq!(
        imds.requests().len(),
        before,
        "zero IMDS requests on a re-run"
    );
    assert_eq!(
        sb.agent_calls_of("connect").len(),
        1,
        "zero connect calls on a re-run"
    );
}

#[test]
fn bad_settings_exit_2_before_any_network_call() {
    let imds = imds();
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        ("non-GUID subscription", &["--subscription-id", "abc"], &[]),
        (
            "non-GUID tenant from env",
            &[],
            &[("ARC_ENROLL_TENANT_ID", "xyz")],
        ),
        (
            "seed SUBSCRIPTION_ID",
            &[],
            &[("SUBSCRIPTION_ID", "not-a-guid")],
        ),
        (
            "bad resource id",
            &["--identity-resource-id", "/subscriptions/x"],
            &[],
        ),
        (
            "two selectors",
            &[
                "--client-id",
                "11111111-1111-1111-1111-111111111111",
                "--object-id",
                "11111111-1111-1111-1111-111111111111",
            ],
            &[],
        ),
        ("bad duration", &["--timeout", "soon"], &[]),
        ("bad proxy", &["--proxy", "http://u:p@:0"], &[]),
        ("bad tag", &["--tags", "novalue"], &[]),
        ("bad location", &["--location", "West-Europe!"], &[]),
        ("bad clone policy", &["--clone-policy", "maybe"], &[]),
    ];
    for (name, args, env) in cases {
        let sb = Sandbox::new("bad");
        let mut a = vec!["connect"];
        a.extend_from_slice(args);
        let r = sb.run(&imds.url(), &a, env);
        assert_eq!(r.code, Some(2), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("invalid setting") || r.stderr.contains("at most one identity"),
            "{name}: {}",
            r.stderr
        );
    }
    assert_eq!(imds.requests().len(), 0, "no IMDS request for bad input");

    let sb = Sandbox::new("badcfg");
    std::fs::write(&sb.config, r#"{"subscriptionid": "x"}"#).unwrap();
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(2).log_has("unknown field `subscriptionid`");
    assert_eq!(imds.requests().len(), 0);
}

#[test]
fn missing_agent_exits_5_before_asking_for_a_token() {
    let imds = imds();
    let sb = Sandbox::new("noagent");
    let r = sb.run(
        &imds.url(),
        &["connect"],
        &[("ARC_ENROLL_AZCMAGENT", "/nonexistent/azcmagent")],
    );
    r.expect_code(5).log_has("--install-agent");
    assert_eq!(imds.requests().len(), 0);
}

#[test]
fn refused_tokens_exit_3_and_never_reach_the_agent() {
    let cases = [
        ("expired", Step::expired(60), "expired"),
        ("short-lived", Step::short_lived(120), "of life left"),
        (
            "wrong aud",
            Step::wrong_aud("https://graph.microsoft.com/"),
            "audience",
        ),
    ];
    for (name, step, needle) in cases {
        let imds = FakeImds::start(ImdsConfig::default().with_script([step]));
        let sb = Sandbox::new("refused");
        let r = sb.run(&imds.url(), &["connect"], &[]);
        assert_eq!(r.code, Some(3), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{name}: {}", r.stderr);
        assert_eq!(sb.agent_calls_of("connect").len(), 0, "{name}");
    }
    // A tenant that differs from the configured one.
    let imds = imds();
    let sb = Sandbox::new("tenant");
    let r = sb.run(
        &imds.url(),
        &[
            "connect",
            "--tenant-id",
            "99999999-9999-9999-9999-999999999999",
        ],
        &[],
    );
    r.expect_code(3)
        .log_has("differs from the configured tenant");
}

#[test]
fn null_token_is_never_handed_to_the_agent() {
    let imds = FakeImds::start(ImdsConfig::default().with_script(vec![Step::NullToken; 500]));
    let sb = Sandbox::new("null");
    let r = sb.run(
        &imds.url(),
        &["connect", "--timeout", "1m"],
        &[("ARC_ENROLL_TIME_SCALE", "100")],
    );
    r.expect_code(3).log_has("empty or null");
    assert_eq!(sb.agent_calls_of("connect").len(), 0);
}

#[test]
fn the_token_never_appears_in_any_log_at_any_level() {
    let imds = imds();
    let sb = Sandbox::new("secret");
    sb.agent_behaviour(json!({"connect_exits": [12]}));
    let r = sb.run(
        &imds.url(),
        &["connect", "-vv"],
        &[("RUST_LOG", "trace"), ("ARC_ENROLL_TIME_SCALE", "50")],
    );
    r.expect_code(0);
    let toks = sb.tokens_seen();
    assert_eq!(toks.len(), 2, "two connect attempts, two tokens");
    for t in &toks {
        assert_no_secret(&r, t, "the access token");
        // Not even the signature part or the payload alone.
        for part in t.split('.') {
            assert!(!r.stderr.contains(part), "a token part leaked into the log");
        }
    }
    assert!(
        r.stderr.contains("TRACE") || r.stderr.contains("DEBUG"),
        "the run was really verbose"
    );
}

#[test]
fn token_on_command_line_switches_to_access_token() {
    let imds = imds();
    let sb = Sandbox::new("cmdline");
    // --token-on-command-line: the agent's argv is the channel the test asks for.
    sb.allow(ACCESS_TOKEN, "agent-argv:connect");
    let r = sb.run(&imds.url(), &["connect", "--token-on-command-line"], &[]);
    r.expect_code(0);
    let c = &sb.agent_calls_of("connect")[0];
    let argv = c["argv"].as_array().unwrap();
    assert!(argv.iter().any(|a| a == "--access-token"));
    assert!(c.get("config_file").is_none() || c["config_file"].is_null());
    for t in sb.tokens_seen() {
        assert_no_secret(&r, &t, "the token passed on the command line");
    }
}

#[test]
fn token_command_prints_claims_and_derivations_but_not_the_token() {
    let imds = imds();
    let sb = Sandbox::new("tokencmd");
    let r = sb.run(&imds.url(), &["token"], &[]);
    r.expect_code(0)
        .out_has("tid")
        .out_has("xms_mirid")
        .out_has("derived from the token's xms_mirid claim");
    assert!(!r.stdout.contains("eyJ"), "no JWT on stdout: {}", r.stdout);
    let r = sb.run(&imds.url(), &["token", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["claims"]["aud"], "https://management.azure.com/");
    assert_eq!(
        v["settings"]["location"]["source"],
        "IMDS instance metadata"
    );
}

#[test]
fn location_required_when_imds_has_no_instance_metadata() {
    let imds = FakeImds::start(ImdsConfig {
        instance_metadata: false,
        ..Default::default()
    });
    let sb = Sandbox::new("noloc");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(2).log_has("--location");
    let r = sb.run(&imds.url(), &["connect"], &[("LOCATION", "westeurope")]);
    r.expect_code(0);
    let c = &sb.agent_calls_of("connect")[0];
    assert!(c["argv"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "westeurope"));
}

#[test]
fn seed_flow_variables_are_honoured_below_flags() {
    let imds = imds();
    let sb = Sandbox::new("seed");
    let sub = "abababab-abab-abab-abab-abababababab";
    let r = sb.run(
        &imds.url(),
        &["connect", "--resource-group", "rg-flag"],
        &[
            ("SUBSCRIPTION_ID", sub),
            ("RESOURCE_GROUP", "rg-seed"),
            ("LOCATION", "northeurope"),
        ],
    );
    r.expect_code(0)
        .log_has("environment SUBSCRIPTION_ID (seed flow variable)")
        .log_has("flag --resource-group");
    let argv = sb.agent_calls_of("connect")[0]["argv"].clone();
    let argv: Vec<&str> = argv
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        argv.windows(2)
            .any(|w| w == ["--resource-group", "rg-flag"]),
        "{argv:?}"
    );
    assert!(
        argv.windows(2).any(|w| w == ["--subscription-id", sub]),
        "{argv:?}"
    );
    assert!(
        argv.windows(2).any(|w| w == ["--location", "northeurope"]),
        "{argv:?}"
    );
}

#[test]
fn agent_failing_mid_way_is_cleaned_locally_before_the_next_attempt() {
    let imds = imds();
    let sb = Sandbox::new("cleanup");
    sb.agent_behaviour(json!({"connect_exits": [62]}));
    let r = sb.run(
        &imds.url(),
        &["connect"],
        &[("ARC_ENROLL_TIME_SCALE", "50")],
    );
    r.expect_code(0).log_has("may have created /subscriptions/");
    let subs: Vec<String> = sb
        .agent_calls()
        .iter()
        .map(|c| {
            c["argv"][0].as_str().unwrap_or("").to_string()
                + " "
                + c["argv"][1].as_str().unwrap_or("")
        })
        .collect();
    let i62 = subs.iter().position(|s| s.starts_with("connect")).unwrap();
    assert!(
        subs[i62 + 1..]
            .iter()
            .any(|s| s.starts_with("disconnect --force-local-only")),
        "{subs:?}"
    );
}

#[test]
fn permanent_agent_error_exits_5_with_its_output() {
    let imds = imds();
    let sb = Sandbox::new("perm5");
    sb.agent_behaviour(json!({"connect_exits": [20]}));
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(5).log_has("AZCM0020");
    assert_eq!(sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn user_assigned_identity_answering_a_system_assigned_request_is_reported() {
    let base = ImdsConfig::default();
    let ua = base.uami("only-one");
    let imds = FakeImds::start(
        ImdsConfig::default()
            .without_system_assigned()
            .with_user_assigned(ua),
    );
    let sb = Sandbox::new("quirk");
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(0)
        .log_has("got a token for the user-assigned identity");
    let _ = UserIdentity::new("x");
}

#[test]
fn an_agent_hanging_past_the_deadline_is_stopped_and_the_token_stays_out_of_the_error() {
    let imds = imds();
    let sb = Sandbox::new("hang");
    // --token-on-command-line: the agent's argv is the channel the test asks for.
    sb.allow(ACCESS_TOKEN, "agent-argv:connect");
    sb.agent_behaviour(json!({"connect_hang_secs": 600}));
    let r = sb.run(
        &imds.url(),
        &["connect", "--token-on-command-line", "--timeout", "2m"],
        &[("ARC_ENROLL_TIME_SCALE", "200")],
    );
    r.expect_code(7)
        .log_has("did not finish in time")
        .log_has("azcmagent connect");
    for t in sb.tokens_seen() {
        assert_no_secret(&r, &t, "the token passed on the command line");
    }
    let pid = sb.agent_calls_of("connect")[0]["pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the hung agent was stopped"
    );
    assert!(r.elapsed.as_secs() < 30, "{:?}", r.elapsed);
}

/// Issue 12 item 8: what we pass as `--tags` parses back, the way the agent documents its form
/// (FACTS §1.2, the fake agent's parser), to exactly the configured tags.
#[test]
fn tags_reach_the_agent_exactly_as_configured() {
    let imds = imds();
    let sb = Sandbox::new("tagsrt");
    std::fs::write(
        &sb.config,
        json!({"tags": {
            "Owner": "Shared Infra",
            "list": "a,b,c",
            "eq": "x=y",
            "quote\"d": "say \"hi\"",
            "empty": "",
            "ünï": "cödé 東京"
        }})
        .to_string(),
    )
    .unwrap();
    let r = sb.run(&imds.url(), &["connect"], &[]);
    r.expect_code(0);
    let agent: serde_json::Value =
        serde_json::from_str(&read(&sb.agent_dir.join("agent.json"))).unwrap();
    assert_eq!(
        agent["tags"],
        json!({"Owner": "Shared Infra", "list": "a,b,c", "eq": "x=y", "quote\"d": "say \"hi\"",
               "empty": "", "ünï": "cödé 東京"}),
        "{}",
        r.stderr
    );
}

/// Issue 12 item 8: a tag the agent's form cannot carry (a `'`, which would end the quoting and
/// start a second tag; `=` in a name; blanks the agent trims; a line separator) is refused with
/// exit 2 naming the tag, before any IMDS request or agent call.
#[test]
fn tags_the_agent_cannot_carry_are_refused_before_any_network_call() {
    let imds = imds();
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "quote in value",
            json!({"env": "prod',admin=yes"}),
            "single quote",
        ),
        ("quote in name", json!({"it's": "x"}), "single quote"),
        ("= in name", json!({"a=b": "x"}), "'='"),
        ("blank around value", json!({"k": " v"}), "blank"),
        (
            "line separator",
            json!({"k": "a\u{2028}b"}),
            "line separator",
        ),
        ("NEL", json!({"k": "a\u{85}b"}), "line separator"),
    ];
    for (name, tags, why) in cases {
        let sb = Sandbox::new("badtag");
        std::fs::write(&sb.config, json!({ "tags": tags }).to_string()).unwrap();
        let r = sb.run(&imds.url(), &["connect"], &[]);
        assert_eq!(r.code, Some(2), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("invalid setting tags") && r.stderr.contains(why),
            "{name}: {}",
            r.stderr
        );
        assert!(sb.agent_calls_of("connect").is_empty(), "{name}");
    }
    // On the command line too: "it's" in double quotes is our syntax for a value holding a quote.
    let sb = Sandbox::new("badtagflag");
    let r = sb.run(&imds.url(), &["connect", "--tags", "a=\"it's\",b=c"], &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("\"a\""), "names the tag: {}", r.stderr);
    assert_eq!(imds.requests().len(), 0, "no IMDS request for bad tags");
}

/// Issue 12 item 7: a config file, state dir or agent that a non-root user other than us could
/// change is refused (sshd StrictModes: the file and every directory above it owned by root or us
/// and not group/world-writable), before any IMDS request; the state dir and lock are never
/// followed through a symbolic link.
#[test]
fn files_another_user_could_change_are_refused() {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let imds = imds();
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    // (what, set up the sandbox, expected exit, words in the error)
    type Setup = fn(&Sandbox, &dyn Fn(&std::path::Path, u32));
    let cases: &[(&str, Setup, i32, &str)] = &[
        ("config file g+w", |sb, m| m(&sb.config, 0o664), 2, "config"),
        ("config dir o+w", |sb, m| m(&sb.root, 0o757), 2, "config"),
        (
            "config owned by nobody",
            |sb, _| chown(&sb.config, Some(65534), None).unwrap(),
            2,
            "uid 65534",
        ),
        (
            "state dir g+w",
            |sb, m| {
                std::fs::create_dir_all(&sb.state_dir).unwrap();
                m(&sb.state_dir, 0o770)
            },
            2,
            "state_dir",
        ),
        (
            "state dir owned by nobody",
            |sb, _| {
                std::fs::create_dir_all(&sb.state_dir).unwrap();
                chown(&sb.state_dir, Some(65534), None).unwrap()
            },
            2,
            "uid 65534",
        ),
        (
            "state dir a symlink",
            |sb, _| {
                std::fs::create_dir_all(sb.root.join("elsewhere")).unwrap();
                symlink(sb.root.join("elsewhere"), &sb.state_dir).unwrap()
            },
            2,
            "symbolic link",
        ),
        (
            "lock a symlink",
            |sb, _| {
                std::fs::create_dir_all(&sb.state_dir).unwrap();
                std::fs::write(sb.root.join("victim"), "keep").unwrap();
                symlink(sb.root.join("victim"), sb.state_dir.join("lock")).unwrap()
            },
            1,
            "lock",
        ),
        (
            "agent in a dir owned by nobody",
            |sb, _| {
                let d = sb.root.join("bin");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::copy(fake_agent_bin(), d.join("azcmagent")).unwrap();
                chown(&d, Some(65534), None).unwrap();
            },
            5,
            "uid 65534",
        ),
        (
            "agent world-writable",
            |sb, m| {
                let d = sb.root.join("bin");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::copy(fake_agent_bin(), d.join("azcmagent")).unwrap();
                m(&d.join("azcmagent"), 0o777);
            },
            5,
            "writable by group and others",
        ),
    ];
    for (what, setup, code, words) in cases {
        let sb = Sandbox::new("strict");
        mode(&sb.root, 0o755);
        mode(&sb.config, 0o600);
        setup(&sb, &mode);
        let agent = sb.root.join("bin/azcmagent");
        let env: Vec<(&str, &str)> = if agent.exists() {
            vec![("ARC_ENROLL_AZCMAGENT", agent.to_str().unwrap())]
        } else {
            vec![]
        };
        let before = imds.requests().len();
        let r = sb.run(&imds.url(), &["connect"], &env);
        assert_eq!(r.code, Some(*code), "{what}: {}", r.stderr);
        assert!(r.stderr.contains(words), "{what}: {}", r.stderr);
        assert!(sb.agent_calls().is_empty(), "{what}: the agent never ran");
        if *code == 2 {
            assert_eq!(imds.requests().len(), before, "{what}: no IMDS request");
        }
        if what.starts_with("lock") {
            assert_eq!(
                read(&sb.root.join("victim")),
                "keep",
                "the lock's target is untouched"
            );
        }
    }
}

/// Issue 12 item 13: a FIFO as the config file used to block forever waiting for a writer (SIGTERM
/// ignored); now any non-regular config file is refused at once with exit 2.
#[test]
fn a_fifo_or_directory_as_config_is_refused_at_once() {
    let imds = imds();
    let sb = Sandbox::new("fifo");
    let fifo = sb.root.join("config.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (what, path) in [("FIFO", fifo.clone()), ("directory", sb.root.clone())] {
        let mut c = sb.cmd(&imds.url());
        c.args(["connect", "--config", path.to_str().unwrap()]);
        let r = run_guarded(c, Duration::from_secs(10));
        assert_eq!(r.code, Some(2), "{what}: {}", r.stderr);
        assert!(
            r.stderr.contains(what) && r.stderr.contains("not a regular file"),
            "{what}: {}",
            r.stderr
        );
        assert!(
            r.elapsed < Duration::from_secs(2),
            "{what}: took {:?}",
            r.elapsed
        );
    }
    assert_eq!(imds.requests().len(), 0);
}
