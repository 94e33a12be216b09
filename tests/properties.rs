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
        let facts = MachineFacts { hostname: host, product_uuid: uuid, machine_id: mid };
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
