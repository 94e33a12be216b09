//! `user-data`: print cloud-init user-data (`#cloud-config`) that writes `/etc/arc-enroll/config.json`
//! from the settings that were given, optionally fetches the binary (checksum checked), and runs
//! `arc-enroll connect` once (cloud-init's `runcmd` is per instance).
//!
//! Which settings go into the config: every value given on the command line, in `ARC_ENROLL_*`, in
//! the seed flow's variables (SUBSCRIPTION_ID, UAMI_ID, ...) or in a config file. Defaults and
//! derived values are left out (the VM derives them itself). The proxy variables of the machine
//! running `user-data` (`https_proxy`, `no_proxy`, `/etc/environment`) are left out too: they
//! describe the operator's workstation, not the VM; `--proxy`/`--no-proxy` put a proxy in.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::cli::Opts;
use crate::config::{Identity, Settings, Sourced};
use crate::error::Error;

/// Where a downloaded binary is installed in the VM.
pub const FETCHED_BINARY: &str = "/usr/local/bin/arc-enroll";

pub fn run(
    opts: &Opts,
    settings: &Settings,
    binary_url: Option<String>,
    binary_sha256: Option<String>,
    base64: bool,
) -> Result<u8, Error> {
    let _ = opts;
    let fetch = fetch_spec(binary_url, binary_sha256)?;
    let (config, notes) = config_json(settings);
    for n in &notes {
        log::warn!("{n}");
    }
    let text = render(&config, fetch.as_ref());
    if base64 {
        let b = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        crate::output::stdout(&format!("{b}\n"));
    } else {
        crate::output::stdout(&text);
    }
    Ok(0)
}

/// A binary to download: URL and lower-case SHA-256.
#[derive(Clone, Debug)]
pub struct Fetch {
    pub url: String,
    pub sha256: String,
}

fn fetch_spec(url: Option<String>, sha: Option<String>) -> Result<Option<Fetch>, Error> {
    match (url, sha) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::Usage(
            "--binary-sha256 needs --binary-url (the checksum of what?)".into(),
        )),
        (Some(_), None) => Err(Error::Usage(
            "--binary-url needs --binary-sha256: the VM runs the downloaded binary as root, so its \
             checksum must be pinned (sha256sum arc-enroll)"
                .into(),
        )),
        (Some(url), Some(sha)) => {
            let url = url.trim().to_string();
            if crate::azure::proxy::split_url(&url).is_none()
                || url.contains(' ')
                || url.chars().any(crate::config::is_control_or_separator)
            {
                return Err(Error::invalid(
                    "binary_url",
                    &url,
                    "flag --binary-url",
                    "must be an http:// or https:// URL",
                ));
            }
            let sha = sha.trim().to_ascii_lowercase();
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "binary_sha256",
                    &sha,
                    "flag --binary-sha256",
                    "must be 64 hexadecimal digits (the output of sha256sum)",
                ));
            }
            Ok(Some(Fetch { url, sha256: sha }))
        }
    }
}

/// Is this source one the user gave for the VM (not a default, not the local machine's proxy)?
fn given(source: &str) -> bool {
    source != "default" && !source.is_empty()
}

