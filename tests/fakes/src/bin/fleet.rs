//! `fleet`: N real arc-enroll processes at once against one fake IMDS that serves 20 token
//! requests/s and answers the rest 429 `Retry-After: 1` (as Azure IMDS throttles the identity
//! category, FACTS §5.3) — the "500 VMs boot from one image" morning, on one machine (`make fleet`).
//!
//! Each VM gets its own sandbox (sysroot with its own product_uuid/machine-id/hostname, state dir,
//! fake agent dir, fake-Azure dir). `--location` is passed, so every IMDS request is a token
//! request (one per agent attempt); instance-metadata requests, if any, are counted separately.
//!
//! Reports per N: successes, wall time against the ideal N/rps, token requests per enrollment,
//! p50/p99 time to enrolled (from the moment the first process is started). Loopback only.
//!
//! `--scenario arm` (issue 17): a fleet in one subscription against one fake ARM with ARM's token
//! buckets on (FACTS §12, `arc_enroll_fakes::ratelimit`): each VM has its own fake IMDS (IMDS is
//! per VM; its limits never meet another VM's), so its own managed identity — its own `oid`, its
//! own principal buckets — and all of them share the subscription's global buckets. The fake
//! agent sends its resource `PUT` to the same fake ARM (`FAKE_AZCMAGENT_ARM_ENDPOINT`), so the
//! agent's write is metered too. At most `--max-running` VMs run at once (2 cores cannot run
//! 2,000 enrollments at the same instant; see `ARM_HELP` for how that cap and the ideal are
//! defined). See `run_arm_fleet`.

use arc_enroll_fakes::arm::{ArmConfig, FakeArm};
use arc_enroll_fakes::imds::{fake_guid, FakeImds, ImdsConfig};
use arc_enroll_fakes::ratelimit::{global_bound_secs, Limits, Op};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELP: &str = "\
fleet: N arc-enroll processes at once against a throttling fake IMDS (loopback only)

USAGE: fleet --arc-enroll PATH [--n 50,200,500] [--rps 20] [--out FILE] [--keep]
       fleet --scenario arm --arc-enroll PATH [--n 200,1000,2000] [--max-running K]
             [--arm-scale F] [--baseline] [--path token|relay] [--out FILE]

  --arc-enroll PATH   the binary under test (make fleet: the release build)
  --fake-agent PATH   fake-azcmagent (default: next to this binary)
  --n LIST            fleet sizes, run one after another (default 50,200,500)
  --rps N             IMDS token requests served per second (default 20)
  --timeout DUR       each run's --timeout (default 15m)
  --out FILE          also write the report (markdown) to FILE
  --keep              keep the sandboxes (default: removed after a fully successful run)
  --scenario S        imds (default: one throttling IMDS) or arm (see below)

ARM scenario (--scenario arm): every VM its own fake IMDS and principal, one fake ARM with ARM's
token buckets per principal and per subscription (global), the fake agent's PUT metered too.
  --max-running K     at most K arc-enroll processes alive at once; the next VM starts when one
                      ends (default 200)
  --arm-scale F[,F]   every bucket size and refill rate times F, one run per F (default 1: ARM's
                      documented limits, global reads 3,750 @ 375/s, writes 3,000 @ 150/s);
                      arc-enroll gets ARC_ENROLL_ARM_LIMITS_SCALE=F so it paces by the same buckets
  --baseline          also run each N with the buckets off: the machine-bound wall time
  --path P            token (default) or relay (Private Relay: HybridCompute PUT, NetworkCloud
                      assignRelay polled per Retry-After, `azcmagent connect existing`)
  --dir DIR           where the sandboxes go (default /dev/shm, a tmpfs: each real VM has its own
                      disk, here thousands share one whose metadata writes would be the bottleneck)
";

