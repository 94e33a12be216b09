//! The resolved settings, each value with where it came from, and their validation.
//!
//! Precedence (CONTRACT §2): flag > `ARC_ENROLL_*` > the seed flow's variable > config file >
//! derived value > default. Flags and `ARC_ENROLL_*` arrive through clap (`cli::Opts`); the seed
//! flow's variables, the config file and `/etc/environment` are read here. Derived values (from the
//! token and IMDS) are filled in later by `enroll::derive`. Every bad value is an
//! `Error::InvalidSetting` naming the setting, the value and its source, before any network call.
//!
//! Here: the `Settings` and their types; `resolve` (precedence), `file` (the config file),
//! `validate` (single values), `template` (the resource-name template).

mod enroll_path;
mod federation;
mod file;
mod resolve;
mod template;
mod validate;

pub use federation::{require_github_job, Federation, GithubRequest, RequestToken};
pub use resolve::{process_env, resolve, Env};
pub use template::{read_hostname, render_resource_name, MachineFacts};
pub use validate::{
    check_local_files, check_text, is_control_or_separator, parse_bool, parse_resource_id,
    parse_tags, redact_userinfo, validate_guid, validate_location, validate_resource_group,
    validate_resource_id, validate_tag,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::azure::proxy::ProxyConfig;

pub const DEFAULT_CONFIG_FILE: &str = "/etc/arc-enroll/config.json";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/arc-enroll";
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
pub const DEFAULT_AGENT_INSTALLER_URL: &str = "https://aka.ms/azcmagent";
pub const DEFAULT_RESOURCE_NAME: &str = "{hostname}";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A config file larger than this is refused (a real one is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Small machine files (hostname, /etc/environment) are read up to this size.
const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;

/// A value and where it came from ("flag --location", "config file /etc/...: location", ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: String,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: impl Into<String>) -> Sourced<T> {
        Sourced {
            value,
            source: source.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    AzureCloud,
    AzureUSGovernment,
    AzureChinaCloud,
    /// Azure Local (agent >= 1.67, FACTS §13): managed from public Azure, so public-cloud ARM,
    /// audience and endpoints; only the name given to the agent differs.
    AzureLocal,
}

impl Cloud {
    pub fn parse(s: &str) -> Option<Cloud> {
        match s.trim().to_ascii_lowercase().as_str() {
            "azurecloud" | "azurepubliccloud" | "public" => Some(Cloud::AzureCloud),
            "azureusgovernment" | "azureusgovernmentcloud" | "usgov" => {
                Some(Cloud::AzureUSGovernment)
            }
            "azurechinacloud" | "china" => Some(Cloud::AzureChinaCloud),
            "azure.local" | "azurelocal" => Some(Cloud::AzureLocal),
            _ => None,
        }
    }

    /// The name azcmagent's `--cloud` takes.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "AzureCloud",
            Cloud::AzureUSGovernment => "AzureUSGovernment",
            Cloud::AzureChinaCloud => "AzureChinaCloud",
            Cloud::AzureLocal => "Azure.Local",
        }
    }

    /// ARM's base URL (FACTS §7).
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => "https://management.azure.com",
            Cloud::AzureUSGovernment => "https://management.usgovcloudapi.net",
            Cloud::AzureChinaCloud => "https://management.chinacloudapi.cn",
        }
    }

    /// The resource we ask IMDS for; it becomes the token's `aud`.
    pub fn token_resource(self) -> &'static str {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => "https://management.azure.com/",
            Cloud::AzureUSGovernment => "https://management.usgovcloudapi.net/",
            Cloud::AzureChinaCloud => "https://management.chinacloudapi.cn/",
        }
    }

    /// The Entra authority (FACTS §11).
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => "https://login.microsoftonline.com",
            Cloud::AzureUSGovernment => "https://login.microsoftonline.us",
            Cloud::AzureChinaCloud => "https://login.partner.microsoftonline.cn",
        }
    }

    /// The audience an external token must carry for the exchange, and the federated
    /// credential's audience (FACTS §11; the sovereign ones are UNCONFIRMED for external issuers).
    pub fn fic_audience(self) -> &'static str {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => "api://AzureADTokenExchange",
            Cloud::AzureUSGovernment => "api://AzureADTokenExchangeUSGov",
            Cloud::AzureChinaCloud => "api://AzureADTokenExchangeChina",
        }
    }

    /// The client-credentials scope for ARM (FACTS §11).
    pub fn arm_scope(self) -> &'static str {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => "https://management.azure.com/.default",
            Cloud::AzureUSGovernment => "https://management.usgovcloudapi.net/.default",
            Cloud::AzureChinaCloud => "https://management.chinacloudapi.cn/.default",
        }
    }

    /// Audiences ARM accepts (FACTS §7: the resource-manager URL and the legacy core URL).
    pub fn accepted_audiences(self) -> &'static [&'static str] {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => &[
                "https://management.azure.com/",
                "https://management.core.windows.net/",
            ],
            Cloud::AzureUSGovernment => &[
                "https://management.usgovcloudapi.net/",
                "https://management.core.usgovcloudapi.net/",
            ],
            Cloud::AzureChinaCloud => &[
                "https://management.chinacloudapi.cn/",
                "https://management.core.chinacloudapi.cn/",
            ],
        }
    }

    /// Hosts the agent must reach (FACTS §7 and §9; network requirements).
    pub fn required_endpoints(self) -> &'static [&'static str] {
        match self {
            Cloud::AzureCloud | Cloud::AzureLocal => &[
                "https://management.azure.com/",
                "https://login.microsoftonline.com/",
                "https://login.windows.net/",
                "https://pas.windows.net/",
                "https://gbl.his.arc.azure.com/",
                "https://guestconfiguration.azure.com/",
            ],
            Cloud::AzureUSGovernment => &[
                "https://management.usgovcloudapi.net/",
                "https://login.microsoftonline.us/",
                "https://pasff.usgovcloudapi.net/",
                "https://gbl.his.arc.azure.us/",
                "https://guestconfiguration.azure.us/",
            ],
            Cloud::AzureChinaCloud => &[
                "https://management.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn/",
                "https://pas.chinacloudapi.cn/",
                "https://gbl.his.arc.azure.cn/",
                "https://guestconfiguration.azure.cn/",
            ],
        }
    }
}

