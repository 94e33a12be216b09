//! The fake ARM's token buckets over HTTPS (FACTS §12): off by default; on, every answer carries
//! the remaining budgets and an empty bucket answers 429 with Retry-After.

use arc_enroll_fakes::arm::{ArmConfig, FakeArm};
use arc_enroll_fakes::arm_client::request;
use arc_enroll_fakes::jwt;
use arc_enroll_fakes::ratelimit::Limits;
use serde_json::json;

const SUB: &str = "7a3c1d2e-0000-4000-8000-000000000001";

fn token(oid: &str) -> String {
    jwt::mint(
        &json!({"oid": oid, "appid": oid, "tid": "t", "aud": "https://management.azure.com/"}),
    )
}

fn providers(arm: &FakeArm) -> String {
    format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.HybridCompute?api-version=2021-04-01",
        arm.url()
    )
}

#[test]
fn off_by_default_no_headers_no_throttling() {
    let arm = FakeArm::start(ArmConfig::default());
    for _ in 0..5 {
        let a = request("GET", &providers(&arm), arm.ca_pem(), &token("a"), None).unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("x-ms-ratelimit-remaining-subscription-reads"),
            None
        );
    }
}

#[test]
fn scaled_buckets_throttle_per_principal_and_globally() {
    // ×0.01: principal reads 2.5 @ 0.25/s, global reads 37.5; writes 2 @ 0.1/s, global 30. The
    // global buckets barely refill (0.001/s), so the counts below do not depend on how fast this
    // machine runs the test.
    let mut limits = Limits::scaled(0.01);
    for b in limits.global.iter_mut() {
        b.refill_per_sec = 0.001;
    }
    let arm = FakeArm::start(ArmConfig {
        rate_limits: Some(limits),
        ..Default::default()
    });
    let url = providers(&arm);
    let a1 = request("GET", &url, arm.ca_pem(), &token("a"), None).unwrap();
    assert_eq!(a1.status, 200);
    assert_eq!(
        a1.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("1")
    );
    assert_eq!(
        a1.header("x-ms-ratelimit-remaining-subscription-global-reads"),
        Some("36")
    );
    assert_eq!(
        request("GET", &url, arm.ca_pem(), &token("a"), None)
            .unwrap()
            .status,
        200
    );
    let t = request("GET", &url, arm.ca_pem(), &token("a"), None).unwrap();
    assert_eq!(t.status, 429, "{}", t.body);
    // 0.5 token left at 0.25/s: 2 s (1 s when the test took over a second to get here).
    assert!(
        matches!(t.header("retry-after"), Some("2") | Some("1")),
        "{:?}",
        t.header("retry-after")
    );
    assert_eq!(
        t.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("0")
    );
    assert!(
        t.body.contains("SubscriptionRequestsThrottled"),
        "{}",
        t.body
    );
    // Another principal still reads; the global bucket lost the two admitted reads only.
    let b = request("GET", &url, arm.ca_pem(), &token("b"), None).unwrap();
    assert_eq!(b.status, 200);
    assert_eq!(
        b.header("x-ms-ratelimit-remaining-subscription-global-reads"),
        Some("34")
    );
    // A write (PUT of a machine: 404 here, no azure dir) is metered as a write.
    let put = request(
        "PUT",
        &format!(
            "{}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m?api-version=2024-07-10",
            arm.url()
        ),
        arm.ca_pem(),
        &token("a"),
        Some(r#"{"location":"eastus"}"#),
    )
    .unwrap();
    assert_eq!(
        put.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("1")
    );
    assert_eq!(
        put.header("x-ms-ratelimit-remaining-subscription-global-writes"),
        Some("29")
    );
    // Many principals empty the global read bucket: 34 tokens left.
    let ok = (0..40)
        .filter(|i| {
            request("GET", &url, arm.ca_pem(), &token(&format!("p{i}")), None)
                .unwrap()
                .status
                == 200
        })
        .count();
    assert_eq!(ok, 34);
    let last = request("GET", &url, arm.ca_pem(), &token("fresh"), None).unwrap();
    assert_eq!(last.status, 429);
    assert_eq!(
        last.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("2")
    );
    assert_eq!(
        last.header("x-ms-ratelimit-remaining-subscription-global-reads"),
        Some("0")
    );
    let reqs = arm.requests();
    assert_eq!(reqs.iter().filter(|r| r.status == 429).count(), 1 + 6 + 1);
}

#[test]
fn the_fake_agents_resource_write_is_charged_and_a_429_waited_out() {
    // The principal's write bucket holds one token, refilled at 0.5/s.
    let mut limits = Limits::documented();
    limits.principal[1].capacity = 1.0;
    limits.principal[1].refill_per_sec = 0.5;
    let arm = FakeArm::start(ArmConfig {
        rate_limits: Some(limits),
        ..Default::default()
    });
    let root = std::env::temp_dir().join(format!("fake-arm-agent-meter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let sys = root.join("sysroot");
    std::fs::create_dir_all(sys.join("sys/class/dmi/id")).unwrap();
    std::fs::create_dir_all(sys.join("etc")).unwrap();
    std::fs::write(
        sys.join("sys/class/dmi/id/product_uuid"),
        "4c4c4544-0051-3010-8052-000000000001\n",
    )
    .unwrap();
    std::fs::write(sys.join("etc/hostname"), "m1\n").unwrap();
    let now = jwt::now_unix();
    let t = jwt::mint(&json!({
        "oid": "agent-principal", "appid": "a", "tid": "11111111-1111-1111-1111-111111111111",
        "aud": "https://management.azure.com/", "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
    }));
    // Another write by the same principal takes the one token.
    let first = request(
        "PUT",
        &format!(
            "{}/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/other?api-version=2024-07-10",
            arm.url()
        ),
        arm.ca_pem(),
        &t,
        Some("{}"),
    )
    .unwrap();
    assert_ne!(first.status, 429);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fake-azcmagent"))
        .args([
            "connect",
            "--access-token",
            &t,
            "--subscription-id",
            SUB,
            "--resource-group",
            "rg1",
            "--location",
            "westeurope",
        ])
        .env("FAKE_AZCMAGENT_DIR", root.join("agent"))
        .env("FAKE_AZCMAGENT_SYSROOT", &sys)
        .env("FAKE_AZURE_DIR", root.join("azure"))
        .env("FAKE_AZCMAGENT_ARM_ENDPOINT", arm.url())
        .env("FAKE_AZCMAGENT_ARM_CA", arm.ca_pem())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let puts: Vec<u16> = arm
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/machines/m1"))
        .map(|r| r.status)
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(puts[0], 429, "{puts:?}");
    assert_ne!(puts[1], 429, "{puts:?}");
    let _ = std::fs::remove_dir_all(&root);
}
