//! Command-line definitions only. Doc comments are the help text. Values stay strings here:
//! `config` validates them, so every error names the setting, the value and where it came from.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Enroll this Linux machine into Azure Arc with its managed identity.
///
/// With no command, `connect` runs, so `runcmd: [arc-enroll]` in cloud-init user-data works.
/// Exit codes: 0 enrolled, 1 bug, 2 bad settings, 3 no token, 4 not authorized, 5 agent problem,
/// 6 name conflict, 7 deadline, 8 check found problems.
#[derive(Debug, Parser)]
#[command(name = "arc-enroll", version = crate::output::VERSION, long_version = crate::output::LONG_VERSION)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub opts: Opts,

    /// Where each option's value came from (command line or environment); filled by `parse`.
    #[arg(skip)]
    pub sources: Sources,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Enroll this machine into Azure Arc (idempotent; the default command)
    Connect,
    /// Preflight: settings, IMDS, token, agent, endpoints through the proxy, Azure permissions
    Check,
    /// What this machine is: state file, agent status, clone verdict
    Status,
    /// Remove the enrollment (deletes the Azure resource unless --local-only), then clear state
    Disconnect {
        /// Keep the Azure resource; only reset the local agent and our state
        #[arg(long)]
        local_only: bool,
    },
    /// Prepare a golden image before capture, so every clone enrolls as itself
    Generalize,
    /// Fetch a token and print its non-secret claims and the settings derived from it
    Token,
    /// Explain how a URL would be reached: direct, or via which proxy, and which rule decided
    Proxy {
        /// The URL to explain, e.g. https://management.azure.com/
        url: String,
    },
    /// Print cloud-init user-data that writes the config and runs arc-enroll
    UserData {
        /// Download the arc-enroll binary from this URL first (else it must be in the image)
        #[arg(long, value_name = "URL")]
        binary_url: Option<String>,
        /// SHA-256 of the binary at --binary-url, checked before it is run
        #[arg(long, value_name = "HEX")]
        binary_sha256: Option<String>,
        /// Print base64, ready for `az networkcloud virtualmachine create --user-data-content`
        #[arg(long)]
        base64: bool,
    },
}

