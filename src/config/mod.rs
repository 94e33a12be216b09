//! The resolved settings, each value with where it came from, and their validation.
//!
//! Precedence (CONTRACT §2): flag > `ARC_ENROLL_*` > the seed flow's variable > config file >
//! derived value > default. Flags and `ARC_ENROLL_*` arrive through clap (`cli::Opts`); the seed
//! flow's variables, the config file and `/etc/environment` are read here. Derived values (from the
//! token and IMDS) are filled in later by `fill_derived`. Every bad value is an
//! `Error::InvalidSetting` naming the setting, the value and its source, before any network call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::azure::proxy::{ProxyConfig, ProxyUrl};
use crate::cli::{Opts, Sources};
use crate::duration::parse_duration;
use crate::error::Error;

pub const DEFAULT_CONFIG_FILE: &str = "/etc/arc-enroll/config.json";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/arc-enroll";
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
pub const DEFAULT_AGENT_INSTALLER_URL: &str = "https://aka.ms/azcmagent";
pub const DEFAULT_RESOURCE_NAME: &str = "{hostname}";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

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
}

impl Cloud {
    pub fn parse(s: &str) -> Option<Cloud> {
        match s.trim().to_ascii_lowercase().as_str() {
            "azurecloud" | "azurepubliccloud" | "public" => Some(Cloud::AzureCloud),
            "azureusgovernment" | "azureusgovernmentcloud" | "usgov" => {
                Some(Cloud::AzureUSGovernment)
            }
            "azurechinacloud" | "china" => Some(Cloud::AzureChinaCloud),
            _ => None,
        }
    }

    /// The name azcmagent's `--cloud` takes.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "AzureCloud",
            Cloud::AzureUSGovernment => "AzureUSGovernment",
            Cloud::AzureChinaCloud => "AzureChinaCloud",
        }
    }

    /// ARM's base URL (FACTS §7).
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "https://management.azure.com",
            Cloud::AzureUSGovernment => "https://management.usgovcloudapi.net",
            Cloud::AzureChinaCloud => "https://management.chinacloudapi.cn",
        }
    }

    /// The resource we ask IMDS for; it becomes the token's `aud`.
    pub fn token_resource(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "https://management.azure.com/",
            Cloud::AzureUSGovernment => "https://management.usgovcloudapi.net/",
            Cloud::AzureChinaCloud => "https://management.chinacloudapi.cn/",
        }
    }

    /// Audiences ARM accepts (FACTS §7: the resource-manager URL and the legacy core URL).
    pub fn accepted_audiences(self) -> &'static [&'static str] {
        match self {
            Cloud::AzureCloud => &[
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
            Cloud::AzureCloud => &[
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

/// Where the token comes from (`identity::source`). Only IMDS today; the federated sources of
/// issue 15 add a variant here and one arm in `identity::source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSourceKind {
    Imds,
}

/// How the machine is enrolled (`enroll::paths::select`). Only "the agent connects with the
/// token" today; pre-created machines and Private Relay (issue 14) add variants here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollPathKind {
    AgentToken,
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
    pub identity: Sourced<Identity>,
    pub proxy: ProxyConfig,
    pub clone_policy: Sourced<ClonePolicy>,
    pub reconnect_on_change: Sourced<bool>,
    pub install_agent: Sourced<bool>,
    pub timeout: Sourced<Duration>,
    pub token_on_command_line: Sourced<bool>,
    pub token_source: Sourced<TokenSourceKind>,
    pub enroll_path: Sourced<EnrollPathKind>,
    pub config_file: Option<PathBuf>,
    pub imds_endpoint: Sourced<String>,
    pub arm_endpoint: Sourced<String>,
    /// An explicit agent path; `None` means search PATH, then /opt/azcmagent/bin/azcmagent.
    pub azcmagent: Option<Sourced<String>>,
    pub agent_installer_url: Sourced<String>,
    pub state_dir: Sourced<PathBuf>,
    pub sysroot: Sourced<PathBuf>,
    /// The agent's local settings (`agent` object in the config file), validated by `agent_settings`.
    pub agent: Option<Sourced<serde_json::Value>>,
}

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    subscription_id: Option<String>,
    resource_group: Option<String>,
    tenant_id: Option<String>,
    location: Option<String>,
    resource_name: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    cloud: Option<String>,
    private_link_scope: Option<String>,
    correlation_id: Option<String>,
    gateway_id: Option<String>,
    enable_automatic_upgrade: Option<bool>,
    identity: Option<FileIdentity>,
    proxy: Option<String>,
    no_proxy: Option<String>,
    clone_policy: Option<String>,
    reconnect_on_change: Option<bool>,
    install_agent: Option<bool>,
    timeout: Option<String>,
    token_on_command_line: Option<bool>,
    imds_endpoint: Option<String>,
    arm_endpoint: Option<String>,
    azcmagent: Option<String>,
    agent_installer_url: Option<String>,
    state_dir: Option<String>,
    agent: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    resource_id: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
}

/// The process environment as a map, so resolution is a pure function in tests.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars().collect()
}

