//! `fake-azcmagent`: a stand-in for `/opt/azcmagent/bin/azcmagent` that behaves like FACTS.md §1–§3
//! describe the real CLI, records every call, and fails on command. Never needs root, never waits
//! for a human, starts fast.
//!
//! Environment:
//! - `FAKE_AZCMAGENT_DIR` (default `/var/opt/azcmagent-fake`): all local state (see below).
//! - `FAKE_AZURE_DIR` (default `<dir>/azure`): the fake "Azure" (`arc_enroll_fakes::store`), shared
//!   with other fake agents ("machines") and the fake ARM.
//! - `FAKE_AZCMAGENT_SYSROOT` (default `/`): `<sysroot>/sys/class/dmi/id/product_uuid` is this
//!   machine's VM UUID (lower-cased); `<sysroot>/etc/hostname` the default resource name when the
//!   sysroot is not `/` (else the kernel hostname). Two sysroots sharing one `FAKE_AZURE_DIR` are
//!   two machines in one subscription.
//! - `FAKE_AZCMAGENT_ARM_ENDPOINT` (unset by default): a fake ARM whose write buckets `connect`'s
//!   resource creation is charged to, with the caller's token (`make fleet`); its CA from
//!   `FAKE_AZCMAGENT_ARM_CA` or `SSL_CERT_FILE`. See `arm_write`.
//! - `FAKE_AZCMAGENT_REMOTE_AZURE` (unset by default): a fake ARM that holds the pre-created
//!   machine `connect existing` needs, read through the agent's `proxy.url` (`make e2e`, where the
//!   VM cannot share `FAKE_AZURE_DIR`). See `mirror_remote_machine`.
//! - `FAKE_AZCMAGENT_REDACT` (unset by default): comma-separated option names (`private-key`,
//!   `access-token`) whose values `calls.jsonl` records as `<redacted: N chars>`, in argv and in
//!   the `--config` content, so that a test can check what *arc-enroll* left on a disk.
//!
//! Files under `<dir>`:
//! - `calls.jsonl`: one JSON object per invocation, appended first thing:
//!   `{"argv": [args after the program name], "program", "env": {NO_PROXY, no_proxy, HTTPS_PROXY,
//!   https_proxy, HTTP_PROXY, http_proxy, IDENTITY_ENDPOINT, IMDS_ENDPOINT — only those set},
//!   "environ": {every environment variable}, "ppid": the caller's pid,
//!   "config_file": {"path", "mode": "600", "dir_mode": "700", "content": <parsed JSON|null>,
//!   "parse_error"?} (only when `--config` is given and readable; else "config_file_error"),
//!   "uid", "pid", "time": RFC 3339, "unix"}`.
//! - `agent.json`: local agent state (connected, resourceName, resourceGroup, subscriptionId,
//!   tenantId, location, cloud, resourceId, vmUuid, vmId, correlationId, privateLinkScope,
//!   gatewayId, tags, lastHeartbeat, agentVersion, settings{config property -> string | [string]}).
//! - `behaviour.json` (optional, written by tests): `connect_exits` [codes, consumed one per connect
//!   before any other logic, 0 = behave normally; the file is rewritten shortened],
//!   `connect_hang_secs`, `connect_output_bytes`, `kill_self_signal`, `version`,
//!   `unknown_config_props` [props an "old agent" does not know: exit 23], `show_vm_uuid` (what
//!   `show` reports as VM UUID while connected), `exit_messages` (default true; false = forced
//!   exits print nothing).
//! - `log/azcmagent.log`: logrus-style lines (`time=... level=... msg="Exit Code: AZCM0042: ..."`).
//!
//! Output goes to stdout, errors too (the real default), or errors to stderr with `--log-stderr`.
//! A failure prints `FATAL   <message> AZCM00NN` and exits with NN (FACTS §1.4: exit code == AZCM
//! number). With `-j`: `{"status":"failed","error":{"code":"AZCM00NN","message":...}}` /
//! `{"status":"success",...}` (shape borrowed from the installer's `--output`; UNCONFIRMED).

use arc_enroll_fakes::jwt;
use arc_enroll_fakes::store::{self, Denied, Machine, PutError, PutOutcome, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULT_DIR: &str = "/var/opt/azcmagent-fake";
const DEFAULT_VERSION: &str = "1.61.03319.2737";
/// ARM's first-party application id: v2 tokens for ARM carry it as `aud`.
const ARM_APP_ID: &str = "797f4846-ba00-4fd7-ba43-dac1f8f63013";
const RECORDED_ENV: [&str; 8] = [
    "NO_PROXY",
    "no_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "IDENTITY_ENDPOINT",
    "IMDS_ENDPOINT",
];

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn getuid() -> u32;
    fn getppid() -> i32;
}

/// How often the fake agent retries its ARM write on 429 (the real agent's policy is UNCONFIRMED).
const ARM_WRITE_ATTEMPTS: u32 = 5;

/// With `FAKE_AZCMAGENT_ARM_ENDPOINT` set (e.g. by `make fleet`), the agent's resource creation
/// is also charged to that fake ARM's write buckets, as the real agent's `PUT` is (FACTS §12): one
/// `PUT` with the caller's token to `<machine id>/fakeAgentWrite` (a path no route serves, so it
/// changes nothing there; the shared store stays the one record of the machine, as in every
/// test). Only a 429 matters: it is retried after `Retry-After` (at most ARM_WRITE_ATTEMPTS
/// times, then AZCM0042 naming the 429); any other answer means the write went through the
/// buckets. CA: `FAKE_AZCMAGENT_ARM_CA`, else `SSL_CERT_FILE`. Unset (every test): no HTTP.
fn arm_write(m: &Machine, token: &str) -> R<()> {
    let Ok(base) = std::env::var("FAKE_AZCMAGENT_ARM_ENDPOINT") else {
        return Ok(());
    };
    let ca = std::env::var("FAKE_AZCMAGENT_ARM_CA")
        .or_else(|_| std::env::var("SSL_CERT_FILE"))
        .unwrap_or_default();
    let url = format!(
        "{}{}/fakeAgentWrite?api-version=2024-07-10",
        base.trim_end_matches('/'),
        m.id
    );
    let body =
        json!({"location": m.location, "properties": {"vmUuid": m.properties.vm_uuid}}).to_string();
    let mut last = String::new();
    for _ in 0..ARM_WRITE_ATTEMPTS {
        let a = arc_enroll_fakes::arm_client::request(
            "PUT",
            &url,
            Path::new(&ca),
            token,
            Some(&body),
        )
        .map_err(|e| {
            fail(
                26,
                format!("Network error: failed to reach {base} ({e}). Check your network and proxy configuration"),
            )
        })?;
        if a.status != 429 {
            return Ok(());
        }
        last = a.body.clone();
        let secs: u64 = a
            .header("retry-after")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        std::thread::sleep(Duration::from_secs(secs.min(60)));
    }
    Err(fail(
        42,
        format!("Failed to AzcmagentConnect ARM resource: {last} Status Code=429"),
    ))
}

// ---------------------------------------------------------------------------------------------
// Failures and output

#[derive(Debug)]
struct Fail {
    code: i32,
    msg: String,
    /// From behaviour.json `connect_exits` (silenced by `"exit_messages": false`).
    forced: bool,
}

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail {
        code,
        msg: msg.into(),
        forced: false,
    }
}

fn io_fail(code: i32, what: &str, e: io::Error) -> Fail {
    fail(code, format!("{what}: {e}"))
}

type R<T> = Result<T, Fail>;

/// Short meaning of an exit code / AZCM number (FACTS §1.4/§1.5).
fn meaning(code: i32) -> &'static str {
    match code {
        0 => "Success",
        1 => "An unknown error occurred",
        2 => "Internal agent error. Restart the himds service and try again",
        3 => "The operation is not supported",
        4 => "The Azure Arc proxy service is not running",
        5 => "The file logger is not available (check disk space and permissions)",
        6 => "Agent initialization failed",
        11 => "The operation was cancelled by the user",
        12 => "The access token is invalid. Obtain a new token and try again",
        16 => "Missing mandatory parameter",
        18 => "Administrator privileges are required to run this command",
        19 => "The config file was not found",
        20 => "Unknown region",
        23 => "Invalid parameter value",
        26 => "Network error: failed to reach https://management.azure.com (dial tcp: i/o timeout). Check your network and proxy configuration; critical services may be temporarily unavailable",
        27 => "Configuration conflict",
        28 => "Failed to open the TPM",
        41 => "Failed to obtain an access token: the credentials supplied are invalid",
        42 => "Failed to AzcmagentConnect ARM resource: Failed To Create Resource",
        43 => "Failed to delete the Azure resource",
        44 => "A resource with the same name already exists. Use `azcmagent reconnect` instead of `connect`, choose another --resource-name, or delete the existing resource",
        45 => "Failed to update the public key to reconnect",
        61 => "Agent communication error: the himds service is not responding",
        62 => "Error while connecting the machine. If the error occurred after the Azure resource was created, delete this resource before retrying",
        63 => "Error while disconnecting the machine",
        64 => "Cannot reach the himds service",
        65 => "Cannot obtain agent metadata",
        66 => "Cannot obtain agent status",
        67 => "Machine is already connected. Run `azcmagent disconnect` first, or use `azcmagent reconnect`",
        68 => "Failed to fetch the subscription ID for the subscription name",
        69 => "Error updating the local configuration",
        70 => "Cannot obtain the local configuration",
        72 => "Extension tool error",
        73 => "Partner configuration error",
        74 => "Error adding extension",
        75 => "Cannot obtain the cloud configuration",
        76 => "TPM-based connect failed",
        81 => "Error downloading the managed identity certificate. Delete the resource in Azure and try connecting again",
        82 => "Failed to get the managed identity certificate via TPM",
        83 => "Failed to register the Arc persistent credential",
        101 => "Command execution error: the command could not be parsed",
        102 => "Failed to generate a resource name from the hostname; pass --resource-name",
        103 => "Failed to create RSA keys",
        104 => "Failed to read the private key",
        105 => "Failed to get the signed message; verify network connectivity",
        106 => "Failed to save the parameters file",
        107 => "Failed to retrieve the certificate",
        108 => "Failed to create TPM keys",
        _ => "Agent error",
    }
}