/// Which managed identity to ask IMDS for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    SystemAssigned,
    ResourceId(String),
    ClientId(String),
    ObjectId(String),
}

impl Identity {
    /// The IMDS query parameter selecting this identity (FACTS §5.1).
    pub fn query_param(&self) -> Option<(&'static str, &str)> {
        match self {
            Identity::SystemAssigned => None,
            Identity::ResourceId(v) => Some(("msi_res_id", v)),
            Identity::ClientId(v) => Some(("client_id", v)),
            Identity::ObjectId(v) => Some(("object_id", v)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Identity::SystemAssigned => "the system-assigned identity".into(),
            Identity::ResourceId(v) => format!("the user-assigned identity {v}"),
            Identity::ClientId(v) => format!("the user-assigned identity with client id {v}"),
            Identity::ObjectId(v) => format!("the user-assigned identity with object id {v}"),
        }
    }

    /// For the state file: "system-assigned" or "user-assigned msi_res_id=...".
    pub fn label(&self) -> String {
        match self.query_param() {
            None => "system-assigned".into(),
            Some((k, v)) => format!("user-assigned {k}={v}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClonePolicy {
    Reconnect,
    Fail,
    Ignore,
}

impl ClonePolicy {
    pub fn name(self) -> &'static str {
        match self {
            ClonePolicy::Reconnect => "reconnect",
            ClonePolicy::Fail => "fail",
            ClonePolicy::Ignore => "ignore",
        }
    }
}

/// Where the token comes from (`identity::source`): IMDS, or an external OIDC token exchanged
/// at Entra for a user-assigned identity's token (workload identity federation, FACTS §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSourceKind {
    Imds,
    Gcp,
    Aws,
    File,
    Github,
}

impl TokenSourceKind {
    pub fn parse(s: &str) -> Option<TokenSourceKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "imds" => Some(TokenSourceKind::Imds),
            "gcp" => Some(TokenSourceKind::Gcp),
            "aws" => Some(TokenSourceKind::Aws),
            "file" => Some(TokenSourceKind::File),
            "github" => Some(TokenSourceKind::Github),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenSourceKind::Imds => "imds",
            TokenSourceKind::Gcp => "gcp",
            TokenSourceKind::Aws => "aws",
            TokenSourceKind::File => "file",
            TokenSourceKind::Github => "github",
        }
    }