/// Resolve and validate all settings. No network; reads the config file and /etc/environment.
pub fn resolve(opts: &Opts, sources: &Sources, env: &Env) -> Result<Settings, Error> {
    let r = Resolver::new(opts, sources, env)?;
    r.settings()
}

struct Resolver<'a> {
    opts: &'a Opts,
    sources: &'a Sources,
    env: &'a Env,
    file: FileConfig,
    file_path: Option<PathBuf>,
    sysroot: Sourced<PathBuf>,
}

/// Candidate value: (value, source).
type Cand = Option<(String, String)>;

impl<'a> Resolver<'a> {
    fn new(opts: &'a Opts, sources: &'a Sources, env: &'a Env) -> Result<Resolver<'a>, Error> {
        let (file, file_path) = load_config_file(opts, sources)?;
        let sysroot = match &opts.sysroot {
            Some(s) => Sourced::new(PathBuf::from(s), sources.describe("sysroot")),
            None => Sourced::new(PathBuf::from("/"), "default"),
        };
        Ok(Resolver {
            opts,
            sources,
            env,
            file,
            file_path,
            sysroot,
        })
    }

    fn flag(&self, id: &str, v: &Option<String>) -> Cand {
        v.as_ref().map(|v| (v.clone(), self.sources.describe(id)))
    }

    fn seed(&self, names: &[&str]) -> Cand {
        names.iter().find_map(|n| {
            self.env
                .get(*n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.clone(), format!("environment {n} (seed flow variable)")))
        })
    }

    fn file(&self, key: &str, v: &Option<String>) -> Cand {
        v.as_ref().map(|v| {
            (
                v.clone(),
                format!(
                    "config file {}: {key}",
                    self.file_path
                        .as_deref()
                        .unwrap_or(Path::new("?"))
                        .display()
                ),
            )
        })
    }