struct Out {
    json: bool,
    log_stderr: bool,
}

impl Out {
    /// A normal console line (suppressed under `-j`).
    fn line(&self, s: &str) {
        if !self.json {
            let mut o = io::stdout().lock();
            let _ = writeln!(o, "{s}");
            let _ = o.flush();
        }
    }
    fn info(&self, s: &str) {
        self.line(&format!("INFO    {s}"));
    }
    fn fatal(&self, f: &Fail) {
        let text = if self.json {
            json!({"status": "failed", "error": {"code": format!("AZCM{:04}", f.code), "message": f.msg}})
                .to_string()
        } else {
            format!("FATAL   {} AZCM{:04}", f.msg, f.code)
        };
        if self.log_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    fn success_json(&self, msg: &str) {
        if self.json {
            println!("{}", json!({"status": "success", "message": msg}));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Context, state files

struct Ctx {
    dir: PathBuf,
    sysroot: PathBuf,
    azure: Store,
    beh: Value,
}

impl Ctx {
    fn from_env() -> Ctx {
        let dir = env_path("FAKE_AZCMAGENT_DIR").unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        let sysroot = env_path("FAKE_AZCMAGENT_SYSROOT").unwrap_or_else(|| PathBuf::from("/"));
        let azure = Store::from_env().unwrap_or_else(|| Store::new(dir.join("azure")));
        let beh = fs::read(dir.join("behaviour.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        Ctx {
            dir,
            sysroot,
            azure,
            beh,
        }
    }

    fn version(&self) -> String {
        self.beh
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_VERSION)
            .to_string()
    }

    fn beh_u64(&self, key: &str) -> Option<u64> {
        self.beh.get(key).and_then(Value::as_u64)
    }

    fn unknown_prop(&self, prop: &str) -> bool {
        self.beh
            .get("unknown_config_props")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|p| p.as_str() == Some(prop)))
    }

    /// Exclusive lock for agent.json / behaviour.json / calls.jsonl read-modify-writes (not the
    /// store's `.lock`, so FAKE_AZURE_DIR may even equal FAKE_AZCMAGENT_DIR).
    fn lock(&self) -> R<File> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| io_fail(5, "cannot create agent directory", e))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".agent.lock"))
            .map_err(|e| io_fail(5, "cannot open agent lock", e))?;
        f.lock()
            .map_err(|e| io_fail(5, "cannot lock agent state", e))?;
        Ok(f)
    }

    fn state(&self) -> R<AgentState> {
        store::read_json(&self.dir.join("agent.json"))
            .map(Option::unwrap_or_default)
            .map_err(|e| io_fail(70, "cannot read the local configuration", e))
    }

    fn save_state(&self, s: &AgentState) -> R<()> {
        store::write_json(&self.dir.join("agent.json"), s)
            .map_err(|e| io_fail(69, "cannot update the local configuration", e))
    }

    fn vm_uuid(&self) -> String {
        fs::read_to_string(self.sysroot.join("sys/class/dmi/id/product_uuid"))
            .map(|s| s.trim().to_lowercase())
            .unwrap_or_default()
    }

    fn hostname(&self) -> Option<String> {
        let path = if self.sysroot == Path::new("/") {
            PathBuf::from("/proc/sys/kernel/hostname")
        } else {
            self.sysroot.join("etc/hostname")
        };
        let h = fs::read_to_string(path).ok()?;
        // os.Hostname() may be an FQDN; the resource name is its first label (UNCONFIRMED).
        let h = h.trim().split('.').next()?.to_string();
        (!h.is_empty()).then_some(h)
    }

    fn log(&self, level: &str, msg: &str) {
        let dir = self.dir.join("log");
        if fs::create_dir_all(&dir).is_ok() {
            if let Ok(mut f) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("azcmagent.log"))
            {
                let _ = writeln!(
                    f,
                    "time=\"{}\" level={level} msg=\"{}\"",
                    store::rfc3339(jwt::now_unix()),
                    msg.replace('"', "\\\"")
                );
            }
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AgentState {
    connected: bool,
    resource_name: String,
    resource_group: String,
    subscription_id: String,
    tenant_id: String,
    location: String,
    cloud: String,
    resource_id: String,
    vm_uuid: String,
    vm_id: String,
    correlation_id: String,
    private_link_scope: String,
    gateway_id: String,
    tags: BTreeMap<String, String>,
    last_heartbeat: String,
    agent_version: String,
    /// `azcmagent config` values that differ from the defaults: string or list of strings.
    settings: BTreeMap<String, Value>,
}

impl AgentState {
    /// Disconnected, keeping only the `config` settings (they survive a disconnect).
    fn reset(&mut self) {
        let settings = std::mem::take(&mut self.settings);
        *self = AgentState {
            settings,
            ..Default::default()
        };
    }
}

// ---------------------------------------------------------------------------------------------
// The call record

fn config_arg(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.to_string());
        }
    }
    None
}

fn mode_of(p: &Path) -> Option<String> {
    fs::metadata(p)
        .ok()
        .map(|m| format!("{:o}", m.permissions().mode() & 0o7777))
}

/// The option names `FAKE_AZCMAGENT_REDACT` lists.
fn redacted_options() -> Vec<String> {
    std::env::var("FAKE_AZCMAGENT_REDACT")
        .unwrap_or_default()
        .split(',')
        .map(|k| k.trim().trim_start_matches('-').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

fn redaction(v: &str) -> String {
    format!("<redacted: {} chars>", v.len())
}

/// `args` with the values of the `redact` options replaced (`--k v` and `--k=v`).
fn redact_argv(args: &[String], redact: &[String]) -> Vec<String> {
    let named = |a: &str| redact.iter().any(|k| a == format!("--{k}"));
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push(redaction(a));
            hide_next = false;
        } else if named(a) {
            out.push(a.clone());
            hide_next = true;
        } else if let Some((k, v)) = a.split_once('=').filter(|(k, _)| named(k)) {
            out.push(format!("{k}={}", redaction(v)));
        } else {
            out.push(a.clone());
        }
    }
    out
}

fn record(ctx: &Ctx, program: &str, args: &[String]) {
    let mut env = Map::new();
    for k in RECORDED_ENV {
        if let Some(v) = std::env::var_os(k) {
            env.insert(k.into(), v.to_string_lossy().into_owned().into());
        }
    }
    // The whole environment, for the tests' secret scanner (a secret in the agent's environment
    // is readable from /proc/<pid>/environ by root and the same user).
    let environ: Map<String, Value> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned().into(),
            )
        })
        .collect();
    let now = jwt::now_unix();
    let redact = redacted_options();
    let shown = redact_argv(args, &redact);
    let mut rec = json!({
        "argv": shown,
        "program": program,
        "env": env,
        "environ": environ,
        // SAFETY: getppid() has no preconditions and cannot fail.
        "ppid": unsafe { getppid() },
        // SAFETY: getuid() has no preconditions and cannot fail.
        "uid": unsafe { getuid() },
        "pid": std::process::id(),
        "time": store::rfc3339(now),
        "unix": now,
    });
    if let Some(path) = config_arg(args) {
        let p = Path::new(&path);
        match fs::read(p) {
            Ok(bytes) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let mut cf = json!({
                    "path": path,
                    "mode": mode_of(p),
                    "dir_mode": mode_of(&dir),
                    "content": Value::Null,
                });
                match parse_config_text(&String::from_utf8_lossy(&bytes)) {
                    Ok(mut v) => {
                        if let Some(o) = v.as_object_mut() {
                            for k in &redact {
                                if let Some(x) = o.get_mut(k.as_str()) {
                                    *x = redaction(x.as_str().unwrap_or_default()).into();
                                }
                            }
                        }
                        cf["content"] = v
                    }
                    Err(e) => cf["parse_error"] = e.into(),
                }
                rec["config_file"] = cf;
            }
            Err(e) => rec["config_file_error"] = format!("{path}: {e}").into(),
        }
    }
    if let Ok(_lock) = ctx.lock() {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctx.dir.join("calls.jsonl"))
        {
            let mut line = rec.to_string();
            line.push('\n');
            let _ = f.write_all(line.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command-line parsing (cobra/pflag-like: --long, --long=v, -s v, -s=v, combined short switches)

#[derive(Clone, Copy)]
struct Flag {
    long: &'static str,
    short: Option<char>,
    value: bool,
}

const fn v(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        value: true,
    }
}
const fn s(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        value: false,
    }
}

const GLOBAL: &[Flag] = &[
    v("config", None),
    s("help", Some('h')),
    s("json", Some('j')),
    s("log-stderr", None),
    s("no-color", None),
    s("verbose", Some('v')),
];

