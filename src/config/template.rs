//! The resource-name template (`{hostname}-{vm_uuid8}`): its fields, checked and rendered.

use std::path::Path;

use crate::error::Error;

use super::{Sourced, MAX_SMALL_FILE_BYTES};

pub(super) const TEMPLATE_FIELDS: &[&str] = &[
    "hostname",
    "vm_uuid",
    "vm_uuid8",
    "machine_id8",
    "instance_id",
];

pub(super) fn validate_template(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return Err("has a '{' without '}'".into());
        };
        let field = &rest[i + 1..i + j];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "has unknown field {{{field}}}; the fields are {{hostname}}, {{vm_uuid}}, {{vm_uuid8}}, {{machine_id8}} and {{instance_id}} (GCP and AWS token sources)"
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
    /// The cloud's instance id, where the token source knows one (AWS `i-...`, GCP numeric id).
    pub instance_id: Option<String>,
}

/// Read the hostname under `sysroot`: `/etc/hostname`, else the kernel's (only when sysroot is /).
pub fn read_hostname(sysroot: &Path) -> Option<String> {
    let from = |root: &Path, rel: &str| {
        crate::fsafe::read_inside(root, Path::new(rel), MAX_SMALL_FILE_BYTES)
            .map_err(|e| log::debug!("cannot read {rel} under {}: {e}", root.display()))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    from(sysroot, "etc/hostname")
        .or_else(|| {
            (sysroot == Path::new("/"))
                .then(|| from(Path::new("/"), "proc/sys/kernel/hostname"))
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
    if out.contains("{instance_id}") {
        let i = need(
            &facts.instance_id,
            "a cloud instance id (--token-source aws or gcp)",
        )?;
        out = out.replace("{instance_id}", &i);
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
