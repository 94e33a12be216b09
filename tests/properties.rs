//! Hostile input (issue 7): every parser that sees text from outside — proxy variables and
//! /etc/environment, settings and the config file, the JWT, IMDS answers, the agent's output —
//! never panics, and when it refuses, it says why in words. Property tests with proptest; the case
//! count is kept modest (PROPTEST_CASES overrides it) so this runs in seconds inside `make test`.

use std::collections::BTreeMap;
use std::time::Duration;

use arc_enroll::agent::{parse_config_value, parse_version, Show};
use arc_enroll::azure::proxy::{
    no_proxy_match, parse_etc_environment, split_url, ProxyConfig, ProxyUrl, Route,
};
use arc_enroll::cli::{Opts, Sources};
use arc_enroll::config::{
    parse_resource_id, parse_tags, render_resource_name, resolve, validate_guid, Identity,
    MachineFacts, Sourced,
};
use arc_enroll::identity::imds::classify_token_reply;
use arc_enroll::identity::token::{decode_claims_str, refusal};
use arc_enroll::retry::{parse_retry_after, Attempt};
use arc_enroll::timefmt::parse_duration;
use base64::Engine;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that looks like what a hostile or broken environment hands us: URL-ish pieces, separators,
/// quotes, percent escapes, non-ASCII, control characters.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("http://".to_string()),
        Just("https://".to_string()),
        Just("socks5://".to_string()),
        Just("://".to_string()),
        Just("@".to_string()),
        Just(":".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("::1".to_string()),
        Just("%".to_string()),
        Just("%zz".to_string()),
        Just("%41".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        Just(".".to_string()),
        Just("*".to_string()),
        Just("/".to_string()),
        Just("/24".to_string()),
        Just("=".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("\n".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("65536".to_string()),
        Just("99999999999999999999".to_string()),
        Just("169.254.169.254".to_string()),
        Just("é".to_string()),
        Just("\u{0}".to_string()),
        "[a-z0-9.-]{0,12}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

fn proxy_config(https: &str, http: &str, no_proxy: &str) -> ProxyConfig {
    ProxyConfig {
        https: ProxyUrl::parse(https)
            .ok()
            .map(|p| (p, "environment https_proxy".into())),
        http: ProxyUrl::parse(http)
            .ok()
            .map(|p| (p, "environment http_proxy".into())),
        no_proxy: Some((no_proxy.to_string(), "environment no_proxy".into())),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

proptest! {
    #![proptest_config(config())]

    // ---- proxy rules --------------------------------------------------------------------------

    #[test]
    fn proxy_parsing_and_routing_never_panic(
        https in hostile(), http in hostile(), no_proxy in hostile(), url in hostile(),
    ) {
        let cfg = proxy_config(&https, &http, &no_proxy);
        let _ = split_url(&url);
        let _ = no_proxy_match(&no_proxy, &url);
        let route = cfg.route(&url);
        let rule = match &route {
            Route::Direct { rule } | Route::Via { rule, .. } => rule,
        };
        prop_assert!(!rule.is_empty(), "every route names the rule that decided it");
        let _ = cfg.lacks_imds_bypass();
    }

    #[test]
    fn proxy_errors_are_words_and_never_hold_the_password(
        user in "[a-z]{1,8}", password in "[A-Za-z0-9!$&()*+;=~-]{6,16}", tail in hostile(),
    ) {
        // With the credentials first, whatever follows: parse or refuse, never leak.
        let s = format!("http://{user}:{password}@{tail}");
        match ProxyUrl::parse(&s) {
            Ok(p) => {
                let shown = format!("{p} {p:?}");
                prop_assert!(!shown.contains(&password), "{shown}");
            }
            Err(e) => {
                prop_assert!(e.len() > 10, "a clear error, got {e:?}");
                prop_assert!(!e.contains(&password), "the error leaks the password: {e}");
            }
        }
    }

    #[test]
    fn a_well_formed_proxy_never_shows_its_password(
        user in "[a-z][a-z0-9]{0,8}", password in "[A-Za-z0-9]{8,16}",
        host in "[a-z][a-z0-9-]{0,12}(\\.[a-z]{2,5}){0,2}", port in 1u16..,
    ) {
        let p = ProxyUrl::parse(&format!("http://{user}:{password}@{host}:{port}")).unwrap();
        prop_assert_eq!(p.password(), Some(password.as_str()));
        prop_assert_eq!(p.port, port);
        let shown = format!("{p} {p:?} {}", p.host_port());
        prop_assert!(!shown.contains(&password), "{}", shown);
        // And a route through it, logged, does not show it either.
        let cfg = proxy_config(&format!("http://{user}:{password}@{host}:{port}"), "", "");
        let logged = format!("{:?}", cfg.route("https://management.azure.com/"));
        prop_assert!(!logged.contains(&password), "{}", logged);
    }

    #[test]
    fn imds_is_never_proxied_whatever_no_proxy_says(no_proxy in hostile()) {
        // The IMDS client does not consult these rules at all (CONTRACT §3); but an explicit
        // 169.254.169.254 entry must always match, wherever it sits in a hostile list.
        let list = format!("{no_proxy},169.254.169.254");
        prop_assert!(no_proxy_match(&list, "169.254.169.254").is_some(), "{list:?}");
    }

    #[test]
    fn etc_environment_parsing_never_panics(content in hostile(), more in hostile()) {
        let text = format!("{content}\nHTTPS_PROXY={more}\nexport no_proxy=\"{more}\"\n# {content}");
        let map: BTreeMap<String, String> = parse_etc_environment(&text);
        for k in map.keys() {
            prop_assert!(!k.is_empty());
        }
    }

    // ---- settings -----------------------------------------------------------------------------

    #[test]
    fn tags_parse_or_say_why(s in hostile()) {
        match parse_tags(&s) {
            Ok(tags) => for (k, _) in tags { prop_assert!(!k.is_empty()) },
            Err(e) => prop_assert!(e.len() > 10, "unclear error {e:?} for {s:?}"),
        }
    }

    #[test]
    fn tags_round_trip_through_the_agents_form(
        tags in proptest::collection::btree_map("[A-Za-z][A-Za-z0-9_.-]{0,10}", "[A-Za-z0-9 _.:-]{0,12}", 0..5),
    ) {
        prop_assume!(!tags.is_empty());
        let trimmed: BTreeMap<String, String> =
            tags.iter().map(|(k, v)| (k.clone(), v.trim().to_string())).collect();
        let arg = arc_enroll::agent::tags_arg(&trimmed);
        prop_assert_eq!(parse_tags(&arg).unwrap(), trimmed);
    }

    #[test]
    fn durations_parse_or_say_why(s in hostile(), n in 0u64..100_000) {
        if let Err(e) = parse_duration(&s) {
            prop_assert!(e.len() > 10, "unclear error {e:?}");
        }
        prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_duration(&format!("{n}m")), Ok(Duration::from_secs(n * 60)));
        let _ = parse_retry_after(&s);
    }

    #[test]
    fn guids_and_resource_ids_never_panic(s in hostile(), g in "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}") {
        if let Err(e) = validate_guid(&s) {
            prop_assert!(e.len() > 10, "unclear error {e:?}");
        }
        prop_assert!(validate_guid(&g).is_ok(), "{g} is a GUID");
        let _ = parse_resource_id(&s);
        let _ = parse_resource_id(&format!("/subscriptions/{g}/resourceGroups/{s}/providers/{s}"));
    }

    #[test]
    fn resource_name_templates_render_valid_names_or_refuse(
        template in hostile(), host in proptest::option::of(hostile()),
        uuid in proptest::option::of(hostile()), mid in proptest::option::of(hostile()),
    ) {
        let facts = MachineFacts { hostname: host, product_uuid: uuid, machine_id: mid, instance_id: None };
        let t = Sourced::new(format!("{template}{{hostname}}"), "property test");
        match render_resource_name(&t, &facts) {
            Ok(name) => {
                prop_assert!(!name.is_empty());
                prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{name:?}");
                prop_assert!(!name.ends_with(['-', '_']), "{name:?}");
            }
            Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
        }
    }

    #[test]
    fn any_json_config_file_resolves_or_is_a_usage_error(json in arbitrary_json()) {
        let dir = std::env::temp_dir().join(format!("arc-enroll-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("config-{:x}.json", rand_suffix(&json)));
        std::fs::write(&path, &json).unwrap();
        let opts = Opts {
            config: Some(path.display().to_string()),
            sysroot: Some("/nonexistent-sysroot".into()),
            ..Default::default()
        };
        let r = resolve(&opts, &Sources::default(), &BTreeMap::new());
        let _ = std::fs::remove_file(&path);
        if let Err(e) = r {
            prop_assert_eq!(e.exit_code(), 2, "{}", e);
            let msg = e.to_string();
            prop_assert!(msg.contains("config") || msg.contains("setting"), "{}", msg);
        }
    }

    // ---- the token and IMDS -------------------------------------------------------------------

    #[test]
    fn jwt_decoding_never_panics(s in hostile(), payload in arbitrary_json()) {
        if let Err(e) = decode_claims_str(&s) {
            prop_assert!(e.len() > 10, "unclear error {e:?}");
        }
        // A well-formed envelope around any JSON payload: claims, or a reason.
        let jwt = format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(&payload));
        match decode_claims_str(&jwt) {
            Ok(c) => {
                let r = refusal(&c, 1_700_000_000, &["https://management.azure.com/"], None);
                if let Some(why) = r { prop_assert!(why.len() > 10) }
            }
            Err(e) => prop_assert!(e.len() > 10, "unclear error {e:?}"),
        }
    }

    #[test]
    fn imds_answers_are_classified_never_panic(
        status in prop_oneof![Just(200u16), Just(400), Just(404), Just(410), Just(429), Just(500), 100u16..600],
        body in prop_oneof![hostile(), arbitrary_json()],
        ra in proptest::option::of(0u64..120),
    ) {
        let ids = [
            Identity::SystemAssigned,
            Identity::ClientId("11111111-1111-1111-1111-111111111111".into()),
        ];
        for id in &ids {
            match classify_token_reply(status, &body, ra.map(Duration::from_secs), id) {
                Attempt::Done(tok) => prop_assert!(!tok.expose().is_empty()),
                Attempt::Retry { reason, .. } | Attempt::Poll { reason, .. } => prop_assert!(reason.contains(&status.to_string()) || reason.len() > 10, "{reason}"),
                Attempt::Fail(e) => {
                    prop_assert_eq!(e.exit_code(), 3, "{}", e);
                    let msg = e.to_string();
                    prop_assert!(msg.len() > 20, "{}", msg);
                }
            }
        }
    }

    // ---- the agent's output -------------------------------------------------------------------

    #[test]
    fn agent_output_parsing_never_panics(out in prop_oneof![hostile(), arbitrary_json()], prefix in hostile()) {
        let _ = Show::parse(&out);
        let _ = Show::parse(&format!("{prefix}{out}"));
        let _ = parse_version(&out);
        let _ = parse_config_value(&out, "proxy.url");
        let _ = parse_config_value(&format!("proxy.url : {out}"), "proxy.url");
        let _ = arc_enroll::agent::classify(Some(42), &out);
    }
}

/// Arbitrary JSON text: objects with the real keys and random values, plus random shapes.
fn arbitrary_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        hostile().prop_map(serde_json::Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| v.to_string()),
        1 => hostile(),
    ]
}

/// Keys the parsers look for (config file, IMDS, claims, agent show), and random ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "subscription_id",
            "resource_group",
            "tenant_id",
            "location",
            "resource_name",
            "tags",
            "cloud",
            "proxy",
            "no_proxy",
            "timeout",
            "identity",
            "resource_id",
            "client_id",
            "object_id",
            "agent",
            "clone_policy",
            "access_token",
            "expires_in",
            "expires_on",
            "resource",
            "error",
            "error_description",
            "tid",
            "aud",
            "exp",
            "xms_mirid",
            "status",
            "resourceName",
            "vmUuid",
            "value",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,10}",
    ]
}

fn rand_suffix(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    std::thread::current().id().hash(&mut h);
    h.finish()
}

// ---- user-data (issue 12 item 4) -------------------------------------------------------------

/// Text that tries to break out of a YAML scalar: every line break YAML 1.1 knows (cloud-init's
/// PyYAML and libyaml break lines at U+0085, U+2028 and U+2029 too), keys, indicators, plus
/// `hostile()`.
fn yaml_hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\u{2028}".to_string()),
        Just("\u{2029}".to_string()),
        Just("\u{85}".to_string()),
        Just("\r".to_string()),
        Just("\n".to_string()),
        Just("\t".to_string()),
        Just("\u{2028}bootcmd: [[sh, -c, 'touch /owned']]\u{2028}".to_string()),
        Just("\u{2028}bootcmd: [[touch, /owned]]\u{2028}x: |\u{2028} ".to_string()),
        Just("\nruncmd:\n- x\n".to_string()),
        Just("#".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("|".to_string()),
        Just("&a *a !!str".to_string()),
        "[a-z0-9 .-]{0,12}",
        hostile(),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

/// Mostly text a setting may hold (YAML indicators, quotes, non-ASCII: accepted, so the generator
/// sees them), sometimes `yaml_hostile()` (mostly refused by `resolve`).
fn setting_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9][a-zA-Z0-9 .:#\"&*!|>@%=,é東-]{0,16}",
        1 => yaml_hostile(),
    ]
}