const CONNECT: &[Flag] = &[
    v("access-token", None),
    v("automanage-profile", None),
    v("cloud", None),
    v("correlation-id", None),
    s("enable-automatic-upgrade", None),
    v("gateway-id", None),
    s("ignore-network-check", None),
    v("location", Some('l')),
    v("private-link-scope", None),
    v("resource-group", Some('g')),
    v("resource-name", Some('n')),
    v("service-principal-cert", None),
    v("service-principal-cert-thumbprint", None),
    v("service-principal-id", Some('i')),
    v("service-principal-secret", Some('p')),
    v("subscription-id", Some('s')),
    v("tags", None),
    v("tenant-id", Some('t')),
    // Agent 1.62 (FACTS §13).
    s("use-aws-ec2-hostname", None),
    s("use-azcli", None),
    s("use-device-code", None),
    v("user-tenant-id", None),
];

/// `connect existing` (FACTS §10 step 6): a machine resource created beforehand with a
/// `clientPublicKey`; the agent proves it holds the private half. `--cloud`, `--correlation-id`
/// and `--use-saved-key` are seen in third-party use (UNCONFIRMED).
const CONNECT_EXISTING: &[Flag] = &[
    v("cloud", None),
    v("correlation-id", None),
    v("location", Some('l')),
    v("private-key", None),
    v("resource-group", Some('g')),
    v("resource-name", Some('n')),
    v("subscription-id", Some('s')),
    v("tenant-id", Some('t')),
    s("use-saved-key", None),
    v("vmid", None),
];

const DISCONNECT: &[Flag] = &[
    v("access-token", None),
    s("force-local-only", Some('f')),
    v("service-principal-cert", None),
    v("service-principal-id", Some('i')),
    v("service-principal-secret", Some('p')),
    s("use-device-code", None),
    v("user-tenant-id", None),
];

const SHOW: &[Flag] = &[s("os", None)];
const CONFIG: &[Flag] = &[s("add", Some('a')), s("remove", Some('r'))];
const CHECK: &[Flag] = &[
    v("cloud", None),
    v("extensions", Some('e')),
    v("location", Some('l')),
    s("enable-pls-check", Some('p')),
];

#[derive(Debug, Default)]
struct Parsed {
    pos: Vec<String>,
    opts: BTreeMap<&'static str, String>,
}

impl Parsed {
    fn get(&self, k: &str) -> Option<&str> {
        self.opts.get(k).map(String::as_str)
    }
    fn nonempty(&self, k: &str) -> Option<&str> {
        self.get(k).map(str::trim).filter(|s| !s.is_empty())
    }
    fn on(&self, k: &str) -> bool {
        self.get(k) == Some("true")
    }
}

fn find(spec: &[Flag], f: impl Fn(&Flag) -> bool) -> Option<&Flag> {
    spec.iter().chain(GLOBAL.iter()).find(|x| f(x))
}

fn parse_bool(flag: &str, v: &str) -> R<String> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok("true".into()),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok("false".into()),
        _ => Err(fail(
            23,
            format!("invalid argument \"{v}\" for \"--{flag}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax"),
        )),
    }
}

fn parse_args(args: &[String], spec: &[Flag]) -> R<Parsed> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.pos.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let f = find(spec, |f| f.long == name)
                .ok_or_else(|| fail(101, format!("unknown flag: --{name}")))?;
            let val = if f.value {
                match inline {
                    Some(v) => v,
                    None if i < args.len() => {
                        i += 1;
                        args[i - 1].clone()
                    }
                    None => return Err(fail(101, format!("flag needs an argument: --{name}"))),
                }
            } else {
                match inline {
                    Some(v) => parse_bool(name, &v)?,
                    None => "true".into(),
                }
            };
            p.opts.insert(f.long, val);
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let f = find(spec, |f| f.short == Some(c))
                    .ok_or_else(|| fail(101, format!("unknown shorthand flag: '{c}' in {a}")))?;
                if f.value {
                    let rest: String = chars[j..].iter().collect();
                    let val = if !rest.is_empty() {
                        rest.strip_prefix('=').unwrap_or(&rest).to_string()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(fail(101, format!("flag needs an argument: '{c}' in -{c}")));
                    };
                    p.opts.insert(f.long, val);
                    break;
                }
                if chars.get(j) == Some(&'=') {
                    let rest: String = chars[j + 1..].iter().collect();
                    p.opts.insert(f.long, parse_bool(f.long, &rest)?);
                    break;
                }
                p.opts.insert(f.long, "true".into());
            }
        } else {
            p.pos.push(a.clone());
        }
    }
    Ok(p)
}

/// The command: the first argument that is not a flag (only `--config` takes a value globally).
fn command_of(args: &[String]) -> Option<(usize, String)> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--config" {
            i += 2;
            continue;
        }
        if a == "--" {
            return args.get(i + 1).map(|c| (i + 1, c.clone()));
        }
        if !a.starts_with('-') || a == "-" {
            return Some((i, a.clone()));
        }
        i += 1;
    }
    None
}

/// A `--config` file: JSON object, or YAML-ish `key: value` lines. Values become strings.
fn parse_config_text(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return if v.is_object() {
            Ok(v)
        } else {
            Err("config file is not a JSON object".into())
        };
    }
    let mut m = Map::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t == "---" {
            continue;
        }
        let Some((k, v)) = t.split_once(':') else {
            return Err(format!("line {}: expected `key: value`", n + 1));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        m.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    if m.is_empty() {
        return Err("config file could not be parsed".into());
    }
    Ok(Value::Object(m))
}

/// Fill options from `--config FILE` (keys = long option names; the command line wins; keys
/// that are not options of this command are ignored, as a viper-style loader does).
fn merge_config_file(p: &mut Parsed, spec: &[Flag]) -> R<()> {
    let Some(path) = p.get("config").map(str::to_string) else {
        return Ok(());
    };
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(fail(19, format!("Config file {path} not found")))
        }
        Err(e) => return Err(fail(19, format!("Cannot read config file {path}: {e}"))),
    };
    let Value::Object(obj) =
        parse_config_text(&text).map_err(|e| fail(23, format!("Config file {path}: {e}")))?
    else {
        unreachable!()
    };
    for (k, val) in obj {
        let Some(f) = spec.iter().find(|f| f.long == k) else {
            continue;
        };
        if p.opts.contains_key(f.long) {
            continue;
        }
        let s = match val {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Null => continue,
            other => {
                return Err(fail(
                    23,
                    format!("Config file {path}: invalid value for '{k}': {other}"),
                ))
            }
        };
        let s = if f.value { s } else { parse_bool(f.long, &s)? };
        p.opts.insert(f.long, s);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation helpers

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Resource name: alphanumerics, `-`, `_`; must not end with `-`/`_` (FACTS §1.5 AZCM0102);
/// at most 54 characters (UNCONFIRMED limit).
fn valid_resource_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 54
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !n.ends_with(['-', '_'])
}

/// ARM resource group names: 1–90 of alphanumerics, `-_.()`, not ending with `.`.
fn valid_resource_group(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 90
        && n.chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
        && !n.ends_with('.')
}

fn canonical_cloud(c: &str) -> Option<&'static str> {
    [
        "AzureCloud",
        "AzureUSGovernment",
        "AzureChinaCloud",
        "AzureStackCloud",
        // Agent 1.67 (FACTS §13).
        "Azure.Local",
    ]
    .into_iter()
    .find(|k| k.eq_ignore_ascii_case(c.trim()))
}

/// ARM audiences accepted in each cloud (FACTS §7), compared without a trailing slash.
fn audiences(cloud: &str) -> &'static [&'static str] {
    match cloud {
        "AzureUSGovernment" => &[
            "https://management.usgovcloudapi.net",
            "https://management.core.usgovcloudapi.net",
            ARM_APP_ID,
        ],
        "AzureChinaCloud" => &[
            "https://management.chinacloudapi.cn",
            "https://management.core.chinacloudapi.cn",
            ARM_APP_ID,
        ],
        _ => &[
            "https://management.azure.com",
            "https://management.core.windows.net",
            ARM_APP_ID,
        ],
    }
}

fn portal(cloud: &str) -> &'static str {
    match cloud {
        "AzureUSGovernment" => "https://portal.azure.us",
        "AzureChinaCloud" => "https://portal.azure.cn",
        _ => "https://portal.azure.com",
    }
}

fn claim_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Claims of a usable ARM token for `cloud`, or why it is not one (→ AZCM0012).
fn check_token(token: &str, cloud: &str) -> Result<Value, String> {
    let t = token.trim();
    if t.is_empty() {
        return Err("the access token is empty".into());
    }
    if t.eq_ignore_ascii_case("null") || t.eq_ignore_ascii_case("undefined") {
        return Err(format!("the access token is '{t}'"));
    }
    // A JWT is three base64url segments; anything else (a "Bearer " prefix, quotes, spaces) is not.
    if t.split('.').count() != 3
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.=".contains(c))
    {
        return Err("the access token is not a JWT".into());
    }
    let claims = jwt::claims(t)
        .filter(Value::is_object)
        .ok_or("the access token is not a JWT")?;
    let now = jwt::now_unix();
    let exp = claim_u64(claims.get("exp")).ok_or("the access token has no 'exp' claim")?;
    if exp <= now {
        return Err(format!(
            "the access token expired at {} (now {})",
            store::rfc3339(exp),
            store::rfc3339(now)
        ));
    }
    if let Some(nbf) = claim_u64(claims.get("nbf")) {
        if nbf > now + 300 {
            return Err(format!(
                "the access token is not valid before {}",
                store::rfc3339(nbf)
            ));
        }
    }
    let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
    let norm = aud.trim_end_matches('/');
    if !audiences(cloud)
        .iter()
        .any(|a| a.eq_ignore_ascii_case(norm))
    {
        return Err(format!(
            "the access token audience '{aud}' is not valid for Azure Resource Manager in {cloud}"
        ));
    }
    Ok(claims)
}

