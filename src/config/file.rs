//! The config file (`/etc/arc-enroll/config.json`, `--config`): its shape, unknown keys refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{DEFAULT_CONFIG_FILE, MAX_CONFIG_BYTES};
use crate::cli::{Opts, Sources};
use crate::error::Error;

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) subscription_id: Option<String>,
    pub(super) resource_group: Option<String>,
    pub(super) tenant_id: Option<String>,
    pub(super) location: Option<String>,
    pub(super) resource_name: Option<String>,
    pub(super) tags: Option<BTreeMap<String, String>>,
    pub(super) cloud: Option<String>,
    pub(super) private_link_scope: Option<String>,
    pub(super) correlation_id: Option<String>,
    pub(super) gateway_id: Option<String>,
    pub(super) enable_automatic_upgrade: Option<bool>,
    pub(super) use_aws_ec2_hostname: Option<bool>,
    pub(super) identity: Option<FileIdentity>,
    pub(super) proxy: Option<String>,
    pub(super) no_proxy: Option<String>,
    pub(super) clone_policy: Option<String>,
    pub(super) reconnect_on_change: Option<bool>,
    pub(super) install_agent: Option<bool>,
    pub(super) timeout: Option<String>,
    pub(super) token_on_command_line: Option<bool>,
    pub(super) token_source: Option<String>,
    pub(super) federated_token_file: Option<String>,
    pub(super) authority_host: Option<String>,
    pub(super) gcp_metadata_endpoint: Option<String>,
    pub(super) aws_imds_endpoint: Option<String>,
    pub(super) aws_sts_endpoint: Option<String>,
    pub(super) precreate: Option<bool>,
    pub(super) private_relay: Option<bool>,
    pub(super) nexus_vm_id: Option<String>,
    pub(super) key_on_command_line: Option<bool>,
    pub(super) imds_endpoint: Option<String>,
    pub(super) arm_endpoint: Option<String>,
    pub(super) azcmagent: Option<String>,
    pub(super) agent_installer_url: Option<String>,
    pub(super) agent_installer_sha256: Option<String>,
    pub(super) allow_insecure_installer: Option<bool>,
    pub(super) agent_package: Option<String>,
    pub(super) state_dir: Option<String>,
    pub(super) agent: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileIdentity {
    pub(super) resource_id: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) object_id: Option<String>,
}

pub(super) fn load_config_file(
    opts: &Opts,
    sources: &Sources,
) -> Result<(FileConfig, Option<PathBuf>), Error> {
    let (path, explicit) = match &opts.config {
        Some(p) if p.is_empty() => return Ok((FileConfig::default(), None)),
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let source = || {
        if explicit {
            sources.describe("config")
        } else {
            "default".into()
        }
    };
    // Regular files only, opened without waiting (a FIFO would block until a writer comes, past
    // every deadline and signal), and bounded.
    let text = match crate::fsafe::read_regular(&path, MAX_CONFIG_BYTES, true) {
        Ok(t) => String::from_utf8(t).map_err(|_| {
            Error::invalid(
                "config",
                path.display().to_string(),
                source(),
                "the config file is not UTF-8 text",
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok((FileConfig::default(), None))
        }
        Err(e) => {
            return Err(Error::invalid(
                "config",
                path.display().to_string(),
                source(),
                format!("cannot read the config file: {e}"),
            ))
        }
    };
    // It may hold a proxy password and decides what runs as root: nobody but root (or us) may be
    // able to change it (sshd StrictModes).
    if let Err(why) = crate::fsafe::untrusted(&path) {
        return Err(Error::invalid(
            "config",
            path.display().to_string(),
            source(),
            format!(
                "refusing a config file another user could change: {why}; \
                 make it and its directories owned by root and not group- or world-writable"
            ),
        ));
    }
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