/// The config file's JSON from the given settings, and notes about what was left out or is secret.
pub fn config_json(s: &Settings) -> (Value, Vec<String>) {
    let mut m = Map::new();
    let mut notes = Vec::new();
    let opt = |m: &mut Map<String, Value>, key: &str, v: &Option<Sourced<String>>| {
        if let Some(v) = v.as_ref().filter(|v| given(&v.source)) {
            m.insert(key.into(), json!(v.value));
        }
    };
    opt(&mut m, "subscription_id", &s.subscription_id);
    opt(&mut m, "resource_group", &s.resource_group);
    opt(&mut m, "tenant_id", &s.tenant_id);
    opt(&mut m, "location", &s.location);
    if given(&s.resource_name.source) {
        m.insert("resource_name".into(), json!(s.resource_name.value));
    }
    if given(&s.tags.source) && !s.tags.value.is_empty() {
        m.insert("tags".into(), json!(s.tags.value));
    }
    if given(&s.cloud.source) {
        m.insert("cloud".into(), json!(s.cloud.value.name()));
    }
    opt(&mut m, "private_link_scope", &s.private_link_scope);
    opt(&mut m, "correlation_id", &s.correlation_id);
    opt(&mut m, "gateway_id", &s.gateway_id);
    for (key, v) in [
        ("enable_automatic_upgrade", &s.enable_automatic_upgrade),
        ("use_aws_ec2_hostname", &s.use_aws_ec2_hostname),
        ("reconnect_on_change", &s.reconnect_on_change),
        ("install_agent", &s.install_agent),
        ("token_on_command_line", &s.token_on_command_line),
    ] {
        if given(&v.source) {
            m.insert(key.into(), json!(v.value));
        }
    }
    if given(&s.identity.source) {
        let (k, v) = match &s.identity.value {
            Identity::SystemAssigned => ("", ""),
            Identity::ResourceId(v) => ("resource_id", v.as_str()),
            Identity::ClientId(v) => ("client_id", v.as_str()),
            Identity::ObjectId(v) => ("object_id", v.as_str()),
        };
        if !k.is_empty() {
            m.insert("identity".into(), json!({ k: v }));
        }
    }
    // The proxy: only what was given for the VM (flag, ARC_ENROLL_*, config file).
    let for_vm = |src: &str| {
        src.starts_with("flag ")
            || src.starts_with("environment ARC_ENROLL_")
            || src.starts_with("config file ")
    };
    let proxy = s.proxy.https.as_ref().or(s.proxy.http.as_ref());
    if let Some((p, src)) = proxy {
        if for_vm(src) {
            m.insert("proxy".into(), json!(p.with_credentials()));
            if p.password().is_some() {
                notes.push(format!(
                    "the user-data holds the proxy password you gave ({p}): anyone who can read this \
                     VM's user data can read it; the VM keeps it in /etc/arc-enroll/config.json (0600)"
                ));
            }
        } else {
            notes.push(format!(
                "not putting the proxy {p} (from {src}) into the user-data: it is this machine's \
                 setting, not the VM's; pass --proxy to give the VM a proxy"
            ));
        }
    }
    if let Some((n, src)) = &s.proxy.no_proxy {
        if for_vm(src) {
            m.insert("no_proxy".into(), json!(n));
        } else if proxy.is_some_and(|(_, s)| for_vm(s)) {
            notes.push(format!(
                "not putting no_proxy {n:?} (from {src}) into the user-data; pass --no-proxy to set it"
            ));
        }
    }
    private_relay(s, &mut m, &mut notes);
    if given(&s.clone_policy.source) {
        m.insert("clone_policy".into(), json!(s.clone_policy.value.name()));
    }
    if given(&s.timeout.source) {
        m.insert(
            "timeout".into(),
            json!(format!("{}s", s.timeout.value.as_secs())),
        );
    }
    for (key, v) in [
        ("imds_endpoint", &s.imds_endpoint),
        ("arm_endpoint", &s.arm_endpoint),
        ("agent_installer_url", &s.agent_installer_url),
    ] {
        if given(&v.source) {
            m.insert(key.into(), json!(v.value));
        }
    }
    // Paths name files on one machine: the operator's ARC_ENROLL_STATE_DIR (or a config file's
    // state_dir) says where *this* machine keeps things, not the VM. Like the operator's proxy,
    // such a setting goes into the user-data only when given on the command line.
    let mut local_path = |m: &mut Map<String, Value>, key: &str, value: String, source: &str| {
        if source.starts_with("flag ") {
            m.insert(key.into(), json!(value));
        } else if given(source) {
            notes.push(format!(
                "not putting {key}={value:?} (from {source}) into the user-data: a path setting of \
                 this machine does not describe the VM; pass --{} to give the VM one",
                key.replace('_', "-")
            ));
        }
    };
    if let Some(a) = &s.azcmagent {
        local_path(&mut m, "azcmagent", a.value.clone(), &a.source);
    }
    if let Some(p) = &s.agent_package {
        local_path(
            &mut m,
            "agent_package",
            p.value.display().to_string(),
            &p.source,
        );
    }
    local_path(
        &mut m,
        "state_dir",
        s.state_dir.value.display().to_string(),
        &s.state_dir.source,
    );
    opt(&mut m, "agent_installer_sha256", &s.agent_installer_sha256);
    if given(&s.allow_insecure_installer.source) {
        m.insert(
            "allow_insecure_installer".into(),
            json!(s.allow_insecure_installer.value),
        );
    }
    federation_json(s, &mut m, &mut notes);
    if let Some(a) = &s.agent {
        m.insert("agent".into(), a.value.clone());
    }
    (Value::Object(m), notes)
}

