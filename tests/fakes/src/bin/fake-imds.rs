//! A standalone fake Azure IMDS for `make demo`, `make fleet` and `make e2e` (see `--help`).

use arc_enroll_fakes::imds::{FakeImds, ImdsConfig, Step, UserIdentity};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const HELP: &str = "\
fake-imds: a faithful fake of the Azure IMDS managed-identity token endpoint and instance metadata
(GET /metadata/identity/oauth2/token, /metadata/instance[/compute], /healthz). Loopback use only.

USAGE: fake-imds [OPTIONS]

OPTIONS:
  --listen ADDR              address to listen on (default 127.0.0.1:0, a free port)
  --port-file FILE           write the bound port to FILE once listening
  --script LIST              comma-separated answers for successive (valid) token requests,
                             then normal tokens. Items: 200|ok, any status NNN (400 = Identity
                             not found, 500 = the real 'unknown' body, others empty), NNNra=S
                             (with Retry-After: S, e.g. 429ra=2), hang=SECS, close, truncated,
                             garbage (200 non-JSON), null (access_token null), empty
                             (access_token \"\"), expired, short=SECS, wrongaud, foreigntid
  --gone-for SECS            answer 410 to /metadata/ requests for SECS after start
  --throttle-rps N           token requests beyond N per second => 429 Retry-After: 1
  --record FILE              append every request to FILE as one JSON line
  --issued-tokens FILE       append every access token minted to FILE, one per line (tests
                             that scan output for leaked tokens; the file holds secrets)
  --tenant GUID              tenant id (tid, iss)
  --subscription GUID        subscription id
  --resource-group NAME      resource group
  --location NAME            location (instance metadata)
  --vm-name NAME             VM name
  --vm-uuid GUID             VM id (vmId)
  --vm-resource-type TYPE    default Microsoft.Compute/virtualMachines
  --user-assigned RESOURCE_ID[,CLIENT_ID[,OBJECT_ID]]
                             attach a user-assigned identity (repeatable); a bare NAME means
                             one in the VM's subscription and resource group
  --no-system-assigned       no system-assigned identity
  --no-instance-metadata     404 on /metadata/instance (as a Nexus sidecar may)
  --serve-proxied            answer absolute-form (proxied) requests instead of 400
  --token-lifetime SECS      token lifetime (default 86400)
  --no-token-jitter          expires_in exactly the lifetime (default: up to 10 min less)
  --quiet                    no per-request lines on stderr
  -h, --help                 this text

Prints 'fake-imds listening on http://ADDR' on stdout, then one line per request on stderr
('fake-imds: GET /metadata/identity/oauth2/token -> 410'). Runs until killed.
";

fn fail(msg: &str) -> ! {
    eprintln!("fake-imds: {msg}\n(see fake-imds --help)");
    std::process::exit(2)
}

fn secs(flag: &str, v: &str) -> Duration {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
        _ => fail(&format!("{flag}: not a number of seconds: {v:?}")),
    }
}

fn main() {
    let mut cfg = ImdsConfig {
        log_stderr: true,
        ..Default::default()
    };
    let mut port_file: Option<PathBuf> = None;
    // (spec, applied after the subscription/resource group are known)
    let mut uamis: Vec<String> = Vec::new();
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
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "--listen" => cfg.listen = value(),
            "--port-file" => port_file = Some(PathBuf::from(value())),
            "--script" => {
                let v = value();
                match Step::parse_list(&v) {
                    Ok(steps) => cfg.script.extend(steps),
                    Err(e) => fail(&format!("--script: {e}")),
                }
            }
            "--gone-for" => cfg.gone_for = Some(secs(&flag, &value())),
            "--throttle-rps" => {
                let v = value();
                match v.parse::<u32>() {
                    Ok(n) => cfg.throttle_rps = Some(n),
                    Err(_) => fail(&format!("--throttle-rps: not a count: {v:?}")),
                }
            }
            "--record" => cfg.record_file = Some(PathBuf::from(value())),
            "--issued-tokens" => cfg.issued_tokens_file = Some(PathBuf::from(value())),
            "--tenant" | "--tenant-id" => cfg.tenant_id = value(),
            "--subscription" | "--subscription-id" => cfg.subscription_id = value(),
            "--resource-group" => cfg.resource_group = value(),
            "--location" => cfg.location = value(),
            "--vm-name" => cfg.vm_name = value(),
            "--vm-uuid" | "--vm-id" => cfg.vm_uuid = value(),
            "--vm-resource-type" => cfg.vm_resource_type = value(),
            "--user-assigned" => uamis.push(value()),
            "--no-system-assigned" => cfg.system_assigned = false,
            "--no-instance-metadata" => cfg.instance_metadata = false,
            "--serve-proxied" => cfg.serve_proxied = true,
            "--token-lifetime" => cfg.token_lifetime = secs(&flag, &value()),
            "--no-token-jitter" => cfg.token_jitter = Duration::ZERO,
            "--quiet" => cfg.log_stderr = false,
            _ => fail(&format!("unknown argument {arg:?}")),
        }
    }
    for spec in uamis {
        let mut parts = spec.split(',').map(str::trim);
        let rid = parts.next().unwrap_or_default();
        if rid.is_empty() {
            fail("--user-assigned needs a resource id");
        }
        let mut id = if rid.starts_with('/') {
            UserIdentity::new(rid)
        } else {
            cfg.uami(rid)
        };
        if let Some(c) = parts.next().filter(|s| !s.is_empty()) {
            id = id.with_client_id(c);
        }
        if let Some(o) = parts.next().filter(|s| !s.is_empty()) {
            id = id.with_object_id(o);
        }
        if parts.next().is_some() {
            fail("--user-assigned takes RESOURCE_ID[,CLIENT_ID[,OBJECT_ID]]");
        }
        cfg.user_assigned.push(id);
    }

    let fake = match FakeImds::try_start(cfg) {
        Ok(f) => f,
        Err(e) => fail(&format!("cannot listen: {e}")),
    };
    if let Some(pf) = port_file {
        // write-then-rename so a script polling for the file never reads half of it
        let tmp = pf.with_extension("tmp");
        let ok = std::fs::write(&tmp, format!("{}\n", fake.addr().port()))
            .and_then(|_| std::fs::rename(&tmp, &pf));
        if let Err(e) = ok {
            fail(&format!("--port-file {}: {e}", pf.display()));
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "fake-imds listening on {}", fake.url());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