    /// Every source but IMDS goes through workload identity federation.
    pub fn is_federated(self) -> bool {
        self != TokenSourceKind::Imds
    }

    /// Whether the source knows a cloud instance id (`{instance_id}` in the resource name).
    pub fn has_instance_id(self) -> bool {
        matches!(self, TokenSourceKind::Gcp | TokenSourceKind::Aws)
    }
}

/// How the machine is enrolled (`enroll::path`): the agent connects with the token, or the
/// machine resource is pre-created with a one-time key (FACTS §10), optionally with its Nexus VM's
/// traffic assigned to Private Relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollPathKind {
    AgentToken,
    Precreate,
    PrivateRelay,
}

impl EnrollPathKind {
    pub fn label(self) -> &'static str {
        match self {
            EnrollPathKind::AgentToken => "agent connect with the token",
            EnrollPathKind::Precreate => "pre-created machine (connect existing)",
            EnrollPathKind::PrivateRelay => "pre-created machine with Nexus Private Relay",
        }
    }

    /// The machine resource is created by arc-enroll with a one-time key.
    pub fn precreates(self) -> bool {
        self != EnrollPathKind::AgentToken
    }
}

/// The kind of a local agent package (`--agent-package`), by its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageKind {
    Deb,
    Rpm,
}

impl PackageKind {
    pub fn of(path: &Path) -> Option<PackageKind> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "deb" => Some(PackageKind::Deb),
            "rpm" => Some(PackageKind::Rpm),
            _ => None,
        }
    }
}

/// Everything a command needs, resolved and validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub subscription_id: Option<Sourced<String>>,
    pub resource_group: Option<Sourced<String>>,
    pub tenant_id: Option<Sourced<String>>,
    pub location: Option<Sourced<String>>,
    /// The template, not yet rendered (see `render_resource_name`).
    pub resource_name: Sourced<String>,
    pub tags: Sourced<BTreeMap<String, String>>,
    pub cloud: Sourced<Cloud>,
    pub private_link_scope: Option<Sourced<String>>,
    pub correlation_id: Option<Sourced<String>>,
    pub gateway_id: Option<Sourced<String>>,
    pub enable_automatic_upgrade: Sourced<bool>,
    /// `azcmagent connect --use-aws-ec2-hostname` (agent >= 1.62, FACTS §13).
    pub use_aws_ec2_hostname: Sourced<bool>,
    pub identity: Sourced<Identity>,
    pub proxy: ProxyConfig,
    pub clone_policy: Sourced<ClonePolicy>,
    pub reconnect_on_change: Sourced<bool>,
    pub install_agent: Sourced<bool>,
    pub timeout: Sourced<Duration>,
    pub token_on_command_line: Sourced<bool>,
    pub token_source: Sourced<TokenSourceKind>,
    /// Workload identity federation: the authority, the external token's origin, test endpoints.
    pub federation: Federation,
    pub enroll_path: Sourced<EnrollPathKind>,
    /// `--nexus-vm-id` (validated as a Microsoft.NetworkCloud/virtualMachines id).
    pub nexus_vm_id: Option<Sourced<String>>,
    pub key_on_command_line: Sourced<bool>,
    pub config_file: Option<PathBuf>,
    pub imds_endpoint: Sourced<String>,
    pub arm_endpoint: Sourced<String>,
    /// An explicit agent path; `None` means search PATH, then /opt/azcmagent/bin/azcmagent.
    pub azcmagent: Option<Sourced<String>>,
    pub agent_installer_url: Sourced<String>,
    /// The pinned SHA-256 of the installer script, lower-case hex.
    pub agent_installer_sha256: Option<Sourced<String>>,
    pub allow_insecure_installer: Sourced<bool>,
    /// A local agent package (.deb/.rpm) that `--install-agent` installs instead of downloading.
    pub agent_package: Option<Sourced<PathBuf>>,
    pub state_dir: Sourced<PathBuf>,
    pub sysroot: Sourced<PathBuf>,
    /// The agent's local settings (`agent` object in the config file), validated by `agent_settings`.
    pub agent: Option<Sourced<serde_json::Value>>,
}