/// Options shared by every command (`global`: they may come before or after the command).
#[derive(Debug, Clone, Default, Args)]
pub struct Opts {
    /// Subscription GUID [default: from the identity's xms_mirid claim or IMDS]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_SUBSCRIPTION_ID",
        value_name = "GUID",
        help_heading = "Target"
    )]
    pub subscription_id: Option<String>,
    /// Resource group [default: from the identity's xms_mirid claim or IMDS]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_RESOURCE_GROUP",
        value_name = "NAME",
        help_heading = "Target"
    )]
    pub resource_group: Option<String>,
    /// Tenant GUID [default: the token's tid claim]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_TENANT_ID",
        value_name = "GUID",
        help_heading = "Target"
    )]
    pub tenant_id: Option<String>,
    /// Azure region, e.g. westeurope [default: IMDS instance metadata]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_LOCATION",
        value_name = "REGION",
        help_heading = "Target"
    )]
    pub location: Option<String>,
    /// Arc resource name or template: {hostname}, {vm_uuid}, {vm_uuid8}, {machine_id8} [default: {hostname}]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_RESOURCE_NAME",
        value_name = "TEMPLATE",
        help_heading = "Target"
    )]
    pub resource_name: Option<String>,
    /// Tags: K=V,K2='v w'
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_TAGS",
        value_name = "K=V,...",
        help_heading = "Target"
    )]
    pub tags: Option<String>,
    /// AzureCloud, AzureUSGovernment, AzureChinaCloud or Azure.Local [default: AzureCloud]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_CLOUD",
        value_name = "CLOUD",
        help_heading = "Target"
    )]
    pub cloud: Option<String>,
    /// Private link scope resource id
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_PRIVATE_LINK_SCOPE",
        value_name = "ID",
        help_heading = "Target"
    )]
    pub private_link_scope: Option<String>,
    /// Correlation GUID passed to the agent (telemetry)
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_CORRELATION_ID",
        value_name = "GUID",
        help_heading = "Target"
    )]
    pub correlation_id: Option<String>,
    /// Arc gateway resource id
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_GATEWAY_ID",
        value_name = "ID",
        help_heading = "Target"
    )]
    pub gateway_id: Option<String>,
    /// Pre-create the machine resource with a one-time RSA key, then `azcmagent connect existing`: the ARM token never reaches the agent
    #[arg(long, global = true, env = "ARC_ENROLL_PRECREATE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Enrollment path")]
    pub precreate: Option<String>,
    /// Nexus: --precreate plus assignRelay of the Nexus VM's traffic to Private Relay
    #[arg(long, global = true, env = "ARC_ENROLL_PRIVATE_RELAY", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Enrollment path")]
    pub private_relay: Option<String>,
    /// The Nexus VM's ARM id [default: the token's xms_az_rid/xms_mirid when it is a Microsoft.NetworkCloud/virtualMachines id]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_NEXUS_VM_ID",
        value_name = "ID",
        help_heading = "Enrollment path"
    )]
    pub nexus_vm_id: Option<String>,
    /// Pass the one-time private key with --private-key instead of a 0600 --config file (agents without --config)
    #[arg(long, global = true, env = "ARC_ENROLL_KEY_ON_COMMAND_LINE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Enrollment path")]
    pub key_on_command_line: Option<String>,
    /// Turn on the agent's automatic upgrade (preview)
    #[arg(long, global = true, env = "ARC_ENROLL_ENABLE_AUTOMATIC_UPGRADE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Target")]
    pub enable_automatic_upgrade: Option<String>,
    /// On AWS, have the agent use the EC2 hostname (agent >= 1.62)
    #[arg(long, global = true, env = "ARC_ENROLL_USE_AWS_EC2_HOSTNAME", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Target")]
    pub use_aws_ec2_hostname: Option<String>,

    /// User-assigned identity by resource id [default: system-assigned]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_IDENTITY_RESOURCE_ID",
        value_name = "ID",
        help_heading = "Identity"
    )]
    pub identity_resource_id: Option<String>,
    /// User-assigned identity by client id
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_CLIENT_ID",
        value_name = "GUID",
        help_heading = "Identity"
    )]
    pub client_id: Option<String>,
    /// User-assigned identity by object id
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_OBJECT_ID",
        value_name = "GUID",
        help_heading = "Identity"
    )]
    pub object_id: Option<String>,
    /// Where the token comes from: imds, or gcp, aws, file, github through workload identity
    /// federation to the user-assigned identity --client-id [default: imds]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_TOKEN_SOURCE",
        value_name = "SOURCE",
        help_heading = "Identity"
    )]
    pub token_source: Option<String>,
    /// The JWT file for --token-source file, re-read before every exchange [env also AZURE_FEDERATED_TOKEN_FILE]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_FEDERATED_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Identity"
    )]
    pub federated_token_file: Option<String>,
    /// Entra authority for federated sources, https only [env also AZURE_AUTHORITY_HOST; default per --cloud]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AUTHORITY_HOST",
        value_name = "URL",
        help_heading = "Identity"
    )]
    pub authority_host: Option<String>,

    /// Proxy for Azure endpoints, http://[user:pass@]host:port [default: https_proxy, /etc/environment]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_PROXY",
        value_name = "URL",
        help_heading = "Network"
    )]
    pub proxy: Option<String>,
    /// Hosts reached directly (curl's NO_PROXY rules) [default: no_proxy, /etc/environment]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_NO_PROXY",
        value_name = "LIST",
        help_heading = "Network"
    )]
    pub no_proxy: Option<String>,

    /// What to do on a clone of an enrolled machine: reconnect, fail or ignore [default: reconnect]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_CLONE_POLICY",
        value_name = "POLICY",
        help_heading = "Behaviour"
    )]
    pub clone_policy: Option<String>,
    /// When enrolled settings differ from the wanted ones: report (default) or reconnect
    #[arg(long, global = true, env = "ARC_ENROLL_RECONNECT_ON_CHANGE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Behaviour")]
    pub reconnect_on_change: Option<String>,
    /// Install azcmagent when missing (after the token is obtained)
    #[arg(long, global = true, env = "ARC_ENROLL_INSTALL_AGENT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Behaviour")]
    pub install_agent: Option<String>,
    /// Overall deadline for the whole run, e.g. 90s, 15m, 1h [default: 15m]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_TIMEOUT",
        value_name = "DURATION",
        help_heading = "Behaviour"
    )]
    pub timeout: Option<String>,
    /// Pass the token with --access-token instead of a 0600 --config file (older agents)
    #[arg(long, global = true, env = "ARC_ENROLL_TOKEN_ON_COMMAND_LINE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Behaviour")]
    pub token_on_command_line: Option<String>,
    /// Settings file [default: /etc/arc-enroll/config.json if it exists]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_CONFIG",
        value_name = "FILE",
        help_heading = "Behaviour"
    )]
    pub config: Option<String>,

    /// IMDS base URL [default: http://169.254.169.254]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_IMDS_ENDPOINT",
        value_name = "URL",
        help_heading = "Endpoints and files"
    )]
    pub imds_endpoint: Option<String>,
    /// GCP metadata server for --token-source gcp, never proxied [default: http://metadata.google.internal]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_GCP_METADATA_ENDPOINT",
        value_name = "URL",
        help_heading = "Endpoints and files"
    )]
    pub gcp_metadata_endpoint: Option<String>,
    /// AWS IMDS for --token-source aws, never proxied [default: http://169.254.169.254]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AWS_IMDS_ENDPOINT",
        value_name = "URL",
        help_heading = "Endpoints and files"
    )]
    pub aws_imds_endpoint: Option<String>,
    /// AWS STS for --token-source aws, https only [default: https://sts.REGION.amazonaws.com]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AWS_STS_ENDPOINT",
        value_name = "URL",
        help_heading = "Endpoints and files"
    )]
    pub aws_sts_endpoint: Option<String>,
    /// ARM base URL [default: from --cloud]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_ARM_ENDPOINT",
        value_name = "URL",
        help_heading = "Endpoints and files"
    )]
    pub arm_endpoint: Option<String>,
    /// azcmagent executable [default: PATH, then /opt/azcmagent/bin/azcmagent]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AZCMAGENT",
        value_name = "PATH",
        help_heading = "Endpoints and files"
    )]
    pub azcmagent: Option<String>,
    /// Agent installer script URL [default: https://aka.ms/azcmagent]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AGENT_INSTALLER_URL",
        value_name = "URL",
        help_heading = "Endpoints and files"
    )]
    pub agent_installer_url: Option<String>,
    /// SHA-256 (hex) the downloaded installer script must have, else it is not run
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AGENT_INSTALLER_SHA256",
        value_name = "HEX",
        help_heading = "Endpoints and files"
    )]
    pub agent_installer_sha256: Option<String>,
    /// Allow an http:// installer URL (the script runs as root; anyone on the path can change it)
    #[arg(long, global = true, env = "ARC_ENROLL_ALLOW_INSECURE_INSTALLER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Endpoints and files")]
    pub allow_insecure_installer: Option<String>,
    /// Install the agent from this local .deb or .rpm with --install-agent (no download)
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_AGENT_PACKAGE",
        value_name = "FILE",
        help_heading = "Endpoints and files"
    )]
    pub agent_package: Option<String>,
    /// State directory [default: /var/lib/arc-enroll]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_STATE_DIR",
        value_name = "DIR",
        help_heading = "Endpoints and files"
    )]
    pub state_dir: Option<String>,
    /// Root under which machine-id, product_uuid and hostname are read [default: /]
    #[arg(
        long,
        global = true,
        env = "ARC_ENROLL_SYSROOT",
        value_name = "DIR",
        help_heading = "Endpoints and files"
    )]
    pub sysroot: Option<String>,

    /// Print the final result as a JSON object on stdout
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,
    /// More log detail (repeatable: -v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Output")]
    pub verbose: u8,
    /// Only warnings and errors in the log
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output"
    )]
    pub quiet: bool,
}

