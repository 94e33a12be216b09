//! Where the machine is enrolled: settings, else derived from the token's claims and IMDS.

use crate::agent::Target;
use crate::azure::http::Http;
use crate::config::{parse_resource_id, render_resource_name, MachineFacts, Settings, Sourced};
use crate::error::Error;
use crate::identity::imds;
use crate::identity::token::Claims;
use crate::retry::Deadline;

/// Fill subscription, group, tenant and location from the token and IMDS where not configured.
pub fn resolve_target(
    settings: &Settings,
    claims: &Claims,
    http: &Http,
    deadline: &Deadline,
    facts: &MachineFacts,
) -> Result<Target, Error> {
    let derived = derive(settings, claims, || {
        imds::instance_metadata(http, &settings.imds_endpoint.value, deadline)
    });
    let need =
        |name: &str, v: Option<Sourced<String>>, how: &str| -> Result<Sourced<String>, Error> {
            v.ok_or_else(|| {
                Error::invalid(
                    name,
                    "",
                    "nowhere",
                    format!(
                        "could not be derived ({how}); set --{} or {}",
                        name.replace('_', "-"),
                        env_name(name)
                    ),
                )
            })
        };
    let sub = need(
        "subscription_id",
        derived.subscription_id,
        "the token has no usable xms_mirid and IMDS has no instance metadata",
    )?;
    let rg = need(
        "resource_group",
        derived.resource_group,
        "the token has no usable xms_mirid and IMDS has no instance metadata",
    )?;
    let tenant = need("tenant_id", derived.tenant_id, "the token has no tid claim")?;
    let location = need(
        "location",
        derived.location,
        "IMDS has no instance metadata here (as on Nexus)",
    )?;
    use crate::config::{validate_guid, validate_location, validate_resource_group};
    type Check = fn(&str) -> Result<(), String>;
    let checks: [(&str, &Sourced<String>, Check); 4] = [
        ("subscription_id", &sub, validate_guid),
        ("resource_group", &rg, validate_resource_group),
        ("tenant_id", &tenant, validate_guid),
        ("location", &location, validate_location),
    ];
    // Derived values are checked exactly like configured ones, before they are logged, reach
    // the agent's argv or the state file: a claim of `--foo bar` must stay a bad value.
    for (name, v, check) in checks {
        check(&v.value).map_err(|e| derived_invalid(name, v, &e))?;
        if v.source.starts_with("derived") || v.source.starts_with("IMDS") {
            log::info!("setting {name} = {} ({})", v.value, v.source);
        }
    }
    let name = render_resource_name(&settings.resource_name, facts)?;
    Ok(Target {
        subscription_id: sub.value,
        resource_group: rg.value,
        tenant_id: tenant.value,
        location: location.value,
        resource_name: name,
        cloud: settings.cloud.value.name().into(),
        tags: settings.tags.value.clone(),
        private_link_scope: settings
            .private_link_scope
            .as_ref()
            .map(|s| s.value.clone()),
        correlation_id: settings.correlation_id.as_ref().map(|s| s.value.clone()),
        gateway_id: settings.gateway_id.as_ref().map(|s| s.value.clone()),
        enable_automatic_upgrade: settings.enable_automatic_upgrade.value,
        use_aws_ec2_hostname: settings.use_aws_ec2_hostname.value,
    })
}

/// A derived value that fails validation: from a token claim, the token is not to be trusted
/// (exit 3); from IMDS metadata or configuration, a setting error (exit 2). The value is escaped.
fn derived_invalid(name: &str, v: &Sourced<String>, reason: &str) -> Error {
    let shown = crate::text::escape_remote(&v.value);
    if v.source.contains("claim") {
        Error::NoToken {
            detail: format!("{name} {} is {shown:?}, which {reason}", v.source),
            advice: format!(
                "set --{} ({}) explicitly, and check that IMDS at the configured endpoint is the \
                 real one",
                name.replace('_', "-"),
                env_name(name)
            ),
        }
    } else {
        Error::invalid(
            name,
            v.value.clone(),
            &v.source,
            format!(
                "{reason}; set --{} ({}) explicitly",
                name.replace('_', "-"),
                env_name(name)
            ),
        )
    }
}

fn env_name(name: &str) -> String {
    format!("ARC_ENROLL_{}", name.to_ascii_uppercase())
}

/// The four derivable settings with their sources.
pub struct Derived {
    pub subscription_id: Option<Sourced<String>>,
    pub resource_group: Option<Sourced<String>>,
    pub tenant_id: Option<Sourced<String>>,
    pub location: Option<Sourced<String>>,
}

/// Derive missing settings: subscription and group from the VM's resource id in the token
/// (`xms_az_rid` for a user-assigned identity, whose `xms_mirid` names the identity, FACTS §6;
/// else `xms_mirid`), tenant from `tid`, location (and what is still missing) from IMDS metadata.
pub fn derive(
    settings: &Settings,
    claims: &Claims,
    metadata: impl FnOnce() -> Option<imds::Compute>,
) -> Derived {
    let mut sub = settings.subscription_id.clone();
    let mut rg = settings.resource_group.clone();
    let mut tenant = settings.tenant_id.clone();
    let mut location = settings.location.clone();
    // A federated token's xms_mirid names the identity, not this machine, and there is no IMDS
    // outside Azure: nothing is derived but the tenant (connect requires the rest, exit 2).
    if settings.token_source.value.is_federated() {
        if tenant.is_none() {
            tenant = claims.tid.clone().map(|t| {
                Sourced::new(t.to_ascii_lowercase(), "derived from the token's tid claim")
            });
        }
        return Derived {
            subscription_id: sub,
            resource_group: rg,
            tenant_id: tenant,
            location,
        };
    }
    let vm_id = claims
        .xms_az_rid
        .as_deref()
        .map(|v| (v, "xms_az_rid"))
        .or_else(|| claims.xms_mirid.as_deref().map(|v| (v, "xms_mirid")));
    if let Some((id, claim)) = vm_id {
        if let Some((s, g, _, _)) = parse_resource_id(id) {
            if sub.is_none() {
                sub = Some(Sourced::new(
                    s,
                    format!("derived from the token's {claim} claim"),
                ));
            }
            if rg.is_none() {
                rg = Some(Sourced::new(
                    g,
                    format!("derived from the token's {claim} claim"),
                ));
            }
        }
    }
    if tenant.is_none() {
        tenant = claims
            .tid
            .clone()
            .map(|t| Sourced::new(t.to_ascii_lowercase(), "derived from the token's tid claim"));
    }
    if location.is_none() || sub.is_none() || rg.is_none() {
        if let Some(c) = metadata() {
            let src = "IMDS instance metadata";
            if location.is_none() && !c.location.is_empty() {
                location = Some(Sourced::new(c.location.to_ascii_lowercase(), src));
            }
            if sub.is_none() && !c.subscription_id.is_empty() {
                sub = Some(Sourced::new(c.subscription_id.to_ascii_lowercase(), src));
            }
            if rg.is_none() && !c.resource_group_name.is_empty() {
                rg = Some(Sourced::new(c.resource_group_name.clone(), src));
            }
        }
    }
    Derived {
        subscription_id: sub,
        resource_group: rg,
        tenant_id: tenant,
        location,
    }
}