fn claim_str<'a>(claims: &'a Value, k: &str) -> &'a str {
    claims.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `Name=Value,Name2='Value with spaces'` (FACTS §1.2).
fn parse_tags(s: &str) -> R<BTreeMap<String, String>> {
    let mut items = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(fail(
            23,
            format!("Invalid --tags value {s:?}: unbalanced quote"),
        ));
    }
    items.push(cur);
    let mut tags = BTreeMap::new();
    for it in items.iter().filter(|i| !i.trim().is_empty()) {
        let Some((k, v)) = it.split_once('=') else {
            return Err(fail(
                23,
                format!(
                    "Invalid --tags value {s:?}: expected Name=Value pairs separated by commas"
                ),
            ));
        };
        if k.trim().is_empty() {
            return Err(fail(
                23,
                format!("Invalid --tags value {s:?}: empty tag name"),
            ));
        }
        tags.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(tags)
}

/// Which credential the command line selects; the fake only really supports `--access-token`.
fn credential(p: &Parsed, out: &Out) -> R<Option<String>> {
    let sp = p.get("service-principal-id").is_some()
        || p.get("service-principal-secret").is_some()
        || p.get("service-principal-cert").is_some()
        || p.get("service-principal-cert-thumbprint").is_some();
    let token = p.get("access-token");
    if token.is_some() && (sp || p.on("use-device-code") || p.on("use-azcli")) {
        return Err(fail(
            23,
            "Only one authentication method may be specified (--access-token, service principal, --use-device-code, --use-azcli)",
        ));
    }
    if let Some(t) = token {
        return Ok(Some(t.to_string()));
    }
    if sp {
        // The fake has no directory of service principals: every secret/certificate is rejected.
        return Err(fail(
            41,
            "Failed to obtain an access token for the service principal: AADSTS7000215: Invalid client secret provided",
        ));
    }
    if p.on("use-azcli") {
        return Err(fail(
            41,
            "Failed to obtain an access token from Azure CLI: Please run 'az login' to setup account",
        ));
    }
    // Default on Linux is device code (interactive). Never wait: say so and give up.
    out.line("To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code FAKE-DEVC to authenticate.");
    Err(fail(
        1,
        "No credential given: device code login is interactive and the fake agent does not wait for it (pass --access-token or a --config file with \"access-token\")",
    ))
}

// ---------------------------------------------------------------------------------------------
// Behaviour knobs

/// Pop the first `connect_exits` entry (rewriting behaviour.json); None when absent/exhausted.
fn take_forced_exit(ctx: &Ctx) -> R<Option<i32>> {
    let path = ctx.dir.join("behaviour.json");
    let _lock = ctx.lock()?;
    let Ok(Some(mut b)) = store::read_json::<Value>(&path) else {
        return Ok(None);
    };
    let Some(list) = b.get_mut("connect_exits").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    if list.is_empty() {
        return Ok(None);
    }
    let code = list.remove(0).as_i64().unwrap_or(0) as i32;
    store::write_json(&path, &b).map_err(|e| io_fail(5, "cannot rewrite behaviour.json", e))?;
    Ok(Some(code))
}

fn noise(n: u64) {
    let mut o = io::stdout().lock();
    let mut left = n as usize;
    let mut i = 0u64;
    while left > 0 {
        let line = format!("DEBUG   noise line {i:08} ................................................................\n");
        let chunk = &line.as_bytes()[..left.min(line.len())];
        if o.write_all(chunk).is_err() {
            return;
        }
        left -= chunk.len();
        i += 1;
    }
    let _ = o.flush();
}

// ---------------------------------------------------------------------------------------------
// connect