/// Option ids whose value came from the environment rather than the command line.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub from_env: Vec<String>,
}

impl Sources {
    /// "flag --x" or "environment ARC_ENROLL_X", for option `id` (clap's field name).
    pub fn describe(&self, id: &str) -> String {
        if self.from_env.iter().any(|e| e == id) {
            format!("environment ARC_ENROLL_{}", id.to_ascii_uppercase())
        } else {
            format!("flag --{}", id.replace('_', "-"))
        }
    }
}

/// The first `ARC_ENROLL_*` variable whose value is not UTF-8, as a usage error naming it (the
/// value shown escaped, never as raw bytes). Checked before the command line is parsed.
pub fn non_utf8_setting(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Option<crate::error::Error> {
    use std::os::unix::ffi::OsStrExt;
    vars.filter(|(k, v)| k.as_bytes().starts_with(b"ARC_ENROLL_") && v.to_str().is_none())
        .map(|(k, v)| {
            let name = String::from_utf8_lossy(k.as_bytes()).into_owned();
            let shown = v.as_bytes().escape_ascii().to_string();
            crate::error::Error::invalid(
                name.clone(),
                shown,
                format!("environment {}", crate::text::escape_remote(&name)),
                "is not valid UTF-8; set it to plain text (or unset it)",
            )
        })
        .next()
}

/// Parse the process's arguments (exits with clap's usage message and code 2 on bad usage).
pub fn parse() -> Cli {
    // clap would say only "invalid UTF-8 was detected"; name the variable instead.
    if let Some(err) = non_utf8_setting(std::env::vars_os()) {
        eprintln!("arc-enroll: {err}");
        crate::output::set_json(std::env::args_os().any(|a| a == "--json"));
        crate::output::print_failure(&err);
        std::process::exit(err.exit_code().into());
    }
    match try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // Not `e.exit()`: it swallows a failed write, so `arc-enroll --help | head -0` would
            // exit 0. `--help`/`--version` into a broken pipe end like every other output: 141.
            if let Err(err) = e.print() {
                if !e.use_stderr() {
                    crate::output::exit_on_write_error(&err);
                }
            }
            std::process::exit(e.exit_code())
        }
    }
}

pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.sources = sources(&matches);
    Ok(cli)
}

fn sources(m: &ArgMatches) -> Sources {
    let mut from_env = Vec::new();
    let sub = m.subcommand().map(|(_, s)| s);
    for id in m.ids() {
        let id = id.as_str();
        let src = sub
            .and_then(|s| s.try_get_raw(id).ok().flatten().map(|_| s.value_source(id)))
            .flatten()
            .or_else(|| m.value_source(id));
        if src == Some(ValueSource::EnvVariable) {
            from_env.push(id.to_string());
        }
    }
    Sources { from_env }
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_connect_later_and_globals_work_after_the_command() {
        let cli = try_parse_from(["arc-enroll", "connect", "--tenant-id", "x", "-vv"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Connect)));
        assert_eq!(cli.opts.tenant_id.as_deref(), Some("x"));
        assert_eq!(cli.opts.verbose, 2);
        assert_eq!(cli.sources.describe("tenant_id"), "flag --tenant-id");
        let cli = try_parse_from(["arc-enroll"]).unwrap();
        assert!(cli.command.is_none());
    }
}