    fn etc_environment(&self, names: &[&str]) -> Cand {
        let path = self.sysroot.value.join("etc/environment");
        let content = std::fs::read_to_string(&path).ok()?;
        let vars = crate::azure::proxy::parse_etc_environment(&content);
        names.iter().find_map(|n| {
            vars.get(*n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.clone(), format!("{} {n}", path.display())))
        })
    }

    fn file_bool(&self, key: &str, v: Option<bool>) -> Cand {
        self.file(key, &v.map(|b| b.to_string()))
    }

    fn settings(&self) -> Result<Settings, Error> {
        let o = self.opts;
        let f = &self.file;
        let first = |cands: Vec<Cand>| cands.into_iter().flatten().next();

        let subscription_id = first(vec![
            self.flag("subscription_id", &o.subscription_id),
            self.seed(&["SUBSCRIPTION_ID"]),
            self.file("subscription_id", &f.subscription_id),
        ])
        .map(|c| validated(c, "subscription_id", validate_guid))
        .transpose()?;
        let resource_group = first(vec![
            self.flag("resource_group", &o.resource_group),
            self.seed(&["RESOURCE_GROUP"]),
            self.file("resource_group", &f.resource_group),
        ])
        .map(|c| validated(c, "resource_group", validate_resource_group))
        .transpose()?;
        let tenant_id = first(vec![
            self.flag("tenant_id", &o.tenant_id),
            self.seed(&["TENANT_ID"]),
            self.file("tenant_id", &f.tenant_id),
        ])
        .map(|c| validated(c, "tenant_id", validate_guid))
        .transpose()?;
        let location = first(vec![
            self.flag("location", &o.location),
            self.seed(&["LOCATION"]),
            self.file("location", &f.location),
        ])
        .map(|c| validated(c, "location", validate_location))
        .transpose()?;
        let resource_name = first(vec![
            self.flag("resource_name", &o.resource_name),
            self.file("resource_name", &f.resource_name),
        ])
        .map(|c| validated(c, "resource_name", validate_template))
        .transpose()?
        .unwrap_or_else(|| Sourced::new(DEFAULT_RESOURCE_NAME.to_string(), "default"));

        let tags = match (self.flag("tags", &o.tags), &f.tags) {
            (Some((v, src)), _) => match parse_tags(&v) {
                Ok(t) => Sourced::new(t, src),
                Err(e) => return Err(Error::invalid("tags", v, src, e)),
            },
            (None, Some(t)) => {
                let src = self.file("tags", &Some(String::new())).unwrap().1;
                for (k, v) in t {
                    validate_tag(k, v)
                        .map_err(|e| Error::invalid("tags", format!("{k}={v}"), &src, e))?;
                }
                Sourced::new(t.clone(), src)
            }
            (None, None) => Sourced::new(BTreeMap::new(), "default"),
        };

        let cloud = match first(vec![
            self.flag("cloud", &o.cloud),
            self.file("cloud", &f.cloud),
        ]) {
            Some((v, src)) => match Cloud::parse(&v) {
                Some(c) => Sourced::new(c, src),
                None => {
                    return Err(Error::invalid(
                        "cloud",
                        v,
                        src,
                        "must be AzureCloud, AzureUSGovernment or AzureChinaCloud",
                    ))
                }
            },
            None => Sourced::new(Cloud::AzureCloud, "default"),
        };

        let private_link_scope = first(vec![
            self.flag("private_link_scope", &o.private_link_scope),
            self.file("private_link_scope", &f.private_link_scope),
        ])
        .map(|c| {
            validated(c, "private_link_scope", |v| {
                validate_resource_id(v, "Microsoft.HybridCompute/privateLinkScopes")
            })
        })
        .transpose()?;
        let gateway_id = first(vec![
            self.flag("gateway_id", &o.gateway_id),
            self.file("gateway_id", &f.gateway_id),
        ])
        .map(|c| {
            validated(c, "gateway_id", |v| {
                validate_resource_id(v, "Microsoft.HybridCompute/gateways")
            })
        })
        .transpose()?;
        let correlation_id = first(vec![
            self.flag("correlation_id", &o.correlation_id),
            self.file("correlation_id", &f.correlation_id),
        ])
        .map(|c| validated(c, "correlation_id", validate_guid))
        .transpose()?;

        let enable_automatic_upgrade = self.bool_setting(
            "enable_automatic_upgrade",
            &o.enable_automatic_upgrade,
            f.enable_automatic_upgrade,
        )?;
        let install_agent =
            self.bool_setting("install_agent", &o.install_agent, f.install_agent)?;
        let reconnect_on_change = self.bool_setting(
            "reconnect_on_change",
            &o.reconnect_on_change,
            f.reconnect_on_change,
        )?;
        let token_on_command_line = self.bool_setting(
            "token_on_command_line",
            &o.token_on_command_line,
            f.token_on_command_line,
        )?;

        let identity = self.identity()?;
        let proxy = self.proxy()?;

        let clone_policy = match first(vec![
            self.flag("clone_policy", &o.clone_policy),
            self.file("clone_policy", &f.clone_policy),
        ]) {
            Some((v, src)) => {
                let p = match v.trim().to_ascii_lowercase().as_str() {
                    "reconnect" => ClonePolicy::Reconnect,
                    "fail" => ClonePolicy::Fail,
                    "ignore" => ClonePolicy::Ignore,
                    _ => {
                        return Err(Error::invalid(
                            "clone_policy",
                            v,
                            src,
                            "must be reconnect, fail or ignore",
                        ))
                    }
                };
                Sourced::new(p, src)
            }
            None => Sourced::new(ClonePolicy::Reconnect, "default"),
        };

        let timeout = match first(vec![
            self.flag("timeout", &o.timeout),
            self.file("timeout", &f.timeout),
        ]) {
            Some((v, src)) => match parse_duration(&v) {
                Ok(d) if !d.is_zero() => Sourced::new(d, src),
                Ok(_) => {
                    return Err(Error::invalid(
                        "timeout",
                        v,
                        src,
                        "must be longer than zero",
                    ))
                }
                Err(e) => return Err(Error::invalid("timeout", v, src, e)),
            },
            None => Sourced::new(DEFAULT_TIMEOUT, "default"),
        };

        let imds_endpoint = self.url_setting(
            "imds_endpoint",
            &o.imds_endpoint,
            &f.imds_endpoint,
            DEFAULT_IMDS_ENDPOINT,
        )?;
        let arm_endpoint = self.url_setting(
            "arm_endpoint",
            &o.arm_endpoint,
            &f.arm_endpoint,
            cloud.value.arm_endpoint(),
        )?;
        let agent_installer_url = self.url_setting(
            "agent_installer_url",
            &o.agent_installer_url,
            &f.agent_installer_url,
            DEFAULT_AGENT_INSTALLER_URL,
        )?;
        let azcmagent = first(vec![
            self.flag("azcmagent", &o.azcmagent),
            self.file("azcmagent", &f.azcmagent),
        ])
        .map(|(v, s)| Sourced::new(v, s));
        let state_dir = first(vec![
            self.flag("state_dir", &o.state_dir),
            self.file("state_dir", &f.state_dir),
        ])
        .map(|(v, s)| Sourced::new(PathBuf::from(v), s))
        .unwrap_or_else(|| Sourced::new(PathBuf::from(DEFAULT_STATE_DIR), "default"));

        let agent = f.agent.as_ref().map(|v| {
            Sourced::new(
                v.clone(),
                self.file("agent", &Some(String::new())).unwrap().1,
            )
        });

        Ok(Settings {
            subscription_id,
            resource_group,
            tenant_id,
            location,
            resource_name,
            tags,
            cloud,
            private_link_scope,
            correlation_id,
            gateway_id,
            enable_automatic_upgrade,
            identity,
            proxy,
            clone_policy,
            reconnect_on_change,
            install_agent,
            timeout,
            token_on_command_line,
            token_source: Sourced::new(TokenSourceKind::Imds, "default"),
            enroll_path: Sourced::new(EnrollPathKind::AgentToken, "default"),
            config_file: self.file_path.clone(),
            imds_endpoint,
            arm_endpoint,
            azcmagent,
            agent_installer_url,
            state_dir,
            sysroot: self.sysroot.clone(),
            agent,
        })
    }

    fn bool_setting(
        &self,
        id: &str,
        flag: &Option<String>,
        file: Option<bool>,
    ) -> Result<Sourced<bool>, Error> {
        match self.flag(id, flag).or_else(|| self.file_bool(id, file)) {
            Some((v, src)) => match parse_bool(&v) {
                Some(b) => Ok(Sourced::new(b, src)),
                None => Err(Error::invalid(id, v, src, "must be true or false")),
            },
            None => Ok(Sourced::new(false, "default")),
        }
    }

    fn url_setting(
        &self,
        id: &str,
        flag: &Option<String>,
        file: &Option<String>,
        default: &str,
    ) -> Result<Sourced<String>, Error> {
        match self.flag(id, flag).or_else(|| self.file(id, file)) {
            Some((v, src)) => {
                if crate::azure::proxy::split_url(&v).is_none() {
                    return Err(Error::invalid(
                        id,
                        v,
                        src,
                        "must be an http:// or https:// URL",
                    ));
                }
                Ok(Sourced::new(v.trim_end_matches('/').to_string(), src))
            }
            None => Ok(Sourced::new(
                default.trim_end_matches('/').to_string(),
                "default",
            )),
        }
    }

    fn identity(&self) -> Result<Sourced<Identity>, Error> {
        let o = self.opts;
        let fi = self.file.identity.as_ref();
        let by_res = self
            .flag("identity_resource_id", &o.identity_resource_id)
            .or_else(|| self.seed(&["UAMI_ID"]))
            .or_else(|| {
                self.file(
                    "identity.resource_id",
                    &fi.and_then(|i| i.resource_id.clone()),
                )
            });
        let by_client = self
            .flag("client_id", &o.client_id)
            .or_else(|| self.seed(&["UAMI_CLIENT_ID"]))
            .or_else(|| self.file("identity.client_id", &fi.and_then(|i| i.client_id.clone())));
        let by_object = self
            .flag("object_id", &o.object_id)
            .or_else(|| self.file("identity.object_id", &fi.and_then(|i| i.object_id.clone())));
        let given: Vec<&(String, String)> = [&by_res, &by_client, &by_object]
            .into_iter()
            .flatten()
            .collect();
        if given.len() > 1 {
            let list: Vec<String> = given
                .iter()
                .map(|(v, s)| format!("{v:?} from {s}"))
                .collect();
            return Err(Error::Usage(format!(
                "at most one identity selector may be given, but got {}; keep the one you mean \
                 (resource id, client id or object id) and remove the others",
                list.join(" and ")
            )));
        }
        if let Some((v, s)) = by_res {
            validate_resource_id(&v, "Microsoft.ManagedIdentity/userAssignedIdentities")
                .map_err(|e| Error::invalid("identity_resource_id", &v, &s, e))?;
            return Ok(Sourced::new(Identity::ResourceId(v.trim().to_string()), s));
        }
        if let Some((v, s)) = by_client {
            validate_guid(&v).map_err(|e| Error::invalid("client_id", &v, &s, e))?;
            return Ok(Sourced::new(
                Identity::ClientId(v.trim().to_ascii_lowercase()),
                s,
            ));
        }
        if let Some((v, s)) = by_object {
            validate_guid(&v).map_err(|e| Error::invalid("object_id", &v, &s, e))?;
            return Ok(Sourced::new(
                Identity::ObjectId(v.trim().to_ascii_lowercase()),
                s,
            ));
        }
        Ok(Sourced::new(Identity::SystemAssigned, "default"))
    }

    fn proxy(&self) -> Result<ProxyConfig, Error> {
        let o = self.opts;
        let explicit = self.flag("proxy", &o.proxy);
        let https = explicit
            .clone()
            .or_else(|| self.seed(&["https_proxy", "HTTPS_PROXY"]))
            .or_else(|| self.file("proxy", &self.file.proxy))
            .or_else(|| self.etc_environment(&["https_proxy", "HTTPS_PROXY"]));
        // curl reads http_proxy only in lower case (CONTRACT §3). An explicit --proxy covers both.
        let http = explicit
            .or_else(|| self.seed(&["http_proxy"]))
            .or_else(|| self.file("proxy", &self.file.proxy))
            .or_else(|| self.etc_environment(&["http_proxy"]));
        let no_proxy = self
            .flag("no_proxy", &o.no_proxy)
            .or_else(|| self.seed(&["no_proxy", "NO_PROXY"]))
            .or_else(|| self.file("no_proxy", &self.file.no_proxy))
            .or_else(|| self.etc_environment(&["no_proxy", "NO_PROXY"]));
        let parse = |c: Option<(String, String)>| -> Result<Option<(ProxyUrl, String)>, Error> {
            match c {
                None => Ok(None),
                Some((v, s)) => match ProxyUrl::parse(&v) {
                    Ok(u) => Ok(Some((u, s))),
                    // Never echo the value: it may hold a password.
                    Err(e) => Err(Error::invalid("proxy", redact_userinfo(&v), s, e)),
                },
            }
        };
        Ok(ProxyConfig {
            https: parse(https)?,
            http: parse(http)?,
            no_proxy,
        })
    }
}

