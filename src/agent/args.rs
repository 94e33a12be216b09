//! What we ask the agent: the target and `azcmagent connect`'s arguments (pure, FACTS §1.2).

use std::collections::BTreeMap;

use crate::config::Settings;

/// What to connect as: the settings after derivation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    pub subscription_id: String,
    pub resource_group: String,
    pub tenant_id: String,
    pub location: String,
    pub resource_name: String,
    pub cloud: String,
    pub tags: BTreeMap<String, String>,
    pub private_link_scope: Option<String>,
    pub correlation_id: Option<String>,
    pub gateway_id: Option<String>,
    pub enable_automatic_upgrade: bool,
    pub use_aws_ec2_hostname: bool,
}

impl Target {
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.HybridCompute/machines/{}",
            self.subscription_id, self.resource_group, self.resource_name
        )
    }
}

/// How the token is passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    ConfigFile,
    CommandLine,
}

impl TokenMode {
    /// `--token-on-command-line` for agents without `--config`, else the 0600 config file.
    pub fn from_settings(settings: &Settings) -> TokenMode {
        if settings.token_on_command_line.value {
            TokenMode::CommandLine
        } else {
            TokenMode::ConfigFile
        }
    }
}

/// `azcmagent connect` arguments (flag names exactly as FACTS §1.2), without the token.
pub fn connect_args(t: &Target) -> Vec<String> {
    let mut a: Vec<String> = vec!["connect".into()];
    let mut push = |k: &str, v: &str| {
        a.push(k.to_string());
        a.push(v.to_string());
    };
    push("--subscription-id", &t.subscription_id);
    push("--resource-group", &t.resource_group);
    push("--tenant-id", &t.tenant_id);
    push("--location", &t.location);
    push("--resource-name", &t.resource_name);
    push("--cloud", &t.cloud);
    if !t.tags.is_empty() {
        push("--tags", &tags_arg(&t.tags));
    }
    if let Some(v) = &t.private_link_scope {
        push("--private-link-scope", v);
    }
    if let Some(v) = &t.correlation_id {
        push("--correlation-id", v);
    }
    if let Some(v) = &t.gateway_id {
        push("--gateway-id", v);
    }
    if t.enable_automatic_upgrade {
        a.push("--enable-automatic-upgrade".into());
    }
    if t.use_aws_ec2_hostname {
        a.push("--use-aws-ec2-hostname".into());
    }
    a
}

/// `azcmagent connect existing` arguments (FACTS §10 step 6), without the private key. `--cloud`
/// only off the public cloud and `--correlation-id` only when set: both are seen in third-party
/// use, not in the documented command (UNCONFIRMED).
pub fn connect_existing_args(t: &Target, vm_id: &str) -> Vec<String> {
    let mut a: Vec<String> = vec!["connect".into(), "existing".into()];
    let mut push = |k: &str, v: &str| {
        a.push(k.to_string());
        a.push(v.to_string());
    };
    push("--subscription-id", &t.subscription_id);
    push("--resource-group", &t.resource_group);
    push("--resource-name", &t.resource_name);
    push("--tenant-id", &t.tenant_id);
    push("--location", &t.location);
    push("--vmid", vm_id);
    if !t.cloud.is_empty() && !t.cloud.eq_ignore_ascii_case("AzureCloud") {
        push("--cloud", &t.cloud);
    }
    if let Some(v) = &t.correlation_id {
        push("--correlation-id", v);
    }
    a
}

/// `K=V,K2='v w'`: values with spaces, commas or quotes are single-quoted (FACTS §1.2).
pub fn tags_arg(tags: &BTreeMap<String, String>) -> String {
    let q = |s: &str| {
        if s.contains([' ', ',', '=', '"']) {
            format!("'{s}'")
        } else {
            s.to_string()
        }
    };
    tags.iter()
        .map(|(k, v)| format!("{}={}", q(k), q(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            tenant_id: "t".into(),
            location: "westeurope".into(),
            resource_name: "vm1".into(),
            cloud: "AzureCloud".into(),
            ..Default::default()
        }
    }

    #[test]
    fn connect_args_use_the_documented_flag_names() {
        let mut t = target();
        t.tags.insert("Owner".into(), "Shared Infra".into());
        t.tags.insert("env".into(), "prod".into());
        t.correlation_id = Some("c".into());
        t.private_link_scope = Some("pls".into());
        t.gateway_id = Some("gw".into());
        t.enable_automatic_upgrade = true;
        let a = connect_args(&t);
        assert_eq!(
            a,
            [
                "connect",
                "--subscription-id",
                "s",
                "--resource-group",
                "rg",
                "--tenant-id",
                "t",
                "--location",
                "westeurope",
                "--resource-name",
                "vm1",
                "--cloud",
                "AzureCloud",
                "--tags",
                "Owner='Shared Infra',env=prod",
                "--private-link-scope",
                "pls",
                "--correlation-id",
                "c",
                "--gateway-id",
                "gw",
                "--enable-automatic-upgrade"
            ]
        );
        assert!(!a.iter().any(|x| x.contains("access-token")));
    }

    #[test]
    fn connect_existing_args_are_the_documented_ones() {
        let mut t = target();
        t.tags.insert("env".into(), "prod".into());
        let a = connect_existing_args(&t, "v-1");
        assert_eq!(
            a,
            [
                "connect",
                "existing",
                "--subscription-id",
                "s",
                "--resource-group",
                "rg",
                "--resource-name",
                "vm1",
                "--tenant-id",
                "t",
                "--location",
                "westeurope",
                "--vmid",
                "v-1"
            ],
            "tags went into the PUT; no --cloud for AzureCloud; no key"
        );
        t.cloud = "AzureUSGovernment".into();
        t.correlation_id = Some("c".into());
        let a = connect_existing_args(&t, "v-1");
        assert_eq!(
            &a[14..],
            ["--cloud", "AzureUSGovernment", "--correlation-id", "c"]
        );
    }
}