fn cmd_connect(ctx: &Ctx, mut p: Parsed, out: &Out) -> R<()> {
    if let Some(secs) = ctx.beh_u64("connect_hang_secs") {
        // Plain sleep: SIGTERM/SIGINT keep their default (terminating) action.
        std::thread::sleep(Duration::from_secs(secs));
    }
    if let Some(n) = ctx.beh_u64("connect_output_bytes") {
        noise(n);
    }
    if let Some(sig) = ctx.beh.get("kill_self_signal").and_then(Value::as_i64) {
        out.info("Connecting machine to Azure... This might take a few minutes.");
        // SAFETY: kill(2) on our own pid; no memory is involved.
        unsafe {
            kill(std::process::id() as i32, sig as i32);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(code) = take_forced_exit(ctx)? {
        if code != 0 {
            ctx.log("info", &format!("forced exit {code} from behaviour.json"));
            return Err(Fail {
                forced: true,
                ..fail(code, meaning(code))
            });
        }
    }
    merge_config_file(&mut p, CONNECT)?;

    let mut missing = Vec::new();
    for k in ["subscription-id", "resource-group", "location"] {
        if p.nonempty(k).is_none() {
            missing.push(format!("--{k}"));
        }
    }
    if !missing.is_empty() {
        return Err(fail(
            16,
            format!("Missing mandatory parameter: {}", missing.join(", ")),
        ));
    }
    let sub_arg = p
        .nonempty("subscription-id")
        .unwrap_or_default()
        .to_string();
    let rg = p.nonempty("resource-group").unwrap_or_default().to_string();
    let loc_arg = p.nonempty("location").unwrap_or_default();
    let location: String = loc_arg
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    if location.is_empty() || !location.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(fail(20, format!("Unknown region '{loc_arg}'")));
    }
    let cloud = match p.nonempty("cloud") {
        None => "AzureCloud",
        Some(c) => canonical_cloud(c).ok_or_else(|| {
            fail(
                23,
                format!("Invalid value for --cloud '{c}': must be AzureCloud, AzureUSGovernment or AzureChinaCloud"),
            )
        })?,
    };
    if !valid_resource_group(&rg) {
        return Err(fail(23, format!("Invalid resource group name '{rg}'")));
    }
    if let Some(c) = p.get("correlation-id") {
        if !is_guid(c) {
            return Err(fail(
                23,
                format!("Invalid --correlation-id '{c}': must be a GUID"),
            ));
        }
    }
    for k in ["private-link-scope", "gateway-id", "automanage-profile"] {
        if let Some(v) = p.get(k) {
            if !v.starts_with('/') || v.split('/').count() < 5 {
                return Err(fail(
                    23,
                    format!("Invalid --{k} '{v}': must be an Azure resource ID"),
                ));
            }
        }
    }
    let tags = match p.get("tags") {
        Some(t) => parse_tags(t)?,
        None => BTreeMap::new(),
    };
    let name = match p.get("resource-name") {
        Some(n) => {
            if !valid_resource_name(n) {
                return Err(fail(
                    23,
                    format!("Invalid --resource-name '{n}': use letters, digits, '-' and '_', not ending with '-' or '_'"),
                ));
            }
            n.to_string()
        }
        None => match ctx.hostname() {
            Some(h) if valid_resource_name(&h) => h,
            h => {
                return Err(fail(
                    102,
                    format!(
                        "Failed to generate a resource name from the hostname {:?}; pass --resource-name",
                        h.unwrap_or_default()
                    ),
                ))
            }
        },
    };

    let _lock = ctx.lock()?;
    let mut state = ctx.state()?;
    if state.connected {
        return Err(fail(
            67,
            format!(
                "Machine is already connected (resource {}). Run `azcmagent disconnect` to disconnect it first, or use `azcmagent reconnect`",
                state.resource_id
            ),
        ));
    }

    let token = credential(&p, out)?.unwrap_or_default();
    let claims = check_token(&token, cloud).map_err(|why| {
        fail(
            12,
            format!("Access token is invalid: {why}. Obtain a new access token and try again"),
        )
    })?;
    // Subscription names need a lookup the fake cannot do (real: AZCM0068; prefer the GUID).
    if !is_guid(&sub_arg) {
        return Err(fail(
            68,
            format!("Failed to fetch the subscription ID for subscription name '{sub_arg}'"),
        ));
    }
    let sub = sub_arg.to_lowercase();
    let tenant = p
        .nonempty("tenant-id")
        .unwrap_or(claim_str(&claims, "tid"))
        .to_string();
    let correlation = p
        .get("correlation-id")
        .map(str::to_string)
        .unwrap_or_else(store::new_guid);
    let id = store::machine_id(&sub, &rg, &name);

    out.info("Connecting machine to Azure... This might take a few minutes.");
    out.info("Testing connectivity to endpoints that are needed to connect to Azure... This might take a few minutes.");
    out.line("  20% [==>            ]");
    out.line("  30% [===>           ]");
    out.line(&format!(
        "  INFO    Creating resource in Azure...                 Correlation ID={correlation} Resource ID={id}"
    ));

    match ctx.azure.authorize_machine_write() {
        Ok(()) => {}
        Err(Denied::Forbidden) => {
            let msg = store::forbidden_message(
                claim_str(&claims, "appid"),
                claim_str(&claims, "oid"),
                "Microsoft.HybridCompute/machines/write",
                &id,
            );
            return Err(fail(
                42,
                format!("Failed to AzcmagentConnect ARM resource: {msg} Code=\"AuthorizationFailed\" Status Code=403"),
            ));
        }
        Err(Denied::ProviderNotRegistered(ns)) => {
            return Err(fail(
                42,
                format!(
                    "Failed to AzcmagentConnect ARM resource: {} Code=\"MissingSubscriptionRegistration\" Status Code=409",
                    store::unregistered_message(&ns)
                ),
            ));
        }
        Err(Denied::Io(e)) => {
            return Err(io_fail(42, "Failed to AzcmagentConnect ARM resource", e))
        }
    }

    let vm_uuid = ctx.vm_uuid();
    let version = ctx.version();
    let mut m = Machine::new(&sub, &rg, &name, &location, &vm_uuid);
    m.tags = tags.clone();
    m.tenant_id = tenant.clone();
    m.properties.agent_version = version.clone();
    m.properties.extra.insert(
        "lastStatusChange".into(),
        store::rfc3339(jwt::now_unix()).into(),
    );
    arm_write(&m, &token)?;
    let stored = match ctx.azure.put_machine(&m) {
        Ok(PutOutcome::Created(m)) => m,
        Ok(PutOutcome::Updated(mut m)) => {
            // Re-connect of the same machine: the resource keeps its Azure-assigned vmId.
            m.properties.status = "Connected".into();
            m
        }
        Err(PutError::Conflict { existing }) => {
            return Err(fail(
                44,
                format!(
                    "A resource with the same name already exists in Azure: {} (it belongs to another machine). Use a different --resource-name, delete the existing resource, or use `azcmagent reconnect`",
                    existing.id
                ),
            ))
        }
        Err(PutError::Io(e)) => return Err(io_fail(42, "Failed to AzcmagentConnect ARM resource", e)),
    };

    out.line("  60% [========>      ]");
    out.line("  80% [===========>   ]");
    state = AgentState {
        connected: true,
        resource_name: name.clone(),
        resource_group: rg.clone(),
        subscription_id: sub.clone(),
        tenant_id: tenant.clone(),
        location,
        cloud: cloud.to_string(),
        resource_id: id.clone(),
        vm_uuid,
        vm_id: stored.properties.vm_id.clone(),
        correlation_id: correlation,
        private_link_scope: p.get("private-link-scope").unwrap_or_default().to_string(),
        gateway_id: p.get("gateway-id").unwrap_or_default().to_string(),
        tags,
        last_heartbeat: store::rfc3339(jwt::now_unix()),
        agent_version: version,
        settings: state.settings,
    };
    ctx.save_state(&state)?;
    out.line(" 100% [===============]");
    out.line("  INFO    Connected machine to Azure");
    out.info(&format!(
        "Machine overview page: {}/#@{tenant}/resource{id}/overview",
        portal(cloud)
    ));
    out.success_json("Connected machine to Azure");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// connect existing

/// The private key as the real agent reads it: standard base64 of a PKCS#1 `RSAPrivateKey` DER.
/// PKCS#8 fails with "asn1: structure error" (FACTS §10), as Go's `x509.ParsePKCS1PrivateKey` does.
fn read_private_key(b64: &str) -> R<rsa::PrivateKey> {
    use base64::Engine;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| {
            fail(
                104,
                format!("Failed to read the private key: illegal base64 data ({e})"),
            )
        })?;
    rsa::PrivateKey::from_pkcs1_der(&der).map_err(|_| {
        fail(
            103,
            "Failed to create RSA keys: asn1: structure error: tags don't match (2 vs {class:0 tag:16 length:13 isCompound:true}) {optional:false explicit:false application:false private:false defaultValue:<nil> tag:<nil> stringType:0 timeType:0 set:false omitEmpty:false} int @4",
        )
    })
}

/// Register the key with the tests' secret scanner: its secret part only. A PKCS#1 private key
/// starts with the modulus and exponent, at a base64-aligned offset, so its first ~366 base64
/// characters appear verbatim in the public key (`clientPublicKey`, which is not secret).
fn register_private_key(text: &str, key: &rsa::PrivateKey) {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPublicKey;
    let Ok(public) = key.to_public_key().to_pkcs1_der() else {
        return;
    };
    let public = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
    let start = (0..text.len().saturating_sub(16))
        .filter(|i| text.is_char_boundary(*i) && text.is_char_boundary(i + 16))
        .filter(|i| public.contains(&text[*i..i + 16]))
        .max()
        .map_or(0, |i| i + 16);
    arc_enroll_fakes::secrets::register(arc_enroll_fakes::secrets::PRIVATE_KEY, &text[start..]);
}

/// With `FAKE_AZCMAGENT_REMOTE_AZURE` set (`make e2e`: a VM cannot share the host's fake-Azure
/// directory), the pre-created machine is read from that fake ARM and copied into the local fake
/// Azure first, so the checks below (vmId, the key against `clientPublicKey`) run on what the fake
/// ARM holds. The request goes through the agent's own `proxy.url` setting, as the real agent's
/// calls to Azure (his.arc.azure.com, FACTS §10) do, and never directly. Its bearer is a
/// JWT-shaped stand-in naming the vmId (the real agent proves the key to HIS instead; the fake
/// ARM checks no signature). CA: `FAKE_AZCMAGENT_ARM_CA`, `SSL_CERT_FILE`, else the system bundle.
/// A 404 leaves the local store as it is (→ "was not found" below).
fn mirror_remote_machine(
    ctx: &Ctx,
    state: &AgentState,
    id: &str,
    vmid: &str,
    tenant: &str,
) -> R<()> {
    let Ok(base) = std::env::var("FAKE_AZCMAGENT_REMOTE_AZURE") else {
        return Ok(());
    };
    let ca = std::env::var("FAKE_AZCMAGENT_ARM_CA")
        .or_else(|_| std::env::var("SSL_CERT_FILE"))
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let proxy = state.settings.get("proxy.url").and_then(Value::as_str);
    let url = format!(
        "{}{id}?api-version=2025-02-19-preview",
        base.trim_end_matches('/')
    );
    let bearer =
        jwt::mint(&json!({"oid": vmid, "tid": tenant, "sub": "azcmagent connect existing (fake)"}));
    let net = |e: String| {
        fail(
            26,
            format!("Network error: failed to reach {base} ({e}). Check your network and proxy configuration"),
        )
    };
    let a = arc_enroll_fakes::arm_client::request_via(
        proxy,
        "GET",
        &url,
        Path::new(&ca),
        &bearer,
        None,
    )
    .map_err(net)?;
    match a.status {
        404 => return Ok(()),
        200 => {}
        s => {
            return Err(fail(
                42,
                format!(
                    "Failed to AzcmagentConnect ARM resource: {} Status Code={s}",
                    a.body
                ),
            ))
        }
    }
    let mut v: Value = serde_json::from_str(&a.body).map_err(|e| {
        fail(
            42,
            format!("Failed to AzcmagentConnect ARM resource: unreadable answer ({e})"),
        )
    })?;
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        // ARM shows unset strings as null; the store keeps them empty.
        props.retain(|k, v| !(v.is_null() && k != "status"));
    }
    let m: Machine = serde_json::from_value(v).map_err(|e| {
        fail(
            42,
            format!("Failed to AzcmagentConnect ARM resource: unexpected machine ({e})"),
        )
    })?;
    ctx.azure
        .upsert_machine(&m)
        .map_err(|e| io_fail(42, "Failed to AzcmagentConnect ARM resource", e))?;
    Ok(())
}

