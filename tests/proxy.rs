//! A real HTTP proxy (tinyproxy): traffic for Azure goes through it, IMDS never does, whatever
//! the environment says.

mod common;

use std::time::Duration;

use arc_enroll::azure::http::Http;
use arc_enroll::azure::proxy::{ProxyConfig, ProxyUrl};
use common::*;

#[test]
fn imds_is_never_proxied_even_with_https_proxy_set_and_no_proxy_empty() {
    let proxy = Tinyproxy::start(None);
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("proxy-imds");
    let p = proxy.url();
    let env = [
        ("HTTPS_PROXY", p.as_str()),
        ("https_proxy", p.as_str()),
        ("http_proxy", p.as_str()),
        ("HTTP_PROXY", p.as_str()),
        ("ALL_PROXY", p.as_str()),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
        // Set by the agent's installer; must be ignored (FACTS §1.7).
        (
            "IDENTITY_ENDPOINT",
            "http://localhost:40342/metadata/identity/oauth2/token",
        ),
        ("IMDS_ENDPOINT", "http://localhost:40342"),
    ];
    let r = sb.run(&imds.url(), &["connect"], &env);
    r.expect_code(0)
        .log_has("NO_PROXY does not list 169.254.169.254");
    let reqs = imds.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|r| !r.via_proxy),
        "an IMDS request went through a proxy"
    );
    let port = imds.addr().port().to_string();
    assert!(
        !proxy.log_text().contains(&format!("127.0.0.1:{port}")),
        "the proxy saw IMDS traffic:\n{}",
        proxy.log_text()
    );
    // The agent is told about the proxy: environment and proxy.url, with IMDS kept local.
    let c = &sb.agent_calls_of("connect")[0];
    assert_eq!(c["env"]["HTTPS_PROXY"], p.as_str());
    assert_eq!(c["env"]["NO_PROXY"], "169.254.169.254,localhost,127.0.0.1");
    let sets = sb.agent_calls_of("config");
    assert!(
        sets.iter()
            .any(|s| s["argv"] == serde_json::json!(["config", "set", "proxy.url", p])),
        "proxy.url reconciled before connect: {sets:?}"
    );
    // Re-run on a connected machine leaves proxy.url alone (it already matches).
    let r = sb.run(&imds.url(), &["connect"], &env);
    r.expect_code(0);
}

#[test]
fn proxy_url_already_matching_is_left_alone() {
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("proxy-same");
    let p = "http://127.0.0.1:3128";
    std::process::Command::new(fake_agent_bin())
        .args(["config", "set", "proxy.url", p])
        .env("FAKE_AZCMAGENT_DIR", &sb.agent_dir)
        .output()
        .unwrap();
    let r = sb.run(&imds.url(), &["connect", "--proxy", p], &[]);
    r.expect_code(0).log_has("already");
    let sets: Vec<_> = sb
        .agent_calls_of("config")
        .into_iter()
        .filter(|c| c["argv"][1] == "set")
        .collect();
    assert_eq!(sets.len(), 1, "only the test's own set: {sets:?}");
}

#[test]
fn the_http_engine_routes_each_request_per_curl_rules_through_a_real_proxy() {
    let proxy = Tinyproxy::start(None);
    let target = FakeImds::start(ImdsConfig::default());
    let url = format!("{}/healthz", target.url());
    let via = ProxyConfig {
        https: None,
        http: Some((ProxyUrl::parse(&proxy.url()).unwrap(), "test".into())),
        no_proxy: None,
    };
    let http = Http::new(via.clone());
    let r = http
        .request("GET", &url, &[], None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(r.status, 200);
    // ureq tunnels every proxied request with CONNECT, as it does for HTTPS to ARM.
    let connect = format!("CONNECT 127.0.0.1:{}", target.addr().port());
    assert!(
        proxy.log_text().contains(&connect),
        "proxy log lacks {connect}:\n{}",
        proxy.log_text()
    );

    // NO_PROXY with a CIDR that covers the target: direct.
    let direct = ProxyConfig {
        no_proxy: Some((" 10.0.0.0/8 , 127.0.0.0/8 ".into(), "test".into())),
        ..via
    };
    let before = proxy.log_text().len();
    let r = Http::new(direct)
        .request("GET", &url, &[], None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        proxy.log_text().len(),
        before,
        "the proxy saw a request that NO_PROXY excludes"
    );

    // IMDS: direct even with every proxy set.
    let all = ProxyConfig {
        https: Some((ProxyUrl::parse(&proxy.url()).unwrap(), "test".into())),
        http: Some((ProxyUrl::parse(&proxy.url()).unwrap(), "test".into())),
        no_proxy: None,
    };
    let before = proxy.log_text().len();
    let r = Http::new(all)
        .imds_get(&url, Duration::from_secs(5))
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!target.requests().last().unwrap().via_proxy);
    assert_eq!(
        proxy.log_text().len(),
        before,
        "the proxy saw an IMDS request"
    );
}