/// Workload identity federation: the source and what it needs, as given for the VM (the Azure
/// SDK variables of the machine running `user-data` describe that machine and are left out).
fn federation_json(s: &Settings, m: &mut Map<String, Value>, notes: &mut Vec<String>) {
    let kind = s.token_source.value;
    if !kind.is_federated() {
        return;
    }
    let for_vm = |src: &str| {
        src.starts_with("flag ")
            || src.starts_with("environment ARC_ENROLL_")
            || src.starts_with("config file ")
    };
    m.insert("token_source".into(), json!(kind.name()));
    let f = &s.federation;
    if for_vm(&f.authority_host.source) {
        m.insert("authority_host".into(), json!(f.authority_host.value));
    }
    if let Some(t) = f.token_file.as_ref().filter(|t| for_vm(&t.source)) {
        m.insert(
            "federated_token_file".into(),
            json!(t.value.display().to_string()),
        );
    }
    for (key, v) in [
        ("gcp_metadata_endpoint", Some(&f.gcp_metadata_endpoint)),
        ("aws_imds_endpoint", Some(&f.aws_imds_endpoint)),
        ("aws_sts_endpoint", f.aws_sts_endpoint.as_ref()),
    ] {
        if let Some(v) = v.filter(|v| given(&v.source)) {
            m.insert(key.into(), json!(v.value));
        }
    }
    for (key, v) in [
        ("tenant_id", &s.tenant_id),
        ("subscription_id", &s.subscription_id),
        ("resource_group", &s.resource_group),
        ("location", &s.location),
    ] {
        if let Some(v) = v {
            if !m.contains_key(key) {
                m.insert(key.into(), json!(v.value));
            }
        } else if key != "tenant_id" {
            notes.push(format!(
                "--token-source {} cannot derive {key} on the VM: pass --{} so the user-data carries it",
                kind.name(),
                key.replace('_', "-")
            ));
        }
    }
    if let Identity::ClientId(c) = &s.identity.value {
        m.insert("identity".into(), json!({ "client_id": c }));
    }
    notes.push(match kind {
        crate::config::TokenSourceKind::Gcp => "the instance needs a service account; its numeric unique id is the federated credential's subject (docs/federation.md)".to_string(),
        crate::config::TokenSourceKind::Aws => "the instance needs an instance profile allowed sts:GetWebIdentityToken, and the account needs outbound identity federation enabled (docs/federation.md)".to_string(),
        crate::config::TokenSourceKind::File => "the VM needs the token file in place before arc-enroll runs (docs/federation.md)".to_string(),
        _ => "GitHub Actions jobs do not run cloud-init: run arc-enroll in the job itself (docs/federation.md)".to_string(),
    });
}

/// The Nexus CSN's tenant proxy: always this address (FACTS §9, §10 step 5).
pub const NEXUS_PROXY: &str = "http://169.254.0.11:3128";

/// `--precreate` / `--private-relay` into the config; for Private Relay also the Nexus proxy
/// (unless one was given for the VM), so the document replaces the whole Nexus how-to: key pair,
/// machine PUT, assignRelay, the agent's proxy and `connect existing` all happen in arc-enroll.
fn private_relay(s: &Settings, m: &mut Map<String, Value>, notes: &mut Vec<String>) {
    use crate::config::EnrollPathKind;
    match s.enroll_path.value {
        EnrollPathKind::AgentToken => return,
        EnrollPathKind::Precreate => {
            m.insert("precreate".into(), json!(true));
        }
        EnrollPathKind::PrivateRelay => {
            m.insert("private_relay".into(), json!(true));
        }
    }
    if given(&s.key_on_command_line.source) {
        m.insert(
            "key_on_command_line".into(),
            json!(s.key_on_command_line.value),
        );
    }
    if let Some(v) = s.nexus_vm_id.as_ref().filter(|v| given(&v.source)) {
        m.insert("nexus_vm_id".into(), json!(v.value));
    }
    if s.enroll_path.value == EnrollPathKind::PrivateRelay && !m.contains_key("proxy") {
        m.insert("proxy".into(), json!(NEXUS_PROXY));
        if !m.contains_key("no_proxy") {
            m.insert(
                "no_proxy".into(),
                json!("169.254.169.254,localhost,127.0.0.1"),
            );
        }
        notes.push(format!(
            "--private-relay: the VM reaches Azure through the Nexus Cloud Services Network proxy {NEXUS_PROXY} (pass --proxy to use another)"
        ));
    }
}