struct Opts {
    arc_enroll: PathBuf,
    fake_agent: PathBuf,
    sizes: Vec<usize>,
    rps: u32,
    timeout: String,
    out: Option<PathBuf>,
    keep: bool,
    scenario: Scenario,
    max_running: usize,
    arm_scales: Vec<f64>,
    baseline: bool,
    path: EnrollPath,
    sizes_given: bool,
    /// Where the ARM scenario's sandboxes go.
    dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scenario {
    Imds,
    Arm,
}

/// Which enrollment flow the ARM scenario runs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum EnrollPath {
    /// `arc-enroll connect` with the identity's token (the agent creates the resource).
    Token,
    /// Private Relay: pre-created machine (HybridCompute PUT), NetworkCloud assignRelay (a
    /// long-running operation), `azcmagent connect existing` (FACTS §10).
    Relay,
}

fn fail(msg: &str) -> ! {
    eprintln!("fleet: {msg}\n\n{HELP}");
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut o = Opts {
        arc_enroll: PathBuf::new(),
        fake_agent: exe_dir.join("fake-azcmagent"),
        sizes: vec![50, 200, 500],
        rps: 20,
        timeout: "15m".into(),
        out: None,
        keep: false,
        scenario: Scenario::Imds,
        max_running: 200,
        arm_scales: vec![1.0],
        baseline: false,
        path: EnrollPath::Token,
        sizes_given: false,
        dir: PathBuf::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0)
            }
            "--arc-enroll" => o.arc_enroll = PathBuf::from(v()),
            "--fake-agent" => o.fake_agent = PathBuf::from(v()),
            "--n" => {
                o.sizes_given = true;
                o.sizes = v()
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse()
                            .unwrap_or_else(|_| fail("--n: not a list of counts"))
                    })
                    .collect()
            }
            "--rps" => o.rps = v().parse().unwrap_or_else(|_| fail("--rps: not a count")),
            "--timeout" => o.timeout = v(),
            "--out" => o.out = Some(PathBuf::from(v())),
            "--keep" => o.keep = true,
            "--scenario" => {
                o.scenario = match v().as_str() {
                    "imds" => Scenario::Imds,
                    "arm" => Scenario::Arm,
                    other => fail(&format!("--scenario: imds or arm, not {other:?}")),
                }
            }
            "--max-running" => {
                o.max_running = v()
                    .parse()
                    .ok()
                    .filter(|k| *k > 0)
                    .unwrap_or_else(|| fail("--max-running: a positive count"))
            }
            "--arm-scale" => {
                o.arm_scales = v()
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .parse()
                            .ok()
                            .filter(|f: &f64| *f > 0.0 && f.is_finite())
                            .unwrap_or_else(|| fail("--arm-scale: a list of positive numbers"))
                    })
                    .collect()
            }
            "--baseline" => o.baseline = true,
            "--dir" => o.dir = PathBuf::from(v()),
            "--path" => {
                o.path = match v().as_str() {
                    "token" => EnrollPath::Token,
                    "relay" => EnrollPath::Relay,
                    other => fail(&format!("--path: token or relay, not {other:?}")),
                }
            }
            _ => fail(&format!("unknown argument {a:?}")),
        }
    }
    if o.dir.as_os_str().is_empty() {
        let shm = Path::new("/dev/shm");
        o.dir = if shm.is_dir() && fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
    }
    if o.scenario == Scenario::Arm && !o.sizes_given {
        o.sizes = vec![200, 1000, 2000];
    }
    if !o.arc_enroll.is_file() {
        fail(&format!("--arc-enroll {:?} is not a file", o.arc_enroll));
    }
    if !o.fake_agent.is_file() {
        fail(&format!(
            "fake agent {:?} is missing (cargo build -p arc-enroll-fakes)",
            o.fake_agent
        ));
    }
    o
}

/// One VM's files.
fn sandbox(root: &Path, i: usize) -> PathBuf {
    let dir = root.join(format!("vm{i:04}"));
    let sys = dir.join("sysroot");
    fs::create_dir_all(sys.join("etc")).unwrap();
    fs::create_dir_all(sys.join("sys/class/dmi/id")).unwrap();
    fs::create_dir_all(dir.join("agent")).unwrap();
    fs::create_dir_all(dir.join("azure")).unwrap();
    fs::write(
        sys.join("sys/class/dmi/id/product_uuid"),
        format!("4c4c4544-0051-3010-8052-{i:012x}\n"),
    )
    .unwrap();
    fs::write(sys.join("etc/machine-id"), format!("{i:032x}\n")).unwrap();
    fs::write(sys.join("etc/hostname"), format!("vm{i:04}\n")).unwrap();
    fs::write(dir.join("config.json"), "{}").unwrap();
    dir
}