impl Settings {
    /// Outside Azure nothing can be derived: a federated `connect` needs subscription, resource
    /// group and location set (exit 2 before any network call).
    pub fn require_federated_target(&self) -> Result<(), crate::error::Error> {
        let kind = self.token_source.value;
        if !kind.is_federated() {
            return Ok(());
        }
        federation::require_github_job(kind, &self.federation)?;
        for (name, v) in [
            ("subscription_id", &self.subscription_id),
            ("resource_group", &self.resource_group),
            ("location", &self.location),
        ] {
            if v.is_none() {
                return Err(crate::error::Error::invalid(
                    name,
                    "",
                    "nowhere",
                    format!(
                        "--token-source {} runs outside Azure, where it cannot be derived (the token names \
                         the identity, not this machine, and there is no IMDS): set --{} or ARC_ENROLL_{}",
                        kind.name(),
                        name.replace('_', "-"),
                        name.to_ascii_uppercase()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One log line per setting that matters, with its source (`check`/`token`/`connect`).
    pub fn log_sources(&self) {
        let opt = |name: &str, v: &Option<Sourced<String>>| match v {
            Some(s) => log::info!("setting {name} = {} (from {})", s.value, s.source),
            None => log::info!("setting {name}: not set; will be derived"),
        };
        opt("subscription_id", &self.subscription_id);
        opt("resource_group", &self.resource_group);
        opt("tenant_id", &self.tenant_id);
        opt("location", &self.location);
        log::info!(
            "setting resource_name = {} (from {})",
            self.resource_name.value,
            self.resource_name.source
        );
        log::info!(
            "setting cloud = {} (from {})",
            self.cloud.value.name(),
            self.cloud.source
        );
        log::info!(
            "setting identity = {} (from {})",
            self.identity.value.describe(),
            self.identity.source
        );
        if self.token_source.value.is_federated() {
            self.federation
                .log_sources(self.token_source.value, &self.token_source.source);
        }
        match &self.proxy.https {
            Some((p, s)) => log::info!("setting proxy = {p} (from {s})"),
            None => log::info!("setting proxy: none (Azure endpoints are reached directly)"),
        }
        if let Some((n, s)) = &self.proxy.no_proxy {
            log::info!("setting no_proxy = {n} (from {s})");
        }
        if !self.tags.value.is_empty() {
            log::info!(
                "setting tags = {:?} (from {})",
                self.tags.value,
                self.tags.source
            );
        }
        if self.enroll_path.value.precreates() {
            log::info!(
                "setting enroll path = {} (from {})",
                self.enroll_path.value.label(),
                self.enroll_path.source
            );
        }
        if let Some(s) = &self.nexus_vm_id {
            log::info!("setting nexus_vm_id = {} (from {})", s.value, s.source);
        }
        for (name, v) in [
            ("private_link_scope", &self.private_link_scope),
            ("gateway_id", &self.gateway_id),
            ("correlation_id", &self.correlation_id),
        ] {
            if let Some(s) = v {
                log::info!("setting {name} = {} (from {})", s.value, s.source);
            }
        }
        log::info!(
            "setting timeout = {} (from {}); clone_policy = {} (from {}); state_dir = {} (from {})",
            crate::timefmt::human(self.timeout.value),
            self.timeout.source,
            self.clone_policy.value.name(),
            self.clone_policy.source,
            self.state_dir.value.display(),
            self.state_dir.source
        );
        if let Some(p) = &self.config_file {
            log::info!("settings file: {}", p.display());
        }
    }
}