/// Single-quote for sh: 'it'\''s'.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Indent every line of `text` by `n` spaces (for a YAML block scalar).
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The fetch script: download with curl (else wget), through the VM's proxy when one is configured,
/// check the SHA-256, install to FETCHED_BINARY.
pub fn fetch_script(f: &Fetch, config: &Value) -> String {
    let mut s = String::from("set -eu\n");
    if let Some(p) = config.get("proxy").and_then(Value::as_str) {
        let mut no_proxy = config
            .get("no_proxy")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !no_proxy
            .split([',', ' '])
            .any(|e| e.trim() == "169.254.169.254")
        {
            if !no_proxy.trim().is_empty() {
                no_proxy.push(',');
            }
            no_proxy.push_str("169.254.169.254");
        }
        s.push_str(&format!(
            "export https_proxy={p} http_proxy={p} no_proxy={np}\n",
            p = sh_quote(p),
            np = sh_quote(&no_proxy)
        ));
    }
    s.push_str(&format!(
        "url={url}\nsum={sum}\ndst={dst}\n",
        url = sh_quote(&f.url),
        sum = f.sha256,
        dst = FETCHED_BINARY
    ));
    s.push_str(
        r#"tmp=$(mktemp "$dst.XXXXXX")
trap 'rm -f "$tmp"' EXIT
echo "arc-enroll: downloading $url"
if command -v curl >/dev/null; then
  curl -fsSL --retry 5 --retry-delay 3 --retry-connrefused --connect-timeout 20 -o "$tmp" "$url"
else
  wget -q -t 5 -T 20 -O "$tmp" "$url"
fi
if ! echo "$sum  $tmp" | sha256sum -c --status -; then
  echo "arc-enroll: the download from $url does not have SHA-256 $sum; not installing it" >&2
  exit 1
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$dst"
trap - EXIT
echo "arc-enroll: installed $dst (sha256 $sum)"
"#,
    );
    s
}

/// The whole user-data document.
pub fn render(config: &Value, fetch: Option<&Fetch>) -> String {
    let pretty = serde_json::to_string_pretty(config).unwrap_or_else(|_| "{}".into());
    let mut out = String::new();
    out.push_str("#cloud-config\n");
    out.push_str(&format!(
        "# Generated by `arc-enroll user-data` {}: enrolls this VM into Azure Arc with its managed\n\
         # identity on first boot. Log: /var/log/cloud-init-output.log. Re-run: sudo arc-enroll connect\n",
        crate::output::VERSION
    ));
    // The config goes in as base64: whatever a setting holds, it cannot end the YAML scalar and
    // add keys of its own (YAML 1.1 breaks lines at U+0085, U+2028 and U+2029 too, which JSON
    // leaves unescaped). The comment names what it sets; decode it with `base64 -d`.
    let keys: Vec<&str> = config
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "# /etc/arc-enroll/config.json (base64 of its JSON) sets: {}\n",
        if keys.is_empty() {
            "nothing (the VM derives every setting)".to_string()
        } else {
            keys.join(", ")
        }
    ));
    out.push_str("write_files:\n");
    out.push_str("  - path: /etc/arc-enroll/config.json\n");
    out.push_str("    owner: root:root\n");
    out.push_str("    permissions: '0600'\n");
    out.push_str("    encoding: b64\n");
    out.push_str(&format!(
        "    content: {}\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{pretty}\n"))
    ));
    out.push_str("runcmd:\n");
    let bin = match fetch {
        Some(f) => {
            out.push_str("  - - sh\n    - -c\n    - |\n");
            out.push_str(&indent(&fetch_script(f, config), 6));
            FETCHED_BINARY
        }
        None => "arc-enroll",
    };
    out.push_str(&format!(
        "  - {}\n",
        serde_json::to_string(&[bin, "connect"]).unwrap_or_default()
    ));
    out
}