struct Vm {
    child: Child,
    started: Instant,
    ended: Option<(Instant, Option<i32>)>,
}

struct Report {
    n: usize,
    ok: usize,
    codes: Vec<(Option<i32>, usize)>,
    wall: f64,
    ideal: f64,
    token_requests: usize,
    other_requests: usize,
    throttled: usize,
    p50: f64,
    p99: f64,
    spawn_secs: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn run_fleet(o: &Opts, n: usize) -> Report {
    let imds = FakeImds::start(ImdsConfig {
        throttle_rps: Some(o.rps),
        ..Default::default()
    });
    let root = std::env::temp_dir().join(format!("arc-enroll-fleet-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let dirs: Vec<PathBuf> = (0..n).map(|i| sandbox(&root, i)).collect();
    let url = imds.url();

    let t0 = Instant::now();
    let mut vms: Vec<Vm> = dirs
        .iter()
        .map(|d| {
            let log = File::create(d.join("arc-enroll.log")).unwrap();
            let out = File::create(d.join("result.txt")).unwrap();
            let child = Command::new(&o.arc_enroll)
                .args(["connect", "--location", "eastus", "--timeout", &o.timeout])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("ARC_ENROLL_CONFIG", d.join("config.json"))
                .env("ARC_ENROLL_SYSROOT", d.join("sysroot"))
                .env("ARC_ENROLL_STATE_DIR", d.join("state"))
                .env("ARC_ENROLL_IMDS_ENDPOINT", &url)
                .env("ARC_ENROLL_ARM_ENDPOINT", "https://127.0.0.1:9")
                .env("ARC_ENROLL_AZCMAGENT", &o.fake_agent)
                .env("FAKE_AZCMAGENT_DIR", d.join("agent"))
                .env("FAKE_AZCMAGENT_SYSROOT", d.join("sysroot"))
                .env("FAKE_AZURE_DIR", d.join("azure"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| fail(&format!("cannot start arc-enroll: {e}")));
            Vm {
                child,
                started: Instant::now(),
                ended: None,
            }
        })
        .collect();
    let spawn_secs = t0.elapsed().as_secs_f64();

    let mut left = n;
    while left > 0 {
        for vm in vms.iter_mut().filter(|v| v.ended.is_none()) {
            if let Ok(Some(st)) = vm.child.try_wait() {
                vm.ended = Some((Instant::now(), st.code()));
                left -= 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let reqs = imds.requests();
    let token_requests = reqs.iter().filter(|r| r.is_token_request()).count();
    let throttled = reqs
        .iter()
        .filter(|r| r.is_token_request() && r.status == Some(429))
        .count();
    let mut done: Vec<f64> = Vec::new();
    let mut codes: Vec<(Option<i32>, usize)> = Vec::new();
    let mut last = 0f64;
    for vm in &vms {
        let (end, code) = vm.ended.unwrap();
        let t = end.duration_since(t0).as_secs_f64();
        last = last.max(t);
        if code == Some(0) {
            done.push(t);
        }
        match codes.iter_mut().find(|(c, _)| *c == code) {
            Some((_, k)) => *k += 1,
            None => codes.push((code, 1)),
        }
        let _ = vm.started;
    }
    done.sort_by(f64::total_cmp);
    let ok = done.len();
    if ok == n && !o.keep {
        let _ = fs::remove_dir_all(&root);
    } else {
        eprintln!("fleet: sandboxes kept in {}", root.display());
    }
    Report {
        n,
        ok,
        codes,
        wall: last,
        ideal: n as f64 / o.rps as f64,
        token_requests,
        other_requests: reqs.len() - token_requests,
        throttled,
        p50: percentile(&done, 0.50),
        p99: percentile(&done, 0.99),
        spawn_secs,
    }
}

fn main() {
    let o = parse_opts();
    if o.scenario == Scenario::Arm {
        arm_main(&o);
        return;
    }
    let mut text = format!(
        "Fleet: N arc-enroll processes started at once, each with its own sandbox and fake agent, one \
         fake IMDS serving {} token requests/s (the rest: 429 Retry-After: 1). Binary: {}. Machine: {} CPUs.\n\n\
         | N | enrolled | wall | ideal N/{} | wall/ideal | token requests | per enrollment | 429s | other IMDS requests | p50 to enrolled | p99 to enrolled | spawning took |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        o.rps,
        o.arc_enroll.display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        o.rps,
    );
    let mut all_ok = true;
    for &n in &o.sizes {
        eprintln!("fleet: N = {n} ...");
        let r = run_fleet(&o, n);
        let row = format!(
            "| {} | {}/{}{} | {:.1} s | {:.1} s | {:.2}× | {} | {:.2} | {} | {} | {:.1} s | {:.1} s | {:.1} s |\n",
            r.n,
            r.ok,
            r.n,
            if r.ok == r.n {
                String::new()
            } else {
                format!(" (exit codes {:?})", r.codes)
            },
            r.wall,
            r.ideal,
            r.wall / r.ideal,
            r.token_requests,
            r.token_requests as f64 / r.n as f64,
            r.throttled,
            r.other_requests,
            r.p50,
            r.p99,
            r.spawn_secs,
        );
        eprint!("{row}");
        all_ok &= r.ok == r.n;
        text.push_str(&row);
    }
    text.push_str(
        "\nGoal (issue 7): all enrolled, wall ≤ 1.5× ideal, token requests ≤ 3 per enrollment.\n",
    );
    print!("{text}");
    if let Some(out) = &o.out {
        let mut f = File::create(out).unwrap_or_else(|e| fail(&format!("--out: {e}")));
        let _ = f.write_all(text.as_bytes());
    }
    if !all_ok {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The ARM scenario (issue 17)

const ARM_HELP: &str = "\
How the ARM scenario is run and what its numbers mean:
- Each VM: its own sandbox, its own fake IMDS (its own managed identity: distinct oid, so its own
  principal buckets), `arc-enroll connect --location eastus --json`, the fake agent; all VMs in one
  subscription and resource group, so all share the global buckets of one fake ARM (one region).
- Concurrency cap: at most --max-running VMs alive at once; when one ends the next starts (a
  fleet that boots in waves). Time to enrolled is each VM's own (its start to its exit 0).
- Ideal wall: the least time the run could take, max(bucket bound, machine bound):
  bucket bound = max over reads/writes/deletes of max(0, (admitted − global capacity) / global
  refill), with admitted = the requests of that type ARM answered (not 429) in this run — no
  client schedule can get them through the global bucket faster (it starts full);
  machine bound = the wall time of the same run with the buckets off (--baseline), else 0.
";

struct ArmVm {
    i: usize,
    child: Child,
    imds: FakeImds,
    started: Instant,
}

struct ArmDone {
    code: Option<i32>,
    own_secs: f64,
    token_requests: usize,
    /// arc-enroll's own count of its ARM requests (`arm_requests` in the --json result), if given.
    reported_arm: Option<u64>,
}

struct ArmReport {
    n: usize,
    ok: usize,
    codes: Vec<(Option<i32>, usize)>,
    wall: f64,
    admitted: [u64; 3],
    throttled: [u64; 3],
    bucket_bound: f64,
    p50: f64,
    p99: f64,
    token_requests: usize,
    reported_arm: Option<u64>,
    max_running_seen: usize,
    /// Distinct `oid`s ARM saw (each VM is its own principal: should be N).
    principals: usize,
}

/// The command line of every VM for the chosen flow. On the Private Relay path the Nexus VM's id
/// comes from the token's `xms_mirid` claim (each VM's fake IMDS names a NetworkCloud VM).
fn vm_args(o: &Opts) -> Vec<String> {
    let mut args: Vec<String> = ["connect", "--location", "eastus", "--json", "--timeout"]
        .iter()
        .map(|s| s.to_string())
        .chain([o.timeout.clone()])
        .collect();
    if o.path == EnrollPath::Relay {
        args.push("--private-relay".into());
    }
    args
}

fn arm_vm_env(
    o: &Opts,
    d: &Path,
    imds: &str,
    arm: &FakeArm,
    azure: &Path,
    scale: f64,
) -> Vec<(String, String)> {
    let s = |p: &Path| p.display().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("ARC_ENROLL_CONFIG".into(), s(&d.join("config.json"))),
        ("ARC_ENROLL_SYSROOT".into(), s(&d.join("sysroot"))),
        ("ARC_ENROLL_STATE_DIR".into(), s(&d.join("state"))),
        ("ARC_ENROLL_IMDS_ENDPOINT".into(), imds.to_string()),
        ("ARC_ENROLL_ARM_ENDPOINT".into(), arm.url()),
        ("SSL_CERT_FILE".into(), s(arm.ca_pem())),
        ("ARC_ENROLL_AZCMAGENT".into(), s(&o.fake_agent)),
        ("FAKE_AZCMAGENT_DIR".into(), s(&d.join("agent"))),
        ("FAKE_AZCMAGENT_SYSROOT".into(), s(&d.join("sysroot"))),
        ("FAKE_AZURE_DIR".into(), s(azure)),
        ("FAKE_AZCMAGENT_ARM_ENDPOINT".into(), arm.url()),
    ];
    if scale != 1.0 {
        // The buckets arc-enroll assumes when it paces itself, scaled like the fake's (tests only).
        env.push(("ARC_ENROLL_ARM_LIMITS_SCALE".into(), scale.to_string()));
    }
    env
}

fn vm_imds(i: usize, path: EnrollPath) -> ImdsConfig {
    ImdsConfig {
        vm_resource_type: match path {
            EnrollPath::Token => "Microsoft.Compute/virtualMachines".into(),
            EnrollPath::Relay => "Microsoft.NetworkCloud/virtualMachines".into(),
        },
        vm_name: format!("vm{i:04}"),
        vm_uuid: format!("4c4c4544-0051-3010-8052-{i:012x}"),
        system_client_id: fake_guid(&format!("fleet-vm-{i}-client")),
        system_object_id: fake_guid(&format!("fleet-vm-{i}-object")),
        ..Default::default()
    }
}

fn run_arm_fleet(o: &Opts, n: usize, limits: Option<Limits>, scale: f64) -> ArmReport {
    let prep = Instant::now();
    let root = o.dir.join(format!(
        "arc-enroll-fleet-arm-{}-{n}-{}",
        std::process::id(),
        if limits.is_some() {
            format!("x{scale}")
        } else {
            "off".into()
        }
    ));
    let _ = fs::remove_dir_all(&root);
    let azure = root.join("azure");
    fs::create_dir_all(&azure).unwrap();
    let dirs: Vec<PathBuf> = (0..n).map(|i| sandbox(&root, i)).collect();
    let arm = FakeArm::start(ArmConfig {
        azure_dir: Some(azure.clone()),
        ca_dir: Some(root.join("arm")),
        rate_limits: limits.clone(),
        ..Default::default()
    });
    let args = vm_args(o);
    eprintln!(
        "fleet:   {n} sandboxes in {} ({:.1} s)",
        root.display(),
        prep.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let mut next = 0;
    let mut running: Vec<ArmVm> = Vec::new();
    let mut done: Vec<ArmDone> = Vec::new();
    let mut last_end = 0f64;
    let mut max_running_seen = 0;
    while next < n || !running.is_empty() {
        while next < n && running.len() < o.max_running {
            let d = &dirs[next];
            let imds = FakeImds::start(vm_imds(next, o.path));
            let log = File::create(d.join("arc-enroll.log")).unwrap();
            let out = File::create(d.join("result.txt")).unwrap();
            let child = Command::new(&o.arc_enroll)
                .args(&args)
                .env_clear()
                .envs(arm_vm_env(o, d, &imds.url(), &arm, &azure, scale))
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| fail(&format!("cannot start arc-enroll: {e}")));
            running.push(ArmVm {
                i: next,
                child,
                imds,
                started: Instant::now(),
            });
            next += 1;
        }
        max_running_seen = max_running_seen.max(running.len());
        let mut k = 0;
        while k < running.len() {
            match running[k].child.try_wait() {
                Ok(Some(st)) => {
                    let vm = running.swap_remove(k);
                    let now = Instant::now();
                    last_end = last_end.max(now.duration_since(t0).as_secs_f64());
                    let result =
                        fs::read_to_string(dirs[vm.i].join("result.txt")).unwrap_or_default();
                    let reported_arm = serde_json::from_str::<serde_json::Value>(result.trim())
                        .ok()
                        .and_then(|v| v.get("arm_requests").and_then(|x| x.as_u64()));
                    done.push(ArmDone {
                        code: st.code(),
                        own_secs: now.duration_since(vm.started).as_secs_f64(),
                        token_requests: vm.imds.token_requests(),
                        reported_arm,
                    });
                }
                _ => k += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let reqs = arm.requests();
    let principals = reqs
        .iter()
        .filter_map(|r| r.bearer_oid.as_deref())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut admitted = [0u64; 3];
    let mut throttled = [0u64; 3];
    for r in reqs
        .iter()
        .filter(|r| r.path.to_ascii_lowercase().starts_with("/subscriptions/"))
    {
        let k = match Op::of_method(&r.method) {
            Op::Read => 0,
            Op::Write => 1,
            Op::Delete => 2,
        };
        if r.status == 429 {
            throttled[k] += 1;
        } else {
            admitted[k] += 1;
        }
    }
    let mut times: Vec<f64> = done
        .iter()
        .filter(|d| d.code == Some(0))
        .map(|d| d.own_secs)
        .collect();
    times.sort_by(f64::total_cmp);
    let mut codes: Vec<(Option<i32>, usize)> = Vec::new();
    for d in &done {
        match codes.iter_mut().find(|(c, _)| *c == d.code) {
            Some((_, k)) => *k += 1,
            None => codes.push((d.code, 1)),
        }
    }
    let ok = times.len();
    let reported: Vec<u64> = done.iter().filter_map(|d| d.reported_arm).collect();
    if ok == n && !o.keep {
        let _ = fs::remove_dir_all(&root);
    } else {
        eprintln!("fleet: sandboxes kept in {}", root.display());
    }
    let bucket_bound = limits
        .as_ref()
        .map(|l| global_bound_secs(l, admitted))
        .unwrap_or(0.0);
    ArmReport {
        n,
        ok,
        codes,
        wall: last_end,
        admitted,
        throttled,
        bucket_bound,
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
        token_requests: done.iter().map(|d| d.token_requests).sum(),
        reported_arm: (reported.len() == done.len() && !reported.is_empty())
            .then(|| reported.iter().sum()),
        max_running_seen,
        principals,
    }
}

fn limits_for(scale: f64) -> Limits {
    if scale == 1.0 {
        Limits::documented()
    } else {
        Limits::scaled(scale)
    }
}

fn describe_limits(scale: f64) -> String {
    let l = limits_for(scale);
    let (g, p) = (|op: Op| l.global(op), |op: Op| l.principal(op));
    format!(
        "{}: per principal reads {} @ {}/s, writes {} @ {}/s; global reads {} @ {}/s, writes {} @ {}/s, deletes {} @ {}/s",
        if scale == 1.0 {
            "as documented (×1)".to_string()
        } else {
            format!("scaled ×{scale}")
        },
        p(Op::Read).capacity,
        p(Op::Read).refill_per_sec,
        p(Op::Write).capacity,
        p(Op::Write).refill_per_sec,
        g(Op::Read).capacity,
        g(Op::Read).refill_per_sec,
        g(Op::Write).capacity,
        g(Op::Write).refill_per_sec,
        g(Op::Delete).capacity,
        g(Op::Delete).refill_per_sec,
    )
}

fn arm_main(o: &Opts) {
    let mut text = format!(
        "ARM fleet ({} path): N arc-enroll processes, each its own VM (own fake IMDS, own managed identity = own \
         ARM principal), one subscription, one fake ARM with ARM's token buckets; the fake agent's resource PUT \
         is metered too. At most {} VMs run at once. Binary: {}. Machine: {} CPUs. Buckets:\n\n{}\n\n\
         | N | buckets | principals | enrolled | wall | bucket bound | machine bound | wall/ideal | ARM requests per enrollment (reads+writes) | 429s per enrollment (reads+writes) | arc-enroll's own count per enrollment | IMDS token requests per enrollment | p50 to enrolled | p99 to enrolled |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        match o.path {
            EnrollPath::Token => "token",
            EnrollPath::Relay => "Private Relay",
        },
        o.max_running,
        o.arc_enroll.display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        o.arm_scales
            .iter()
            .map(|&f| format!("- {}", describe_limits(f)))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut all_ok = true;
    for &n in &o.sizes {
        let base = o.baseline.then(|| {
            eprintln!("fleet: ARM N = {n}, buckets off (machine bound) ...");
            let b = run_arm_fleet(o, n, None, 1.0);
            eprintln!(
                "fleet:   machine bound {:.1} s ({}/{} enrolled)",
                b.wall, b.ok, b.n
            );
            b
        });
        for &scale in &o.arm_scales {
            eprintln!("fleet: ARM N = {n}, buckets ×{scale} ...");
            let r = run_arm_fleet(o, n, Some(limits_for(scale)), scale);
            let machine = base.as_ref().map(|b| b.wall).unwrap_or(0.0);
            let ideal = r.bucket_bound.max(machine);
            let total: u64 = r.admitted.iter().sum::<u64>() + r.throttled.iter().sum::<u64>();
            let per = |x: u64| x as f64 / r.n as f64;
            let row = format!(
                "| {} | ×{} | {} | {}/{}{} | {:.1} s | {:.1} s | {} | {} | {:.2} ({:.2}+{:.2}) | {:.3} ({:.3}+{:.3}) | {} | {:.2} | {:.1} s | {:.1} s |\n",
                r.n,
                scale,
                r.principals,
                r.ok,
                r.n,
                if r.ok == r.n {
                    String::new()
                } else {
                    format!(" (exit codes {:?})", r.codes)
                },
                r.wall,
                r.bucket_bound,
                base.as_ref()
                    .map(|b| format!("{:.1} s", b.wall))
                    .unwrap_or_else(|| "not run".into()),
                if ideal > 0.0 {
                    format!("{:.2}×", r.wall / ideal)
                } else {
                    "n/a (ideal 0)".into()
                },
                per(total),
                per(r.admitted[0] + r.throttled[0]),
                per(r.admitted[1] + r.throttled[1]),
                per(r.throttled.iter().sum()),
                per(r.throttled[0]),
                per(r.throttled[1]),
                r.reported_arm
                    .map(|x| format!("{:.2}", per(x)))
                    .unwrap_or_else(|| "not reported".into()),
                r.token_requests as f64 / r.n as f64,
                r.p50,
                r.p99,
            );
            eprint!("{row}");
            eprintln!(
                "fleet:   admitted reads/writes/deletes {:?}, throttled {:?}, at most {} running",
                r.admitted, r.throttled, r.max_running_seen
            );
            all_ok &= r.ok == r.n;
            text.push_str(&row);
        }
    }
    text.push_str(&format!(
        "\nGoal (issue 17): all enrolled, wall ≤ 1.2× ideal, ≤ 0.1 429s per enrollment at N = 1,000.\n\n{ARM_HELP}"
    ));
    print!("{text}");
    if let Some(out) = &o.out {
        let mut f = File::create(out).unwrap_or_else(|e| fail(&format!("--out: {e}")));
        let _ = f.write_all(text.as_bytes());
    }
    if !all_ok {
        std::process::exit(1);
    }
}