/// A tag name or value: mostly one the agent's form can carry, sometimes `yaml_hostile()`.
fn tag_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z]([a-zA-Z0-9 .:#\"*!|@,é東-]{0,10}[a-z])?",
        1 => yaml_hostile(),
    ]
}

/// The parsed user-data: only the generator's keys, and the embedded config decoded.
fn parse_user_data(text: &str) -> Result<serde_json::Value, String> {
    let doc: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| format!("not YAML: {e}\n{text}"))?;
    let top: Vec<&String> = doc.as_object().ok_or("not a mapping")?.keys().collect();
    if top != ["runcmd", "write_files"] {
        return Err(format!("top-level keys {top:?}\n{text}"));
    }
    let files = doc["write_files"].as_array().ok_or("write_files")?;
    if files.len() != 1 {
        return Err(format!("{} write_files entries\n{text}", files.len()));
    }
    let f = files[0].as_object().ok_or("write_files[0]")?;
    let keys: Vec<&String> = f.keys().collect();
    if keys != ["content", "encoding", "owner", "path", "permissions"] {
        return Err(format!("write_files[0] keys {keys:?}\n{text}"));
    }
    if f["path"] != "/etc/arc-enroll/config.json" || f["encoding"] != "b64" {
        return Err(format!("path/encoding {f:?}"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(f["content"].as_str().ok_or("content")?)
        .map_err(|e| format!("content is not base64: {e}"))?;
    serde_json::from_slice(&raw).map_err(|e| format!("content is not JSON: {e}"))
}

proptest! {
    #![proptest_config(config())]

    /// For any setting values: either `resolve` refuses them (exit 2), or the user-data parses to
    /// exactly the generator's keys and its config.json is exactly what `config_json` built.
    #[test]
    fn user_data_has_only_its_keys_and_the_config_round_trips(
        resource_name in proptest::option::of(setting_text()),
        tags in proptest::option::of(proptest::collection::btree_map(tag_text(), tag_text(), 1..4)),
        proxy in proptest::option::of(setting_text()),
        no_proxy in proptest::option::of(setting_text()),
        state_dir in proptest::option::of(setting_text()),
        azcmagent in proptest::option::of(setting_text()),
        agent_url in proptest::option::of(setting_text()),
        fetch in any::<bool>(),
    ) {
        let mut cfg = serde_json::Map::new();
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                cfg.insert(k.into(), v);
            }
        };
        put("resource_name", resource_name.map(|v| format!("{v}{{hostname}}").into()));
        put("tags", tags.map(|t| serde_json::json!(t)));
        put("proxy", proxy.map(|v| format!("http://{v}").into()));
        put("no_proxy", no_proxy.map(Into::into));
        put("state_dir", state_dir.map(Into::into));
        put("azcmagent", azcmagent.map(Into::into));
        put("agent_installer_url", agent_url.map(|v| format!("https://{v}").into()));
        let json = serde_json::Value::Object(cfg).to_string();
        let dir = std::env::temp_dir().join(format!("arc-enroll-prop-ud-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("config-{:x}.json", rand_suffix(&json)));
        std::fs::write(&path, &json).unwrap();
        let opts = Opts {
            config: Some(path.display().to_string()),
            sysroot: Some("/nonexistent-sysroot".into()),
            ..Default::default()
        };
        let r = resolve(&opts, &Sources::default(), &BTreeMap::new());
        let _ = std::fs::remove_file(&path);
        match r {
            Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
            Ok(settings) => {
                let (config, _notes) = arc_enroll::commands::userdata::config_json(&settings);
                let f = arc_enroll::commands::userdata::Fetch {
                    url: "https://example.invalid/arc-enroll".into(),
                    sha256: "0".repeat(64),
                };
                let text = arc_enroll::commands::userdata::render(&config, fetch.then_some(&f));
                let parsed = parse_user_data(&text);
                prop_assert!(parsed.is_ok(), "{}", parsed.unwrap_err());
                prop_assert_eq!(parsed.unwrap(), config.clone());
                let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
                let runcmd = doc["runcmd"].as_array().unwrap();
                if fetch {
                    prop_assert_eq!(runcmd.len(), 2);
                    prop_assert_eq!(&runcmd[0][2], &serde_json::json!(arc_enroll::commands::userdata::fetch_script(&f, &config)));
                    prop_assert_eq!(&runcmd[1], &serde_json::json!(["/usr/local/bin/arc-enroll", "connect"]));
                } else {
                    prop_assert_eq!(runcmd, &vec![serde_json::json!(["arc-enroll", "connect"])]);
                }
            }
        }
    }
}

/// The reported attack: a tag value that, JSON-encoded, still holds U+2028 (serde_json leaves it
/// as is), which YAML 1.1 reads as a line break: before the fix it added a root `bootcmd:`.
#[test]
fn a_line_separator_in_a_tag_cannot_add_a_bootcmd() {
    // With the old `content: |` block, PyYAML (cloud-init) read this as top-level keys
    // write_files, bootcmd: [[touch, /owned]], x and runcmd (seen on the old binary).
    let value = "x\u{2028}bootcmd: [[touch, /owned]]\u{2028}x: |\u{2028} ";
    let mut tags = BTreeMap::new();
    tags.insert("k".to_string(), value.to_string());
    tags.insert(
        "k2".to_string(),
        "x\u{2028}bootcmd: [[sh, -c, 'touch /owned']]\u{2028}y".to_string(),
    );
    // The generator alone (as if a caller built settings past `resolve`'s checks).
    let config = serde_json::json!({ "tags": tags });
    let text = arc_enroll::commands::userdata::render(&config, None);
    let parsed = parse_user_data(&text).unwrap();
    assert_eq!(parsed, config);
    // And `resolve` refuses it in the first place, naming the setting and where it came from.
    let dir = std::env::temp_dir().join(format!("arc-enroll-prop-bc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let opts = Opts {
        config: Some(path.display().to_string()),
        sysroot: Some("/nonexistent-sysroot".into()),
        ..Default::default()
    };
    let e = resolve(&opts, &Sources::default(), &BTreeMap::new()).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("tags") && msg.contains("\\u{2028}") && msg.contains("config file"),
        "{msg}"
    );
}
