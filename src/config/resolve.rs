//! Precedence: each setting from the flag, `ARC_ENROLL_*`, the seed flow's variable, the config
//! file, or its default, validated where it is read (CONTRACT §2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::file::{load_config_file, FileConfig};
use super::template::validate_template;
use super::validate::*;
use super::*;
use crate::azure::proxy::{ProxyConfig, ProxyUrl};
use crate::cli::{Opts, Sources};
use crate::error::Error;
use crate::timefmt::parse_duration;

/// The process environment as a map, so resolution is a pure function in tests.
pub type Env = BTreeMap<String, String>;

/// Variables whose value is not UTF-8 are left out (`std::env::vars` would panic on them): ours
/// (`ARC_ENROLL_*`) were refused earlier by [`crate::cli::non_utf8_setting`]; others are none of
/// our business.
pub fn process_env() -> Env {
    env_from(std::env::vars_os())
}

fn env_from(vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Env {
    vars.filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Resolve and validate all settings. No network; reads the config file and /etc/environment.
pub fn resolve(opts: &Opts, sources: &Sources, env: &Env) -> Result<Settings, Error> {
    let r = Resolver::new(opts, sources, env)?;
    let s = r.settings()?;
    check_free_text(&s)?;
    Ok(s)
}

pub(super) struct Resolver<'a> {
    pub(super) opts: &'a Opts,
    sources: &'a Sources,
    pub(super) env: &'a Env,
    pub(super) file: FileConfig,
    file_path: Option<PathBuf>,
    sysroot: Sourced<PathBuf>,
}

/// Candidate value: (value, source).
pub(super) type Cand = Option<(String, String)>;

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

    pub(super) fn flag(&self, id: &str, v: &Option<String>) -> Cand {
        v.as_ref().map(|v| (v.clone(), self.sources.describe(id)))
    }

    pub(super) fn seed(&self, names: &[&str]) -> Cand {
        names.iter().find_map(|n| {
            self.env
                .get(*n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.clone(), format!("environment {n} (seed flow variable)")))
        })
    }

    pub(super) fn file(&self, key: &str, v: &Option<String>) -> Cand {
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
        let content = crate::fsafe::read_inside(
            &self.sysroot.value,
            Path::new("etc/environment"),
            MAX_SMALL_FILE_BYTES,
        )
        .ok()?;
        let vars = crate::azure::proxy::parse_etc_environment(&content);
        names.iter().find_map(|n| {
            vars.get(*n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.clone(), format!("{} {n}", path.display())))
        })
    }

    pub(super) fn file_bool(&self, key: &str, v: Option<bool>) -> Cand {
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
        let token_source = self.token_source()?;
        let tenant_id = first(vec![
            self.flag("tenant_id", &o.tenant_id),
            self.seed(&["TENANT_ID"]),
            self.azure_sdk_env(token_source.value, "AZURE_TENANT_ID"),
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
                        "must be AzureCloud, AzureUSGovernment, AzureChinaCloud or Azure.Local",
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
        let use_aws_ec2_hostname = self.bool_setting(
            "use_aws_ec2_hostname",
            &o.use_aws_ec2_hostname,
            f.use_aws_ec2_hostname,
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

        let (enroll_path, nexus_vm_id, key_on_command_line) =
            self.enroll_path_settings(&private_link_scope, &gateway_id)?;

        let identity = self.identity_for(token_source.value)?;
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
        if !is_https(&arm_endpoint.value) {
            return Err(Error::invalid(
                "arm_endpoint",
                &arm_endpoint.value,
                &arm_endpoint.source,
                "must be an https:// URL: ARM requests carry the access token, which plain http \
                 would send in clear text (loopback included; ARM is always https)",
            ));
        }
        let allow_insecure_installer = self.bool_setting(
            "allow_insecure_installer",
            &o.allow_insecure_installer,
            f.allow_insecure_installer,
        )?;
        if !is_https(&agent_installer_url.value) && !allow_insecure_installer.value {
            return Err(Error::invalid(
                "agent_installer_url",
                &agent_installer_url.value,
                &agent_installer_url.source,
                "must be an https:// URL: the installer runs as root, and anyone on the path can \
                 change a script fetched over plain http; use https, --agent-package FILE, or \
                 (only on a network you trust) --allow-insecure-installer",
            ));
        }
        let agent_installer_sha256 = first(vec![
            self.flag("agent_installer_sha256", &o.agent_installer_sha256),
            self.file("agent_installer_sha256", &f.agent_installer_sha256),
        ])
        .map(|c| validated(c, "agent_installer_sha256", validate_sha256))
        .transpose()?;
        let agent_package = first(vec![
            self.flag("agent_package", &o.agent_package),
            self.file("agent_package", &f.agent_package),
        ])
        .map(|(v, src)| {
            validate_agent_package(&v)
                .map(|p| Sourced::new(p, src.clone()))
                .map_err(|e| Error::invalid("agent_package", &v, &src, e))
        })
        .transpose()?;
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

        let federation = self.federation(
            token_source.value,
            &cloud,
            &tenant_id,
            &identity,
            &resource_name,
        )?;
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
            use_aws_ec2_hostname,
            identity,
            proxy,
            clone_policy,
            reconnect_on_change,
            install_agent,
            timeout,
            token_on_command_line,
            federation,
            token_source,
            enroll_path,
            nexus_vm_id,
            key_on_command_line,
            config_file: self.file_path.clone(),
            imds_endpoint,
            arm_endpoint,
            azcmagent,
            agent_installer_url,
            agent_installer_sha256,
            allow_insecure_installer,
            agent_package,
            state_dir,
            sysroot: self.sysroot.clone(),
            agent,
        })
    }

    pub(super) fn bool_setting(
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

    pub(super) fn url_setting(
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

    pub(super) fn identity(&self) -> Result<Sourced<Identity>, Error> {
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
        // curl: the scheme-specific variable, else all_proxy, else ALL_PROXY (lower case first),
        // within each place the environment is read from. An explicit --proxy covers both schemes.
        const HTTPS_VARS: &[&str] = &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
        // curl reads http_proxy only in lower case (CONTRACT §3).
        const HTTP_VARS: &[&str] = &["http_proxy", "all_proxy", "ALL_PROXY"];
        let https = explicit
            .clone()
            .or_else(|| self.seed(HTTPS_VARS))
            .or_else(|| self.file("proxy", &self.file.proxy))
            .or_else(|| self.etc_environment(HTTPS_VARS));
        let http = explicit
            .or_else(|| self.seed(HTTP_VARS))
            .or_else(|| self.file("proxy", &self.file.proxy))
            .or_else(|| self.etc_environment(HTTP_VARS));
        let no_proxy = self
            .flag("no_proxy", &o.no_proxy)
            .or_else(|| self.seed(&["no_proxy", "NO_PROXY"]))
            .or_else(|| self.file("no_proxy", &self.file.no_proxy))
            .or_else(|| self.etc_environment(&["no_proxy", "NO_PROXY"]));
        let parse = |c: Option<(String, String)>| -> Result<Option<(ProxyUrl, String)>, Error> {
            match c {
                None => Ok(None),
                Some((v, s)) if v.chars().any(is_control_or_separator) => Err(Error::invalid(
                    "proxy",
                    redact_userinfo(&v),
                    s,
                    "holds a control character or line separator; settings are one line of printable text",
                )),
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

pub(super) fn validated(
    (v, src): (String, String),
    name: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Sourced<String>, Error> {
    match check(&v) {
        Ok(()) => Ok(Sourced::new(normalize(name, &v), src)),
        Err(e) => Err(Error::invalid(name, v, src, e)),
    }
}

pub(super) fn normalize(name: &str, v: &str) -> String {
    let v = v.trim();
    match name {
        "subscription_id" | "tenant_id" | "correlation_id" | "agent_installer_sha256" => {
            v.to_ascii_lowercase()
        }
        "location" => v.to_ascii_lowercase().replace(' ', ""),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::*;
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
    fn tags_the_agent_form_cannot_carry_are_refused() {
        // A quote inside double quotes would reach the agent as `a='it's'`: two tags.
        let e = parse_tags(r#"a="it's",b=c"#).unwrap_err();
        assert!(e.contains("\"a\"") && e.contains("single quote"), "{e}");
        for (k, v) in [
            ("a", "x'y"),
            ("a'b", "x"),
            ("a=b", "x"),
            (" a", "x"),
            ("a", "x "),
            ("a", "x\ny"),
            ("a", "x\u{2028}y"),
            ("a", "x\u{2029}y"),
            ("a", "x\u{85}y"),
            ("a", "x\u{7f}y"),
            ("a\t", "x"),
        ] {
            assert!(validate_tag(k, v).is_err(), "{k:?}={v:?} should be refused");
        }
        for (k, v) in [
            ("a", "x=y"),
            ("a b", "c, d"),
            ("q\"", "\"x\""),
            ("ü", "東京"),
            ("a", ""),
        ] {
            assert!(validate_tag(k, v).is_ok(), "{k:?}={v:?} should be accepted");
        }
    }

    #[test]
    fn control_characters_and_line_separators_are_refused_in_free_text() {
        for bad in [
            "a\nb",
            "a\rb",
            "a\tb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{9b}",
            "a\u{2028}b",
            "a\u{2029}b",
            "\u{0}",
        ] {
            let e = check_text("resource_name", bad, "flag --resource-name").unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2);
            assert!(
                msg.contains("resource_name") && msg.contains("flag --resource-name"),
                "{msg}"
            );
            assert!(!msg.contains(bad), "the value is escaped: {msg}");
        }
        assert!(check_text("x", "plain text, ünïcödé 東京", "s").is_ok());
    }

    #[test]
    fn resource_name_templates() {
        let facts = MachineFacts {
            hostname: Some("web01".into()),
            product_uuid: Some("4c4c4544-0051-3010-8052-b4c04f4e4b32".into()),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            instance_id: None,
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

    #[test]
    fn arm_endpoint_must_be_https_loopback_included() {
        for url in [
            "http://127.0.0.1:9",
            "HTTP://localhost",
            "http://[::1]:8443",
        ] {
            let mut o = opts();
            o.arm_endpoint = Some(url.into());
            let e = resolve(&o, &Sources::default(), &Env::new()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{url}");
            assert!(e.to_string().contains("arm_endpoint"), "{e}");
        }
        let mut o = opts();
        o.arm_endpoint = Some("HTTPS://127.0.0.1:8443/".into());
        assert!(resolve(&o, &Sources::default(), &Env::new()).is_ok());
    }

    #[test]
    fn http_installer_needs_the_explicit_override() {
        let mut o = opts();
        o.agent_installer_url = Some("http://10.0.0.1/install.sh".into());
        let e = resolve(&o, &Sources::default(), &Env::new()).unwrap_err();
        assert!(e.to_string().contains("--allow-insecure-installer"), "{e}");
        o.allow_insecure_installer = Some("false".into());
        assert!(resolve(&o, &Sources::default(), &Env::new()).is_err());
        o.allow_insecure_installer = Some("true".into());
        let s = resolve(&o, &Sources::default(), &Env::new()).unwrap();
        assert!(s.allow_insecure_installer.value);
    }

    #[test]
    fn installer_sha256_is_64_hex_digits_normalized_to_lower_case() {
        let mut o = opts();
        o.agent_installer_sha256 = Some(format!(" {} ", "AB".repeat(32)));
        let s = resolve(&o, &Sources::default(), &Env::new()).unwrap();
        assert_eq!(s.agent_installer_sha256.unwrap().value, "ab".repeat(32));
        for bad in ["", "ab", &"a".repeat(63), &"a".repeat(65), &"z".repeat(64)] {
            o.agent_installer_sha256 = Some(bad.to_string());
            let e = resolve(&o, &Sources::default(), &Env::new()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn agent_package_must_be_an_existing_deb_or_rpm() {
        let dir = std::env::temp_dir().join(format!("arc-enroll-pkg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let deb = dir.join("azcmagent.DEB");
        std::fs::write(&deb, "x").unwrap();
        let txt = dir.join("azcmagent.tgz");
        std::fs::write(&txt, "x").unwrap();
        let mut o = opts();
        o.agent_package = Some(deb.display().to_string());
        let s = resolve(&o, &Sources::default(), &Env::new()).unwrap();
        check_local_files(&s).unwrap();
        assert_eq!(s.agent_package.unwrap().value, deb);
        o.agent_package = Some(txt.display().to_string());
        let e = resolve(&o, &Sources::default(), &Env::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        for bad in [dir.join("missing.rpm"), dir.join("sub.deb")] {
            std::fs::create_dir_all(dir.join("sub.deb")).unwrap();
            o.agent_package = Some(bad.display().to_string());
            let s = resolve(&o, &Sources::default(), &Env::new()).unwrap();
            let e = check_local_files(&s).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{}", bad.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_utf8_values_are_left_out_of_the_env_and_ours_are_named() {
        use crate::cli::non_utf8_setting;
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(b"caf\xe9\x1b".to_vec());
        let vars = vec![
            (OsString::from("LANG_X"), bad()),
            (OsString::from("OK"), OsString::from("1")),
        ];
        let e = env_from(vars.clone().into_iter());
        assert_eq!(e.len(), 1);
        assert!(non_utf8_setting(vars.into_iter()).is_none());
        let vars = vec![(OsString::from("ARC_ENROLL_TAGS"), bad())];
        let err = non_utf8_setting(vars.into_iter()).unwrap();
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(
            msg.contains("ARC_ENROLL_TAGS") && msg.contains("UTF-8"),
            "{msg}"
        );
        assert!(msg.contains("\\xe9") && !msg.contains('\u{1b}'), "{msg}");
    }
}
