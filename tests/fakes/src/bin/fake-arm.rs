//! A standalone fake Azure Resource Manager over HTTPS for `make demo` and `make e2e` (see `--help`).

use arc_enroll_fakes::arm::{ArmConfig, FakeArm};
use arc_enroll_fakes::ratelimit::Limits;
use std::path::PathBuf;

const HELP: &str = "\
fake-arm: a fake of Azure Resource Manager over HTTPS with a test CA generated at start:
GET /subscriptions/SUB/providers/NS (registrationState), GET .../resourceGroups/RG/providers/
Microsoft.Authorization/permissions, GET/PUT/DELETE .../providers/Microsoft.HybridCompute/machines/NAME
(kept in --azure-dir; 2025-02-19-preview validation), POST .../Microsoft.NetworkCloud/virtualMachines/VM/
assignRelay (a long-running operation polled through Location), GET MACHINE/providers/
Microsoft.HybridConnectivity/endpoints/default, GET /installer.sh. Loopback use only.

USAGE: fake-arm [OPTIONS]

OPTIONS:
  --listen ADDR                  address to listen on (default 127.0.0.1:0, a free port)
  --port-file FILE               write the bound port to FILE once listening
  --ca-dir DIR                   write the test CA's certificate to DIR/ca.pem (for SSL_CERT_FILE)
  --azure-dir DIR                the shared fake-Azure directory (FAKE_AZURE_DIR): machines, authz.json
  --unregistered NS              this resource provider is NotRegistered (repeatable)
  --permissions-missing-polls N  the first N permission reads grant nothing (roles propagating)
  --permissions-never            permissions are never granted
  --permissions-forbidden        the permissions API answers 403
  --throttle N[:SECS]            the first N /subscriptions requests get 429 Retry-After SECS (default 1)
  --rate-limits                  ARM's token buckets (FACTS §12): per principal (oid) reads 250 @ 25/s,
                                 writes/deletes 200 @ 10/s; global per subscription 15x; 429 Retry-After
                                 when empty, x-ms-ratelimit-remaining-subscription-* on every answer
  --rate-limits-scale F          the same with every bucket size and refill rate times F (implies --rate-limits)
  --untrusted                    serve a certificate from a CA that is not in ca.pem
  --installer FILE               serve FILE at /installer.sh
  --relay-polls N                assignRelay's operation answers 202 to N polls first (default 2)
  --relay-retry-after SECS|none  Retry-After on those 202s (default 1)
  --relay-fail CODE:MESSAGE      the assignRelay operation ends Failed with this error
  --relay-forbidden              the caller lacks Microsoft.NetworkCloud/virtualMachines/assignRelay/action
  --nexus-vm ID                  this Nexus VM resource id exists (repeatable; none given: every VM exists)
  --quiet                        no per-request lines on stderr
  -h, --help                     this text

Prints 'fake-arm listening on https://ADDR (CA certificate: PATH)' on stdout. Runs until killed.
";

fn fail(msg: &str) -> ! {
    eprintln!("fake-arm: {msg}\n(see fake-arm --help)");
    std::process::exit(2)
}

fn main() {
    let mut cfg = ArmConfig {
        log_stderr: true,
        ..Default::default()
    };
    let mut port_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        let num = |flag: &str, v: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{flag}: not a number: {v:?}")))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "--listen" => cfg.listen = value(),
            "--port-file" => port_file = Some(PathBuf::from(value())),
            "--ca-dir" => cfg.ca_dir = Some(PathBuf::from(value())),
            "--azure-dir" => cfg.azure_dir = Some(PathBuf::from(value())),
            "--unregistered" => cfg.unregistered.push(value()),
            "--permissions-missing-polls" => {
                let v = value();
                cfg.permissions_missing_polls = num(&flag, &v) as u32
            }
            "--permissions-never" => cfg.permissions_never = true,
            "--permissions-forbidden" => cfg.permissions_forbidden = true,
            "--throttle" => {
                let v = value();
                let (n, secs) = v.split_once(':').unwrap_or((&v, "1"));
                cfg.throttle_first = num(&flag, n) as u32;
                cfg.retry_after_secs = num(&flag, secs);
            }
            "--rate-limits" => cfg.rate_limits = Some(Limits::documented()),
            "--rate-limits-scale" => {
                let v = value();
                let f: f64 = v
                    .parse()
                    .ok()
                    .filter(|f: &f64| *f > 0.0 && f.is_finite())
                    .unwrap_or_else(|| fail(&format!("{flag}: not a positive number: {v:?}")));
                cfg.rate_limits = Some(Limits::scaled(f))
            }
            "--untrusted" => cfg.untrusted = true,
            "--installer" => {
                let f = value();
                cfg.installer = Some(
                    std::fs::read_to_string(&f)
                        .unwrap_or_else(|e| fail(&format!("--installer {f}: {e}"))),
                )
            }
            "--relay-polls" => {
                let v = value();
                cfg.relay.polls_running = num(&flag, &v) as u32
            }
            "--relay-retry-after" => {
                let v = value();
                cfg.relay.retry_after_secs = (v != "none").then(|| num(&flag, &v))
            }
            "--relay-fail" => {
                let v = value();
                let (code, msg) = v
                    .split_once(':')
                    .unwrap_or((&v, "The relay assignment failed."));
                cfg.relay.fail = Some((code.to_string(), msg.to_string()))
            }
            "--relay-forbidden" => cfg.relay.forbidden = true,
            "--nexus-vm" => cfg.relay.vms.push(value()),
            "--quiet" => cfg.log_stderr = false,
            other => fail(&format!("unknown option {other}")),
        }
    }
    let arm = FakeArm::try_start(cfg).unwrap_or_else(|e| fail(&format!("cannot start: {e}")));
    if let Some(p) = port_file {
        std::fs::write(&p, arm.addr().port().to_string())
            .unwrap_or_else(|e| fail(&format!("--port-file {}: {e}", p.display())));
    }
    println!(
        "fake-arm listening on {} (CA certificate: {})",
        arm.url(),
        arm.ca_pem().display()
    );
    loop {
        std::thread::park();
    }
}
