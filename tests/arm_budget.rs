//! Issue 17: frugal ARM use and throttling as ARM documents it (FACTS §12), against the fake ARM
//! with ARM's token buckets (`arc_enroll_fakes::ratelimit`): on the happy path `connect` makes two
//! ARM reads and says so; a low reported budget slows the next read down before ARM throttles it
//! and leaves out the advisory name read; a 429 from an empty bucket is waited out per
//! `Retry-After` and counted.

mod common;

use arc_enroll_fakes::arm::{self, ArmConfig, FakeArm};
use arc_enroll_fakes::ratelimit::Limits;
use common::*;

struct World {
    sb: Sandbox,
    imds: FakeImds,
    arm: FakeArm,
}

fn world(name: &str, tweak: impl FnOnce(&mut ArmConfig)) -> World {
    let sb = Sandbox::new(name);
    let imds = FakeImds::start(ImdsConfig::default());
    let arm = sb.fake_arm(tweak);
    World { sb, imds, arm }
}

impl World {
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let ca = self.arm.ca_pem().display().to_string();
        let url = self.arm.url();
        let mut env: Vec<(&str, &str)> = vec![
            ("ARC_ENROLL_ARM_ENDPOINT", url.as_str()),
            ("SSL_CERT_FILE", ca.as_str()),
        ];
        env.extend_from_slice(extra);
        self.sb.run(&self.imds.url(), args, &env)
    }

    /// arc-enroll's own ARM requests (the fake agent is not pointed at the fake ARM here).
    fn ours(&self) -> Vec<arm::Recorded> {
        let oid = self.imds.config().system_object_id.clone();
        self.arm
            .requests()
            .into_iter()
            .filter(|r| r.bearer_oid.as_deref() == Some(oid.as_str()))
            .collect()
    }
}

fn json_result(r: &Run) -> serde_json::Value {
    let line = r.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// The global buckets ×0.01 (reads 37.5 tokens), the read bucket refilled at `refill`/s; each
/// principal's as documented. arc-enroll is told the same scale.
fn scaled(refill: f64) -> Limits {
    let mut l = Limits::scaled(0.01);
    l.principal = Limits::documented().principal;
    l.global[0].refill_per_sec = refill;
    l
}

#[test]
fn connect_reads_arm_twice_on_the_happy_path_and_reports_the_count() {
    let w = world("budget-two-reads", |c| {
        c.rate_limits = Some(Limits::documented())
    });
    let r = w.run(&["connect", "--json"], &[]);
    r.expect_code(0);
    let ours = w.ours();
    let paths: Vec<&str> = ours.iter().map(|q| q.path.as_str()).collect();
    assert_eq!(ours.len(), 2, "{paths:?}");
    assert!(
        paths[0].ends_with(arm::PERMISSIONS_PATH_SUFFIX),
        "{paths:?}"
    );
    assert!(
        paths[1].contains("/providers/Microsoft.HybridCompute/machines/"),
        "{paths:?}"
    );
    let v = json_result(&r);
    assert_eq!(v["arm_requests"], 2, "{v}");
    assert_eq!(v["arm_throttled"], 0, "{v}");
    r.log_has("ARM requests this run: 2 (0 answered 429");
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn providers_are_read_when_roles_are_missing() {
    let w = world("budget-roles-missing", |c| c.permissions_missing_polls = 1);
    let r = w.run(&["connect", "--json"], &[("ARC_ENROLL_TIMEOUT", "10m")]);
    r.expect_code(0);
    let provider_reads: Vec<String> = w
        .ours()
        .into_iter()
        .filter(|q| {
            q.path.contains("/providers/Microsoft.") && !q.path.contains("/resourceGroups/")
        })
        .map(|q| q.path)
        .collect();
    // First poll: roles missing, so the three required providers too; second poll: roles there.
    assert_eq!(provider_reads.len(), 3, "{provider_reads:?}");
    let v = json_result(&r);
    assert_eq!(v["arm_requests"], 2 + 3 + 1, "{v}");
}

#[test]
fn a_low_global_budget_leaves_out_the_advisory_name_read() {
    // 36 reads by other VMs leave 1.5 of 37.5 tokens: arc-enroll's permission read leaves under
    // a tenth of the bucket, so the name check (the agent's AZCM0044 answers it too) is skipped.
    // The other VMs read right before arc-enroll's first request, whenever that comes.
    let oid = ImdsConfig::default().system_object_id;
    let w = world("budget-low-name", |c| {
        c.rate_limits = Some(scaled(0.2));
        c.others_read_before_first_of = Some((oid, 36));
    });
    let r = w.run(
        &["connect", "--json"],
        &[("ARC_ENROLL_ARM_LIMITS_SCALE", "0.01")],
    );
    r.expect_code(0);
    r.log_has("ARM's read budget is low (");
    r.log_has("not checking whether web01 is taken, the agent will report a conflict");
    let ours = w.ours();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].path.ends_with(arm::PERMISSIONS_PATH_SUFFIX));
    assert_eq!(json_result(&r)["arm_requests"], 1);
    assert_eq!(w.sb.agent_calls_of("connect").len(), 1);
}