fn cmd_connect_existing(ctx: &Ctx, mut p: Parsed, out: &Out) -> R<()> {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPublicKey;
    if let Some(secs) = ctx.beh_u64("connect_hang_secs") {
        std::thread::sleep(Duration::from_secs(secs));
    }
    if let Some(code) = take_forced_exit(ctx)? {
        if code != 0 {
            ctx.log("info", &format!("forced exit {code} from behaviour.json"));
            return Err(Fail {
                forced: true,
                ..fail(code, meaning(code))
            });
        }
    }
    merge_config_file(&mut p, CONNECT_EXISTING)?;
    if let Some(extra) = p.pos.first() {
        return Err(fail(
            101,
            format!("unexpected argument \"{extra}\" for \"azcmagent connect existing\""),
        ));
    }
    let mut missing = Vec::new();
    for k in [
        "subscription-id",
        "resource-group",
        "resource-name",
        "location",
        "tenant-id",
        "vmid",
    ] {
        if p.nonempty(k).is_none() {
            missing.push(format!("--{k}"));
        }
    }
    if p.nonempty("private-key").is_none() && !p.on("use-saved-key") {
        missing.push("--private-key".into());
    }
    if !missing.is_empty() {
        return Err(fail(
            16,
            format!("Missing mandatory parameter: {}", missing.join(", ")),
        ));
    }
    let get = |k: &str| p.nonempty(k).unwrap_or_default().to_string();
    let (sub, rg, name, tenant, vmid) = (
        get("subscription-id").to_lowercase(),
        get("resource-group"),
        get("resource-name"),
        get("tenant-id"),
        get("vmid"),
    );
    let location: String = get("location")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    if location.is_empty() || !location.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(fail(20, format!("Unknown region '{}'", get("location"))));
    }
    let cloud = match p.nonempty("cloud") {
        None => "AzureCloud",
        Some(c) => canonical_cloud(c)
            .ok_or_else(|| fail(23, format!("Invalid value for --cloud '{c}'")))?,
    };
    for (k, v) in [
        ("subscription-id", &sub),
        ("tenant-id", &tenant),
        ("vmid", &vmid),
    ] {
        if !is_guid(v) {
            return Err(fail(23, format!("Invalid --{k} '{v}': must be a GUID")));
        }
    }
    if p.on("use-saved-key") && p.nonempty("private-key").is_none() {
        // The fake has no `azcmagent genkey`, so there is never a saved key.
        return Err(fail(
            104,
            "Failed to read the private key: no saved key (run `azcmagent genkey` first)",
        ));
    }
    let key_text = p.get("private-key").unwrap_or_default().trim().to_string();
    let key = read_private_key(&key_text)?;
    register_private_key(&key_text, &key);

    let _lock = ctx.lock()?;
    let mut state = ctx.state()?;
    if state.connected {
        return Err(fail(
            67,
            format!("Machine is already connected (resource {}). Run `azcmagent disconnect` to disconnect it first", state.resource_id),
        ));
    }
    let id = store::machine_id(&sub, &rg, &name);
    out.info("Connecting machine to an existing Azure resource... This might take a few minutes.");
    out.line(&format!(
        "  INFO    Using existing resource in Azure...           Resource ID={id}"
    ));
    mirror_remote_machine(ctx, &state, &id, &vmid, &tenant)?;
    let existing = ctx
        .azure
        .get_machine(&sub, &rg, &name)
        .map_err(|e| io_fail(42, "Failed to AzcmagentConnect ARM resource", e))?;
    let Some(machine) = existing else {
        return Err(fail(
            42,
            format!("Failed to AzcmagentConnect ARM resource: The Resource 'Microsoft.HybridCompute/machines/{name}' under resource group '{rg}' was not found. Code=\"ResourceNotFound\" Status Code=404"),
        ));
    };
    if !machine.properties.vm_id.eq_ignore_ascii_case(&vmid) {
        return Err(fail(
            42,
            format!("Failed to AzcmagentConnect ARM resource: --vmid {vmid} is not the vmId of {id}. Code=\"BadRequest\" HttpStatusCode:400"),
        ));
    }
    let vm_uuid = ctx.vm_uuid();
    if machine.properties.status == "Connected"
        && !machine.properties.vm_uuid.is_empty()
        && !machine.properties.vm_uuid.eq_ignore_ascii_case(&vm_uuid)
    {
        return Err(fail(
            44,
            format!("A resource with the same name already exists in Azure: {id} (another machine is connected to it)"),
        ));
    }
    let stored_key = machine
        .properties
        .extra
        .get("clientPublicKey")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ours = key
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|e| fail(103, format!("Failed to create RSA keys: {e}")))?;
    let theirs = base64::engine::general_purpose::STANDARD
        .decode(stored_key)
        .unwrap_or_default();
    if theirs != ours.as_bytes() {
        // UNCONFIRMED what the real agent says; it cannot prove the key the resource names.
        return Err(fail(
            104,
            format!(
                "Failed to read the private key: it does not match the clientPublicKey of {id}"
            ),
        ));
    }
    drop(key);
    let version = ctx.version();
    let now = store::rfc3339(jwt::now_unix());
    ctx.azure
        .update_machine(&sub, &rg, &name, |m| {
            m.properties.status = "Connected".into();
            m.properties.vm_uuid = vm_uuid.clone();
            m.properties.agent_version = version.clone();
            m.properties
                .extra
                .insert("lastStatusChange".into(), now.clone().into());
            m.tenant_id = tenant.clone();
        })
        .map_err(|e| io_fail(42, "Failed to AzcmagentConnect ARM resource", e))?;
    state = AgentState {
        connected: true,
        resource_name: name,
        resource_group: rg,
        subscription_id: sub,
        tenant_id: tenant.clone(),
        location,
        cloud: cloud.to_string(),
        resource_id: id.clone(),
        vm_uuid,
        vm_id: vmid.to_lowercase(),
        correlation_id: p
            .get("correlation-id")
            .map(str::to_string)
            .unwrap_or_else(store::new_guid),
        tags: machine.tags.clone(),
        last_heartbeat: now,
        agent_version: version,
        settings: state.settings,
        ..Default::default()
    };
    ctx.save_state(&state)?;
    out.line("  INFO    Connected machine to Azure");
    out.info(&format!(
        "Machine overview page: {}/#@{tenant}/resource{id}/overview",
        portal(cloud)
    ));
    out.success_json("Connected machine to Azure");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// disconnect

fn cmd_disconnect(ctx: &Ctx, mut p: Parsed, out: &Out) -> R<()> {
    merge_config_file(&mut p, DISCONNECT)?;
    let _lock = ctx.lock()?;
    let mut state = ctx.state()?;
    if p.on("force-local-only") {
        // Works without credentials and also when already disconnected (idempotent local reset).
        out.info("Deleting local agent configuration (the Azure resource is not touched)...");
        state.reset();
        ctx.save_state(&state)?;
        out.info("Disconnected machine from Azure (local only)");
        out.success_json("Disconnected machine from Azure (local only)");
        return Ok(());
    }
    if !state.connected {
        // Chosen: AZCM0063 "error while disconnecting" — there is no resource to delete.
        return Err(fail(
            63,
            "Error while disconnecting: the machine is not connected to Azure",
        ));
    }
    let token = credential(&p, out)?.unwrap_or_default();
    let claims = check_token(&token, &state.cloud).map_err(|why| {
        fail(
            12,
            format!("Access token is invalid: {why}. Obtain a new access token and try again"),
        )
    })?;
    let tid = claim_str(&claims, "tid");
    if !tid.is_empty() && !state.tenant_id.is_empty() && !tid.eq_ignore_ascii_case(&state.tenant_id)
    {
        return Err(fail(
            43,
            format!(
                "Failed to delete the Azure resource: the account's tenant '{tid}' is not the tenant of the subscription ('{}')",
                state.tenant_id
            ),
        ));
    }
    out.info(&format!(
        "Deleting resource from Azure...                 Correlation ID={} Resource ID={}",
        store::new_guid(),
        state.resource_id
    ));
    // Faithful to the real agent: it deletes whatever resource the local config names, even if
    // that resource now belongs to another machine (the clone hazard of FACTS §3).
    match ctx.azure.delete_machine(
        &state.subscription_id,
        &state.resource_group,
        &state.resource_name,
    ) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(fail(
                43,
                format!(
                    "Failed to delete the Azure resource {}: ResourceNotFound. Use `azcmagent disconnect --force-local-only` to clean up the local configuration",
                    state.resource_id
                ),
            ))
        }
        Err(e) => return Err(io_fail(43, "Failed to delete the Azure resource", e)),
    }
    state.reset();
    ctx.save_state(&state)?;
    out.info("Disconnected machine from Azure");
    out.success_json("Disconnected machine from Azure");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// show