#[test]
fn proxy_authentication_works_and_the_password_is_never_logged() {
    let proxy = Tinyproxy::start(Some(("arc", "s3cr3t-pw")));
    let target = FakeImds::start(ImdsConfig::default());
    let url = format!("{}/healthz", target.url());
    let with = format!("http://arc:s3cr3t-pw@127.0.0.1:{}", proxy.port);
    let cfg = ProxyConfig {
        http: Some((ProxyUrl::parse(&with).unwrap(), "test".into())),
        ..Default::default()
    };
    let r = Http::new(cfg)
        .request("GET", &url, &[], None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(r.status, 200, "authenticated request through the proxy");
    let without = ProxyConfig {
        http: Some((ProxyUrl::parse(&proxy.url()).unwrap(), "test".into())),
        ..Default::default()
    };
    let e = Http::new(without)
        .request("GET", &url, &[], None, Duration::from_secs(10))
        .unwrap_err();
    assert!(
        e.to_string().contains("407") && e.to_string().contains("user:password"),
        "{e}"
    );

    // The binary, at -vv, with the password in the proxy URL: never in its output.
    let imds = FakeImds::start(ImdsConfig::default());
    let sb = Sandbox::new("proxy-auth");
    // The agent needs the credentials: in its environment (HTTPS_PROXY, readable by root only)
    // and its own config, where azcmagent keeps proxy.url (FACTS §2.3, §13).
    sb.allow(PROXY_PASSWORD, "agent-env:")
        .allow(PROXY_PASSWORD, "file:agent/agent.json");
    let r = sb.run(
        &imds.url(),
        &["connect", "-vv", "--proxy", &with],
        &[("RUST_LOG", "trace")],
    );
    r.expect_code(0).log_has("arc:***@");
    assert_no_secret(&r, "s3cr3t-pw", "the proxy password");
    let r = sb.run(
        &imds.url(),
        &["proxy", "https://management.azure.com/", "--proxy", &with],
        &[],
    );
    r.expect_code(0).out_has("via http://arc:***@");
    assert_no_secret(&r, "s3cr3t-pw", "the proxy password");
}

#[test]
fn proxy_command_explains_the_rule() {
    let sb = Sandbox::new("proxy-cmd");
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "https://management.azure.com/",
            &[("https_proxy", "http://p:3128")],
            "via http://p:3128 (https proxy from environment https_proxy",
        ),
        (
            "https://management.azure.com/",
            &[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "azure.com")],
            "direct (NO_PROXY entry \"azure.com\"",
        ),
        (
            "https://login.microsoftonline.com/",
            &[
                ("HTTPS_PROXY", "http://p:3128"),
                ("no_proxy", ".microsoftonline.com"),
            ],
            "direct",
        ),
        (
            "http://169.254.169.254/metadata",
            &[("http_proxy", "http://p:3128")],
            "IMDS is never sent through a proxy",
        ),
        (
            "http://example.com/",
            &[("HTTP_PROXY", "http://p:3128")],
            "direct (no proxy set for http",
        ),
        (
            "https://management.azure.com/",
            &[],
            "direct (no proxy set for https",
        ),
    ];
    for (url, env, want) in cases {
        let r = sb.run("http://169.254.169.254", &["proxy", url], env);
        assert_eq!(r.code, Some(0), "{url} {env:?}: {}", r.stderr);
        assert!(
            r.stdout.contains(want),
            "{url} {env:?}: got {:?}, want {want:?}",
            r.stdout
        );
    }
}

#[test]
fn etc_environment_is_the_fallback_for_cloud_init_children() {
    let sb = Sandbox::new("etcenv");
    std::fs::write(
        sb.sysroot.join("etc/environment"),
        "PATH=\"/usr/bin\"\nhttps_proxy=\"http://corp:8080\"\nno_proxy=169.254.169.254,.internal\n",
    )
    .unwrap();
    let r = sb.run(
        "http://169.254.169.254",
        &["proxy", "https://management.azure.com/"],
        &[],
    );
    r.expect_code(0)
        .out_has("via http://corp:8080")
        .out_has("etc/environment https_proxy");
    let r = sb.run(
        "http://169.254.169.254",
        &["proxy", "https://x.internal/"],
        &[],
    );
    r.expect_code(0).out_has("direct");
    // The environment wins over /etc/environment.
    let r = sb.run(
        "http://169.254.169.254",
        &["proxy", "https://management.azure.com/"],
        &[("HTTPS_PROXY", "http://env:1")],
    );
    r.expect_code(0).out_has("via http://env:1");
}