#[test]
fn a_low_global_budget_slows_the_next_read_before_arm_throttles_it() {
    // Global reads: 37.5 tokens refilled at 2/s; 36 reads by other VMs leave 1.5. Roles are
    // missing at the first poll, so the three provider reads follow the permission read: an
    // unpaced one right after it would find under one token and get a 429.
    let oid = ImdsConfig::default().system_object_id;
    let w = world("budget-low-pace", |c| {
        c.rate_limits = Some(scaled(2.0));
        c.permissions_missing_polls = 1;
        c.others_read_before_first_of = Some((oid, 36));
    });
    let r = w.run(
        &["connect", "--json"],
        &[("ARC_ENROLL_ARM_LIMITS_SCALE", "0.01")],
    );
    r.expect_code(0);
    r.log_has("ARM budget low:");
    r.log_has("left in the subscription's global bucket; waiting");
    let ours = w.ours();
    assert!(ours.iter().all(|q| q.status != 429), "{ours:?}");
    assert!(
        ours[1].path.ends_with("/providers/Microsoft.HybridCompute"),
        "{ours:?}"
    );
    // Paced: 0.5 to 1.5 × (3.75 − 0.5) / 3.75 s, at least 430 ms, between the two reads (the
    // other VMs read right before arc-enroll's first, whenever that comes, so 0.5 is what the
    // first read leaves); an unpaced second read follows the first within a few milliseconds.
    let gap = ours[1].at - ours[0].at;
    assert!(gap >= std::time::Duration::from_millis(300), "{gap:?}");
    let v = json_result(&r);
    assert_eq!(v["arm_throttled"], 0, "{v}");
    assert_eq!(v["arm_requests"], ours.len(), "{v}");
}

#[test]
fn an_empty_bucket_is_waited_out_per_retry_after_and_counted() {
    // 37 reads by other VMs right before arc-enroll's first leave half a token, refilled at
    // 0.1/s: arc-enroll's first read is answered 429 Retry-After 5; after it, the budget is low,
    // so no name read follows.
    let oid = ImdsConfig::default().system_object_id;
    let w = world("budget-empty", |c| {
        c.rate_limits = Some(scaled(0.1));
        c.others_read_before_first_of = Some((oid, 37));
    });
    let r = w.run(
        &["connect", "--json"],
        &[("ARC_ENROLL_ARM_LIMITS_SCALE", "0.01")],
    );
    r.expect_code(0);
    r.log_has("HTTP 429: SubscriptionRequestsThrottled");
    r.log_has("server asked for Retry-After ");
    let ours = w.ours();
    let throttled = ours.iter().filter(|q| q.status == 429).count();
    assert!(throttled >= 1, "{ours:?}");
    assert_eq!(ours.len() - throttled, 1, "{ours:?}");
    let v = json_result(&r);
    assert_eq!(v["arm_throttled"], throttled, "{v}");
    assert_eq!(v["arm_requests"], ours.len(), "{v}");
    r.log_has(&format!(
        "ARM requests this run: {} ({throttled} answered 429",
        ours.len()
    ));
}