fn load_config_file(
    opts: &Opts,
    sources: &Sources,
) -> Result<(FileConfig, Option<PathBuf>), Error> {
    let (path, explicit) = match &opts.config {
        Some(p) if p.is_empty() => return Ok((FileConfig::default(), None)),
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok((FileConfig::default(), None))
        }
        Err(e) => {
            return Err(Error::invalid(
                "config",
                path.display().to_string(),
                sources.describe("config"),
                format!("cannot read the config file: {e}"),
            ))
        }
    };
    let file: FileConfig = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            "config",
            path.display().to_string(),
            if explicit {
                sources.describe("config")
            } else {
                "default".into()
            },
            format!("not a valid arc-enroll config file: {e}"),
        )
    })?;
    Ok((file, Some(path)))
}

fn validated(
    (v, src): (String, String),
    name: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Sourced<String>, Error> {
    match check(&v) {
        Ok(()) => Ok(Sourced::new(normalize(name, &v), src)),
        Err(e) => Err(Error::invalid(name, v, src, e)),
    }
}

fn normalize(name: &str, v: &str) -> String {
    let v = v.trim();
    match name {
        "subscription_id" | "tenant_id" | "correlation_id" => v.to_ascii_lowercase(),
        "location" => v.to_ascii_lowercase().replace(' ', ""),
        _ => v.to_string(),
    }
}

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

pub fn validate_guid(s: &str) -> Result<(), String> {
    let s = s.trim();
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err("must be a GUID like 00000000-0000-0000-0000-000000000000".into())
    }
}