fn setting_display(v: &Value) -> String {
    match v {
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| x
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cmd_show(ctx: &Ctx, p: Parsed, json: bool) -> R<()> {
    let st = ctx.state()?;
    let c = st.connected;
    let f = |v: &str| if c { v.to_string() } else { String::new() };
    let vm_uuid = match ctx.beh.get("show_vm_uuid").and_then(Value::as_str) {
        Some(o) if c => o.to_string(),
        _ => f(&st.vm_uuid),
    };
    let proxy = st
        .settings
        .get("proxy.url")
        .map(setting_display)
        .unwrap_or_default();
    let bypass = st
        .settings
        .get("proxy.bypass")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let status = if c { "Connected" } else { "Disconnected" };
    let portal_page = if c {
        format!(
            "{}/#@{}/resource{}/overview",
            portal(&st.cloud),
            st.tenant_id,
            st.resource_id
        )
    } else {
        String::new()
    };
    let logfile = ctx.dir.join("log/himds.log").display().to_string();
    // (display name, json key, value)
    let rows: Vec<(&str, &str, String)> = vec![
        ("Resource Name", "resourceName", f(&st.resource_name)),
        (
            "Resource Group Name",
            "resourceGroup",
            f(&st.resource_group),
        ),
        (
            "Resource Namespace",
            "resourceNamespace",
            f(store::NAMESPACE),
        ),
        ("Resource Id", "resourceId", f(&st.resource_id)),
        ("Subscription ID", "subscriptionId", f(&st.subscription_id)),
        ("Tenant ID", "tenantId", f(&st.tenant_id)),
        ("VM ID", "vmId", f(&st.vm_id)),
        ("Correlation ID", "correlationId", f(&st.correlation_id)),
        ("VM UUID", "vmUuid", vm_uuid),
        ("Location", "location", f(&st.location)),
        ("Cloud", "cloud", f(&st.cloud)),
        ("Identity Key Store", "identityKeyStore", "Default".into()),
        ("Agent Version", "agentVersion", ctx.version()),
        ("Agent Logfile", "agentLogfile", logfile),
        ("Agent Status", "status", status.into()),
        (
            "Agent Last Heartbeat",
            "lastHeartbeat",
            f(&st.last_heartbeat),
        ),
        ("Agent Error Code", "agentErrorCode", String::new()),
        ("Agent Error Details", "agentErrorDetails", String::new()),
        (
            "Agent Error Timestamp",
            "agentErrorTimestamp",
            String::new(),
        ),
        ("Using HTTPS Proxy", "httpsProxy", proxy),
        ("Proxy Bypass List", "proxyBypassList", bypass),
        ("Upstream Proxy", "upstreamProxy", String::new()),
        ("Gateway URL", "gatewayUrl", String::new()),
        (
            "Private Link Scope",
            "privateLinkScope",
            f(&st.private_link_scope),
        ),
        ("Cloud Provider", "cloudProvider", "N/A".into()),
        ("Portal Page", "portalPage", portal_page),
        ("Disabled Features", "disabledFeatures", String::new()),
    ];
    let wanted = |name: &str, key: &str| {
        p.pos.is_empty()
            || p.pos
                .iter()
                .any(|w| w.eq_ignore_ascii_case(name) || w.eq_ignore_ascii_case(key))
    };
    for w in &p.pos {
        if !rows
            .iter()
            .any(|(n, k, _)| w.eq_ignore_ascii_case(n) || w.eq_ignore_ascii_case(k))
        {
            return Err(fail(23, format!("Unknown property '{w}'")));
        }
    }
    if json {
        let mut o = Map::new();
        for (n, k, v) in &rows {
            if wanted(n, k) {
                o.insert((*k).into(), v.clone().into());
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(o)).unwrap_or_default()
        );
        return Ok(());
    }
    let mut text = String::new();
    for (n, k, v) in &rows {
        if wanted(n, k) {
            text.push_str(&format!("{n:<40}: {v}\n"));
        }
        if p.pos.is_empty() && *k == "cloudProvider" {
            text.push_str("Dependent Service Status\n");
            let run = if c { "running" } else { "stopped" };
            for svc in [
                "Agent Service (himds)",
                "Azure Arc Proxy (arcproxyd)",
                "Extension Service (extd)",
                "GC Service (gcad)",
            ] {
                text.push_str(&format!("  {svc:<38}: {run}\n"));
            }
        }
    }
    print!("{text}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// config

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int(u32, u32),
    Choice(&'static [&'static str]),
    Url,
    List(Option<&'static [&'static str]>),
    Ports,
}

struct Prop {
    key: &'static str,
    preview: bool,
    kind: Kind,
    default: &'static str,
    about: &'static str,
}

const BYPASS: &[&str] = &["AAD", "ARM", "Arc", "AMA", "ArcData"];

/// FACTS §2.3, in the order and with the defaults of its `config list` transcript.
const PROPS: &[Prop] = &[
    Prop {
        key: "incomingconnections.enabled",
        preview: true,
        kind: Kind::Bool,
        default: "true",
        about: "Allow incoming connections (SSH/Windows Admin Center) through Arc",
    },
    Prop {
        key: "incomingconnections.ports",
        preview: true,
        kind: Kind::Ports,
        default: "",
        about: "Ports allowed for incoming connections",
    },
    Prop {
        key: "connection.type",
        preview: true,
        kind: Kind::Choice(&["default", "gateway"]),
        default: "default",
        about: "Connection type",
    },
    Prop {
        key: "proxy.url",
        preview: false,
        kind: Kind::Url,
        default: "",
        about: "Proxy server URL (http://host:port)",
    },
    Prop {
        key: "proxy.bypass",
        preview: false,
        kind: Kind::List(Some(BYPASS)),
        default: "",
        about: "Services that bypass the proxy: AAD, ARM, Arc, AMA, ArcData",
    },
    Prop {
        key: "extensions.allowlist",
        preview: false,
        kind: Kind::List(None),
        default: "",
        about: "Extensions allowed to install (Publisher/Type)",
    },
    Prop {
        key: "extensions.blocklist",
        preview: false,
        kind: Kind::List(None),
        default: "",
        about: "Extensions blocked from installing (Publisher/Type)",
    },
    Prop {
        key: "guestconfiguration.enabled",
        preview: false,
        kind: Kind::Bool,
        default: "true",
        about: "Machine configuration (guest configuration) enabled",
    },
    Prop {
        key: "extensions.enabled",
        preview: false,
        kind: Kind::Bool,
        default: "true",
        about: "Extension management enabled",
    },
    Prop {
        key: "config.mode",
        preview: false,
        kind: Kind::Choice(&["full", "monitor"]),
        default: "full",
        about: "Agent mode: full or monitor",
    },
    Prop {
        key: "guestconfiguration.agent.cpulimit",
        preview: false,
        kind: Kind::Int(1, 100),
        default: "5",
        about: "CPU limit (%) of the machine configuration agent",
    },
    Prop {
        key: "extensions.agent.cpulimit",
        preview: false,
        kind: Kind::Int(1, 100),
        default: "5",
        about: "CPU limit (%) of the extension manager",
    },
];

fn prop(ctx: &Ctx, key: &str) -> R<&'static Prop> {
    if ctx.unknown_prop(key) {
        return Err(fail(23, format!("unknown property '{key}'")));
    }
    PROPS
        .iter()
        .find(|p| p.key.eq_ignore_ascii_case(key))
        .ok_or_else(|| fail(23, format!("unknown property '{key}'")))
}

fn current(st: &AgentState, p: &Prop) -> Value {
    st.settings
        .get(p.key)
        .cloned()
        .unwrap_or_else(|| match p.kind {
            Kind::List(_) | Kind::Ports => Value::Array(vec![]),
            _ => Value::String(p.default.to_string()),
        })
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn invalid(p: &Prop, v: &str, why: &str) -> Fail {
    fail(
        23,
        format!("Invalid value '{v}' for property {}: {why}", p.key),
    )
}

/// Validate/canonicalise one scalar value or one list item.
fn check_item(p: &Prop, v: &str) -> R<String> {
    match p.kind {
        Kind::Bool => {
            parse_bool(p.key, &v.to_lowercase()).map_err(|_| invalid(p, v, "must be true or false"))
        }
        Kind::Int(lo, hi) => match v.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid(
                p,
                v,
                &format!("must be an integer from {lo} to {hi}"),
            )),
        },
        Kind::Choice(c) => c
            .iter()
            .find(|x| x.eq_ignore_ascii_case(v))
            .map(|x| x.to_string())
            .ok_or_else(|| invalid(p, v, &format!("must be one of {}", c.join(", ")))),
        Kind::Url => {
            let rest = v
                .strip_prefix("http://")
                .or_else(|| v.strip_prefix("https://"))
                .ok_or_else(|| invalid(p, v, "must be a URL like http://host:port"))?;
            let host_port = rest.trim_end_matches('/');
            if host_port.is_empty() || host_port.contains(['/', ' ', '?', '#']) {
                return Err(invalid(p, v, "must be a URL like http://host:port"));
            }
            if let Some((_, port)) = host_port.rsplit_once(':') {
                if !host_port.ends_with(']') && port.parse::<u16>().is_err() {
                    return Err(invalid(p, v, "invalid port"));
                }
            }
            Ok(v.to_string())
        }
        Kind::List(Some(allowed)) => allowed
            .iter()
            .find(|x| x.eq_ignore_ascii_case(v))
            .map(|x| x.to_string())
            .ok_or_else(|| invalid(p, v, &format!("must be one of {}", allowed.join(", ")))),
        Kind::List(None) => Ok(v.to_string()),
        Kind::Ports => match v.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n.to_string()),
            _ => Err(invalid(p, v, "must be a port number")),
        },
    }
}

