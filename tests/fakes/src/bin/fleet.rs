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

use arc_enroll_fakes::imds::{FakeImds, ImdsConfig};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELP: &str = "\
fleet: N arc-enroll processes at once against a throttling fake IMDS (loopback only)

USAGE: fleet --arc-enroll PATH [--n 50,200,500] [--rps 20] [--out FILE] [--keep]

  --arc-enroll PATH   the binary under test (make fleet: the release build)
  --fake-agent PATH   fake-azcmagent (default: next to this binary)
  --n LIST            fleet sizes, run one after another (default 50,200,500)
  --rps N             IMDS token requests served per second (default 20)
  --timeout DUR       each run's --timeout (default 15m)
  --out FILE          also write the report (markdown) to FILE
  --keep              keep the sandboxes (default: removed after a fully successful run)
";

struct Opts {
    arc_enroll: PathBuf,
    fake_agent: PathBuf,
    sizes: Vec<usize>,
    rps: u32,
    timeout: String,
    out: Option<PathBuf>,
    keep: bool,
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
            _ => fail(&format!("unknown argument {a:?}")),
        }
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