fn validate_resource_group(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 90
        && s.chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
        && !s.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err("a resource group name has 1-90 letters, digits, '-', '_', '.', '(' or ')' and does not end with '.'".into())
    }
}

fn validate_location(s: &str) -> Result<(), String> {
    let n = s.trim().to_ascii_lowercase().replace(' ', "");
    let ok = (2..=40).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err("must be an Azure region name such as westeurope or eastus2 (`az account list-locations -o table`)".into())
    }
}

/// `/subscriptions/<guid>/resourceGroups/<rg>/providers/<Namespace>/<type>/<name>`, checked
/// case-insensitively (ARM casing is inconsistent, FACTS §6).
pub fn validate_resource_id(s: &str, provider_type: &str) -> Result<(), String> {
    let want =
        format!("/subscriptions/<guid>/resourceGroups/<group>/providers/{provider_type}/<name>");
    let parts: Vec<&str> = s.trim().trim_end_matches('/').split('/').collect();
    let pt: Vec<&str> = provider_type.split('/').collect();
    let ok = parts.len() == 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && validate_guid(parts[2]).is_ok()
        && parts[3].eq_ignore_ascii_case("resourcegroups")
        && validate_resource_group(parts[4]).is_ok()
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case(pt[0])
        && parts[7].eq_ignore_ascii_case(pt[1])
        && !parts[8].is_empty();
    if ok {
        Ok(())
    } else {
        Err(format!("must be a resource id of the form {want}"))
    }
}