fn cmd_config(ctx: &Ctx, p: Parsed, out: &Out) -> R<()> {
    let sub = p.pos.first().map(String::as_str).unwrap_or("");
    let arg = |i: usize, what: &str| -> R<String> {
        p.pos
            .get(i)
            .cloned()
            .ok_or_else(|| fail(23, format!("Missing argument: {what}")))
    };
    match sub {
        "get" => {
            let pr = prop(ctx, &arg(1, "property name")?)?;
            let st = ctx.state()?;
            let v = current(&st, pr);
            if out.json {
                println!("{}", json!({"Key": pr.key, "Value": v}));
            } else {
                println!("{}", setting_display(&v));
            }
            Ok(())
        }
        "set" => {
            let pr = prop(ctx, &arg(1, "property name")?)?;
            let raw = arg(2, "value")?;
            let (add, remove) = (p.on("add"), p.on("remove"));
            if add && remove {
                return Err(fail(23, "--add and --remove cannot be used together"));
            }
            let _lock = ctx.lock()?;
            let mut st = ctx.state()?;
            let new = match pr.kind {
                Kind::List(_) | Kind::Ports => {
                    let items = split_list(&raw)
                        .iter()
                        .map(|i| check_item(pr, i))
                        .collect::<R<Vec<_>>>()?;
                    let mut cur: Vec<String> = current(&st, pr)
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    if add {
                        for i in items {
                            if !cur.contains(&i) {
                                cur.push(i);
                            }
                        }
                    } else if remove {
                        cur.retain(|c| !items.contains(c));
                    } else {
                        cur = items;
                    }
                    Value::Array(cur.into_iter().map(Value::String).collect())
                }
                _ => {
                    if add || remove {
                        return Err(fail(
                            23,
                            format!(
                                "--add/--remove are only valid for multi-value properties, not {}",
                                pr.key
                            ),
                        ));
                    }
                    Value::String(check_item(pr, raw.trim())?)
                }
            };
            st.settings.insert(pr.key.to_string(), new.clone());
            ctx.save_state(&st)?;
            out.line(&format!(
                "Config property {} set to value {}",
                pr.key,
                setting_display(&new)
            ));
            if pr.key.starts_with("proxy.") {
                out.info("Updating service configuration: Azure Arc Proxy");
            }
            out.success_json(&format!("Config property {} set", pr.key));
            Ok(())
        }
        "clear" => {
            let pr = prop(ctx, &arg(1, "property name")?)?;
            let _lock = ctx.lock()?;
            let mut st = ctx.state()?;
            st.settings.remove(pr.key);
            ctx.save_state(&st)?;
            out.line(&format!("Config property {} cleared", pr.key));
            if pr.key.starts_with("proxy.") {
                out.info("Updating service configuration: Azure Arc Proxy");
            }
            out.success_json(&format!("Config property {} cleared", pr.key));
            Ok(())
        }
        "list" => {
            let st = ctx.state()?;
            let props = PROPS.iter().filter(|pr| !ctx.unknown_prop(pr.key));
            if out.json {
                let ls: Vec<Value> = props
                    .map(|pr| json!({"Key": pr.key, "Value": current(&st, pr)}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "LocalSettings": ls }))
                        .unwrap_or_default()
                );
            } else {
                let mut text = String::from("Local Configuration Settings\n");
                for pr in props {
                    let label = if pr.preview {
                        format!("{} (preview)", pr.key)
                    } else {
                        pr.key.to_string()
                    };
                    text.push_str(&format!(
                        "  {label:<54}: {}\n",
                        setting_display(&current(&st, pr))
                    ));
                }
                print!("{text}");
            }
            Ok(())
        }
        "info" => {
            let props: Vec<&Prop> = match p.pos.get(1) {
                Some(k) => vec![prop(ctx, k)?],
                None => PROPS
                    .iter()
                    .filter(|pr| !ctx.unknown_prop(pr.key))
                    .collect(),
            };
            if out.json {
                let a: Vec<Value> = props
                    .iter()
                    .map(|pr| json!({"DisplayName": pr.key, "Description": pr.about, "Preview": pr.preview}))
                    .collect();
                println!("{}", Value::Array(a));
            } else {
                for pr in props {
                    println!("  {:<54}: {}", pr.key, pr.about);
                }
            }
            Ok(())
        }
        "" => Err(fail(
            101,
            "Missing config subcommand: clear, get, info, list or set",
        )),
        other => Err(fail(
            101,
            format!("unknown command \"{other}\" for \"azcmagent config\""),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// check, version, help

fn cmd_check(p: Parsed) -> R<()> {
    if let Some(c) = p.nonempty("cloud") {
        canonical_cloud(c).ok_or_else(|| fail(23, format!("Invalid value for --cloud '{c}'")))?;
    }
    let region = p.nonempty("location").unwrap_or("westeurope");
    println!("INFO    Testing connectivity to endpoints that are needed to connect to Azure... This might take a few minutes.");
    println!("{:<60} {:<10} {:<8}", "Endpoint", "Reachable", "Private");
    for e in [
        "https://management.azure.com".to_string(),
        "https://login.microsoftonline.com".to_string(),
        "https://gbl.his.arc.azure.com".to_string(),
        format!("https://{region}.his.arc.azure.com"),
        format!("https://{region}-gas.guestconfiguration.azure.com"),
    ] {
        println!("{e:<60} {:<10} {:<8}", "true", "false");
    }
    Ok(())
}

fn help(cmd: Option<&str>) {
    match cmd {
        Some("connect") => println!(
            "Connects this machine to Azure Arc\n\nUsage:\n  azcmagent connect [authentication] --subscription-id [subscription] --resource-group [resourcegroup] --location [region] [flags]\n\nFlags:\n      --access-token string   Microsoft Entra access token used to create the Azure Arc-enabled server resource\n  -g, --resource-group string\n  -l, --location string\n  -n, --resource-name string\n  -s, --subscription-id string\n  -t, --tenant-id string\n      --cloud string\n      --correlation-id string\n      --tags string\n      --private-link-scope string\n      --gateway-id string\n  -i, --service-principal-id string\n  -p, --service-principal-secret string\n      --use-device-code\n\nGlobal Flags:\n      --config string   config file (JSON or YAML; keys are option names)\n  -h, --help\n  -j, --json\n      --log-stderr\n      --no-color\n  -v, --verbose"
        ),
        Some("connect existing") => println!(
            "Connects this machine to an existing Azure Arc resource created with its public key\n\nUsage:\n  azcmagent connect existing --private-key [key] --vmid [guid] --subscription-id [subscription] --resource-group [resourcegroup] --resource-name [name] --location [region] --tenant-id [tenant] [flags]\n\nFlags:\n      --private-key string   base64 PKCS#1 RSA private key matching the resource's clientPublicKey\n      --vmid string\n  -g, --resource-group string\n  -l, --location string\n  -n, --resource-name string\n  -s, --subscription-id string\n  -t, --tenant-id string\n      --cloud string\n      --correlation-id string\n      --use-saved-key\n\nGlobal Flags:\n      --config string   config file (JSON or YAML; keys are option names)\n  -h, --help\n  -j, --json\n      --log-stderr\n      --no-color\n  -v, --verbose"
        ),
        Some(c) => println!("Usage:\n  azcmagent {c} [flags]\n\nGlobal Flags:\n      --config string\n  -h, --help\n  -j, --json\n      --log-stderr\n      --no-color\n  -v, --verbose"),
        None => println!(
            "Azure Connected Machine Agent (fake)\n\nUsage:\n  azcmagent [command]\n\nAvailable Commands:\n  check       Run network connectivity checks\n  config      Change configuration settings for this machine\n  connect     Connects this machine to Azure Arc\n  disconnect  Disconnects this machine from Azure Arc\n  help        Help about any command\n  show        Gets machine metadata and Agent status\n  version     Display the agent version\n\nFlags:\n  -h, --help   help for azcmagent\n\nUse \"azcmagent [command] --help\" for more information about a command."
        ),
    }
}

// ---------------------------------------------------------------------------------------------

fn run(ctx: &Ctx, args: &[String], out: &mut Out) -> R<()> {
    let Some((ci, cmd)) = command_of(args) else {
        // Only global flags (or nothing): help, like cobra's root command.
        let p = parse_args(args, &[])?;
        out.json = p.on("json");
        help(None);
        return Ok(());
    };
    let mut rest: Vec<String> = args[..ci].to_vec();
    rest.extend(args[ci + 1..].iter().cloned());
    if cmd == "connect" {
        // `connect existing`: cobra finds the subcommand among the positionals; a flag unknown to
        // `existing` is an error there even if plain `connect` knows it.
        let existing = parse_args(&rest, CONNECT_EXISTING);
        let plain_pos = parse_args(&rest, CONNECT)
            .map(|p| p.pos)
            .unwrap_or_default();
        let is_existing = match &existing {
            Ok(p) => p.pos.first().map(String::as_str) == Some("existing"),
            Err(_) => plain_pos.first().map(String::as_str) == Some("existing"),
        };
        if is_existing {
            let mut p = existing?;
            p.pos.remove(0);
            out.json = p.on("json");
            out.log_stderr = p.on("log-stderr");
            if p.on("help") {
                help(Some("connect existing"));
                return Ok(());
            }
            return cmd_connect_existing(ctx, p, out);
        }
    }
    let spec: &[Flag] = match cmd.as_str() {
        "connect" => CONNECT,
        "disconnect" => DISCONNECT,
        "show" => SHOW,
        "config" => CONFIG,
        "check" => CHECK,
        "version" | "help" => &[],
        other => {
            return Err(fail(
                101,
                format!(
                "unknown command \"{other}\" for \"azcmagent\". Run 'azcmagent --help' for usage."
            ),
            ))
        }
    };
    let p = parse_args(&rest, spec)?;
    out.json = p.on("json");
    out.log_stderr = p.on("log-stderr");
    if p.on("help") || cmd == "help" {
        help(if cmd == "help" {
            p.pos.first().map(String::as_str)
        } else {
            Some(&cmd)
        });
        return Ok(());
    }
    match cmd.as_str() {
        "connect" => cmd_connect(ctx, p, out),
        "disconnect" => cmd_disconnect(ctx, p, out),
        "show" => cmd_show(ctx, p, out.json),
        "config" => cmd_config(ctx, p, out),
        "check" => cmd_check(p),
        _ => {
            if out.json {
                println!("{}", json!({"version": ctx.version()}));
            } else {
                println!("azcmagent version {}", ctx.version());
            }
            Ok(())
        }
    }
}

fn main() {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| "azcmagent".into());
    let args: Vec<String> = argv.collect();
    let ctx = Ctx::from_env();
    record(&ctx, &program, &args);
    // Pre-scan so that even a parse failure honours -j/--log-stderr.
    let mut out = Out {
        json: args.iter().any(|a| a == "-j" || a == "--json"),
        log_stderr: args.iter().any(|a| a == "--log-stderr"),
    };
    let cmd = command_of(&args).map(|(_, c)| c).unwrap_or_default();
    ctx.log("info", &format!("Command: azcmagent {cmd}"));
    let code = match run(&ctx, &args, &mut out) {
        Ok(()) => 0,
        Err(f) => {
            let silent = f.forced && ctx.beh.get("exit_messages") == Some(&Value::Bool(false));
            if !silent {
                out.fatal(&f);
            }
            f.code
        }
    };
    ctx.log(
        if code == 0 { "info" } else { "error" },
        &format!("Exit Code: AZCM{code:04}: {}", meaning(code)),
    );
    let _ = io::stdout().flush();
    std::process::exit(code);
}