/// The parts of an ARM resource id: (subscription, resource group, provider namespace/type, name).
pub fn parse_resource_id(s: &str) -> Option<(String, String, String, String)> {
    let parts: Vec<&str> = s.trim().trim_end_matches('/').split('/').collect();
    if parts.len() >= 9
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourcegroups")
        && parts[5].eq_ignore_ascii_case("providers")
    {
        Some((
            parts[2].to_ascii_lowercase(),
            parts[4].to_string(),
            format!("{}/{}", parts[6], parts[7]),
            parts[8].to_string(),
        ))
    } else {
        None
    }
}

const TEMPLATE_FIELDS: &[&str] = &["hostname", "vm_uuid", "vm_uuid8", "machine_id8"];

fn validate_template(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return Err("has a '{' without '}'".into());
        };
        let field = &rest[i + 1..i + j];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "has unknown field {{{field}}}; the fields are {{hostname}}, {{vm_uuid}}, {{vm_uuid8}} and {{machine_id8}}"
            ));
        }
        rest = &rest[i + j + 1..];
    }
    if rest.contains('}') {
        return Err("has a '}' without '{'".into());
    }
    if s.trim().is_empty() {
        return Err("is empty".into());
    }
    Ok(())
}

/// What the resource-name template's fields are on this machine.
#[derive(Clone, Debug, Default)]
pub struct MachineFacts {
    pub hostname: Option<String>,
    pub product_uuid: Option<String>,
    pub machine_id: Option<String>,
}

/// Read the hostname under `sysroot`: `/etc/hostname`, else the kernel's (only when sysroot is /).
pub fn read_hostname(sysroot: &Path) -> Option<String> {
    let from = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    from(sysroot.join("etc/hostname"))
        .or_else(|| {
            (sysroot == Path::new("/"))
                .then(|| from(PathBuf::from("/proc/sys/kernel/hostname")))
                .flatten()
        })
        // Arc resource names cannot hold dots; use the short host name.
        .map(|h| h.split('.').next().unwrap_or(&h).to_string())
}

/// Render the resource-name template and check the result is a valid Arc machine name
/// (letters, digits, '-', '_'; not ending in '-' or '_'; FACTS §1.5 AZCM0102).
pub fn render_resource_name(
    template: &Sourced<String>,
    facts: &MachineFacts,
) -> Result<String, Error> {
    let need = |v: &Option<String>, what: &str| -> Result<String, Error> {
        v.clone().ok_or_else(|| {
            Error::invalid(
                "resource_name",
                &template.value,
                &template.source,
                format!(
                    "needs {what}, which this machine does not have; use another template field"
                ),
            )
        })
    };
    let mut out = template.value.clone();
    if out.contains("{hostname}") {
        out = out.replace("{hostname}", &need(&facts.hostname, "a hostname")?);
    }
    if out.contains("{vm_uuid8}") {
        let u = need(&facts.product_uuid, "/sys/class/dmi/id/product_uuid")?;
        out = out.replace("{vm_uuid8}", &u.chars().take(8).collect::<String>());
    }
    if out.contains("{vm_uuid}") {
        out = out.replace(
            "{vm_uuid}",
            &need(&facts.product_uuid, "/sys/class/dmi/id/product_uuid")?,
        );
    }
    if out.contains("{machine_id8}") {
        let m = need(&facts.machine_id, "/etc/machine-id")?;
        out = out.replace("{machine_id8}", &m.chars().take(8).collect::<String>());
    }
    let ok = !out.is_empty()
        && out.len() <= 54
        && out
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !out.ends_with(['-', '_']);
    if !ok {
        return Err(Error::invalid(
            "resource_name",
            &out,
            &template.source,
            "an Arc machine name has 1-54 letters, digits, '-' or '_' and does not end with '-' or '_'; \
             set --resource-name",
        ));
    }
    Ok(out)
}

/// Parse `K=V,K2='v w',K3="x,y"` (the agent's --tags form, FACTS §1.2).
pub fn parse_tags(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key = read_tag_part(&mut chars, '=')?;
        match chars.next() {
            Some('=') => {}
            _ => {
                return Err(format!(
                    "tag {:?} has no '=': write tags as K=V,K2='v w'",
                    key.trim()
                ))
            }
        }
        let value = read_tag_part(&mut chars, ',')?;
        let (k, v) = (key.trim().to_string(), value.trim().to_string());
        validate_tag(&k, &v)?;
        if tags.insert(k.clone(), v).is_some() {
            return Err(format!("tag {k:?} is given twice"));
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(format!("unexpected {c:?} after tag {k:?}")),
        }
    }
    Ok(tags)
}

fn read_tag_part(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    stop: char,
) -> Result<String, String> {
    let mut out = String::new();
    while let Some(&c) = chars.peek() {
        if c == stop || (stop == '=' && c == ',') {
            break;
        }
        chars.next();
        if c == '\'' || c == '"' {
            let mut closed = false;
            for q in chars.by_ref() {
                if q == c {
                    closed = true;
                    break;
                }
                out.push(q);
            }
            if !closed {
                return Err(format!("unclosed {c} quote in tags"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn validate_tag(k: &str, v: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("a tag has an empty name".into());
    }
    if k.len() > 512 || v.len() > 256 {
        return Err(format!(
            "tag {k:?} is too long (name ≤ 512, value ≤ 256 characters)"
        ));
    }
    if k.contains(['<', '>', '%', '&', '\\', '?', '/']) {
        return Err(format!("tag name {k:?} may not contain < > % & \\ ? /"));
    }
    Ok(())
}

/// `http://user:pass@host` -> `http://user:***@host`, for error messages about unparsable URLs.
pub fn redact_userinfo(s: &str) -> String {
    let (scheme, rest) = match s.find("://") {
        Some(i) => (&s[..i + 3], &s[i + 3..]),
        None => ("", s),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}{hidden}{}", &rest[at..])
        }
        None => s.to_string(),
    }
}

impl Settings {
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
            crate::duration::human(self.timeout.value),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Opts {
        Opts {
            config: Some(String::new()),
            sysroot: Some("/nonexistent-sysroot".into()),
            ..Default::default()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const G1: &str = "11111111-1111-1111-1111-111111111111";
    const G2: &str = "22222222-2222-2222-2222-222222222222";

    #[test]
    fn flag_beats_seed_env_beats_default() {
        let mut o = opts();
        let e = env(&[("SUBSCRIPTION_ID", G2), ("LOCATION", "westeurope")]);
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert_eq!(s.subscription_id.as_ref().unwrap().value, G2);
        assert!(s
            .subscription_id
            .unwrap()
            .source
            .contains("SUBSCRIPTION_ID"));
        o.subscription_id = Some(G1.into());
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert_eq!(s.subscription_id.as_ref().unwrap().value, G1);
        assert_eq!(s.subscription_id.unwrap().source, "flag --subscription-id");
        assert_eq!(s.cloud.value, Cloud::AzureCloud);
        assert_eq!(s.cloud.source, "default");
        assert_eq!(s.timeout.value, DEFAULT_TIMEOUT);
    }

    #[test]
    fn arc_enroll_env_source_is_named() {
        let mut o = opts();
        o.tenant_id = Some("bad".into());
        let sources = Sources {
            from_env: vec!["tenant_id".into()],
        };
        let e = resolve(&o, &sources, &Env::new()).unwrap_err().to_string();
        assert!(e.contains("ARC_ENROLL_TENANT_ID"), "{e}");
        assert!(e.contains("\"bad\""), "{e}");
    }

    #[test]
    fn config_file_is_below_env_and_unknown_keys_fail() {
        let dir = std::env::temp_dir().join(format!("arc-enroll-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        std::fs::write(&p, format!(r#"{{"subscription_id":"{G1}","location":"eastus","identity":{{"client_id":"{G2}"}}}}"#)).unwrap();
        let mut o = opts();
        o.config = Some(p.display().to_string());
        let s = resolve(&o, &Sources::default(), &env(&[("LOCATION", "westus2")])).unwrap();
        assert_eq!(s.subscription_id.unwrap().value, G1);
        assert_eq!(s.location.unwrap().value, "westus2");
        assert_eq!(s.identity.value, Identity::ClientId(G2.into()));
        assert!(s.identity.source.contains("identity.client_id"));

        std::fs::write(&p, r#"{"subscription":"x"}"#).unwrap();
        let e = resolve(&o, &Sources::default(), &Env::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("unknown field `subscription`"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn every_bad_value_is_rejected_with_exit_2() {
        type Set = fn(&mut Opts);
        let cases: Vec<(&str, Set)> = vec![
            ("subscription_id", |o| {
                o.subscription_id = Some("not-a-guid".into())
            }),
            ("tenant_id", |o| o.tenant_id = Some("1234".into())),
            ("client_id", |o| o.client_id = Some("x".into())),
            ("object_id", |o| o.object_id = Some("x".into())),
            ("identity_resource_id", |o| {
                o.identity_resource_id = Some("/subscriptions/x".into())
            }),
            ("location", |o| o.location = Some("west-europe!".into())),
            ("resource_group", |o| {
                o.resource_group = Some("bad/rg".into())
            }),
            ("timeout", |o| o.timeout = Some("15x".into())),
            ("timeout", |o| o.timeout = Some("0s".into())),
            ("tags", |o| o.tags = Some("novalue".into())),
            ("tags", |o| o.tags = Some("a='unclosed".into())),
            ("cloud", |o| o.cloud = Some("Mars".into())),
            ("clone_policy", |o| {
                o.clone_policy = Some("sometimes".into())
            }),
            ("proxy", |o| o.proxy = Some("http://user:pw@:99999".into())),
            ("resource_name", |o| o.resource_name = Some("{nope}".into())),
            ("install_agent", |o| o.install_agent = Some("maybe".into())),
            ("imds_endpoint", |o| {
                o.imds_endpoint = Some("169.254.169.254".into())
            }),
            ("private_link_scope", |o| {
                o.private_link_scope = Some("/subscriptions/x/y".into())
            }),
            ("gateway_id", |o| o.gateway_id = Some("gw".into())),
            ("correlation_id", |o| o.correlation_id = Some("abc".into())),
        ];
        for (name, set) in cases {
            let mut o = opts();
            set(&mut o);
            let err = resolve(&o, &Sources::default(), &Env::new()).expect_err(name);
            assert_eq!(err.exit_code(), 2, "{name}: {err}");
            assert!(
                err.to_string().contains(name),
                "{name}: message must name the setting: {err}"
            );
            assert!(
                !err.to_string().contains(":pw@"),
                "{name}: password leaked: {err}"
            );
        }
    }

    #[test]
    fn two_identity_selectors_are_a_usage_error_naming_both_sources() {
        let mut o = opts();
        o.client_id = Some(G1.into());
        let e = env(&[(
            "UAMI_ID",
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id",
        )]);
        let err = resolve(&o, &Sources::default(), &e).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let m = err.to_string();
        assert!(
            m.contains("flag --client-id") && m.contains("UAMI_ID"),
            "{m}"
        );
    }

    #[test]
    fn seed_uami_id_selects_user_assigned_by_resource_id() {
        let id = "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id";
        let s = resolve(&opts(), &Sources::default(), &env(&[("UAMI_ID", id)])).unwrap();
        assert_eq!(s.identity.value, Identity::ResourceId(id.into()));
        assert_eq!(s.identity.value.query_param(), Some(("msi_res_id", id)));
    }

    #[test]
    fn tags_parse_like_the_agent() {
        let t = parse_tags(
            "Datacenter=NY3,Application=SharePoint,Owner='Shared Infrastructure Services'",
        )
        .unwrap();
        assert_eq!(t["Owner"], "Shared Infrastructure Services");
        assert_eq!(t.len(), 3);
        let t = parse_tags(r#"a="x,y",b= c "#).unwrap();
        assert_eq!(t["a"], "x,y");
        assert_eq!(t["b"], "c");
        for bad in ["", "a", "=v", "a=1,a=2", "a='x", "a=b'c"] {
            assert!(parse_tags(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn resource_name_templates() {
        let facts = MachineFacts {
            hostname: Some("web01".into()),
            product_uuid: Some("4c4c4544-0051-3010-8052-b4c04f4e4b32".into()),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        };
        let t = |s: &str| Sourced::new(s.to_string(), "test");
        assert_eq!(
            render_resource_name(&t("{hostname}"), &facts).unwrap(),
            "web01"
        );
        assert_eq!(
            render_resource_name(&t("{hostname}-{vm_uuid8}"), &facts).unwrap(),
            "web01-4c4c4544"
        );
        assert_eq!(
            render_resource_name(&t("vm-{machine_id8}"), &facts).unwrap(),
            "vm-01234567"
        );
        assert!(render_resource_name(&t("bad name"), &facts).is_err());
        assert!(render_resource_name(&t("{hostname}-"), &facts).is_err());
        assert!(render_resource_name(&t("{hostname}"), &MachineFacts::default()).is_err());
    }

    #[test]
    fn guid_and_resource_id_validation() {
        assert!(validate_guid(G1).is_ok());
        assert!(validate_guid("1111111-1111-1111-1111-111111111111").is_err());
        assert!(validate_guid("g1111111-1111-1111-1111-111111111111").is_err());
        let ok = "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/my-rg/providers/microsoft.managedidentity/userassignedidentities/x";
        assert!(
            validate_resource_id(ok, "Microsoft.ManagedIdentity/userAssignedIdentities").is_ok()
        );
        assert!(validate_resource_id(ok, "Microsoft.HybridCompute/gateways").is_err());
        assert_eq!(
            parse_resource_id(ok).unwrap(),
            (
                G1.to_string(),
                "my-rg".into(),
                "microsoft.managedidentity/userassignedidentities".into(),
                "x".into()
            )
        );
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_userinfo("http://u:secret@h:1/"), "http://u:***@h:1/");
        assert_eq!(redact_userinfo("http://h:1"), "http://h:1");
        assert_eq!(redact_userinfo("u:p@h"), "u:***@h");
    }
}
