//! Checks and parsers for single values (GUIDs, resource groups, locations, resource ids, tags, the
//! installer pin) and the checks over all resolved settings: free text, local files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::{Identity, Settings, Sourced};
use crate::error::Error;
/// No setting may hold one: YAML 1.1 (cloud-init), shells and log readers treat several of them
/// as line breaks. The same characters `text::escape_remote` escapes.
pub use crate::text::is_control_or_separator;

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

pub(super) fn is_https(url: &str) -> bool {
    url.trim().to_ascii_lowercase().starts_with("https://")
}

/// 64 hex digits (`sha256sum` prints them).
pub(super) fn validate_sha256(s: &str) -> Result<(), String> {
    let s = s.trim();
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("must be a SHA-256 as 64 hex digits (`sha256sum install_linux_azcmagent.sh`)".into())
    }
}

/// An existing regular file named *.deb or *.rpm, made absolute.
pub(super) fn validate_agent_package(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s.trim());
    if super::PackageKind::of(&p).is_none() {
        return Err("must be a .deb or .rpm file (the azcmagent package)".into());
    }
    std::path::absolute(&p).map_err(|e| format!("cannot be made absolute: {e}"))
}

/// The local files a setting names must exist on this machine: `--agent-package`. Checked right
/// after `resolve` by every command that runs here (not by `user-data`, whose settings are for
/// another machine), before any network call.
pub fn check_local_files(s: &Settings) -> Result<(), Error> {
    if let Some(p) = &s.agent_package {
        let bad = match std::fs::metadata(&p.value) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some("is not a regular file".to_string()),
            Err(e) => Some(format!("cannot be read: {e}")),
        };
        if let Some(reason) = bad {
            return Err(Error::invalid(
                "agent_package",
                p.value.display().to_string(),
                &p.source,
                reason,
            ));
        }
    }
    Ok(())
}

/// No setting holds a control character or line separator (they would break the lines of the
/// user-data YAML, the agent's command line, the logs). Values with stricter rules (GUIDs, the
/// location, resource ids) are already checked; this covers the free text.
pub(super) fn check_free_text(s: &Settings) -> Result<(), Error> {
    let strs: [(&str, Option<&Sourced<String>>); 10] = [
        ("subscription_id", s.subscription_id.as_ref()),
        ("resource_group", s.resource_group.as_ref()),
        ("tenant_id", s.tenant_id.as_ref()),
        ("location", s.location.as_ref()),
        ("resource_name", Some(&s.resource_name)),
        ("correlation_id", s.correlation_id.as_ref()),
        ("imds_endpoint", Some(&s.imds_endpoint)),
        ("arm_endpoint", Some(&s.arm_endpoint)),
        ("agent_installer_url", Some(&s.agent_installer_url)),
        ("azcmagent", s.azcmagent.as_ref()),
    ];
    for (name, v) in strs.into_iter() {
        if let Some(v) = v {
            check_text(name, &v.value, &v.source)?;
        }
    }
    for (name, v) in [
        ("private_link_scope", &s.private_link_scope),
        ("gateway_id", &s.gateway_id),
    ] {
        if let Some(v) = v {
            check_text(name, &v.value, &v.source)?;
        }
    }
    for (k, v) in &s.tags.value {
        check_text("tags", &format!("{k}={v}"), &s.tags.source)?;
    }
    for (name, p) in [("state_dir", &s.state_dir), ("sysroot", &s.sysroot)] {
        check_text(name, &p.value.to_string_lossy(), &p.source)?;
    }
    if let Some(p) = &s.config_file {
        check_text("config", &p.to_string_lossy(), "the config file path")?;
    }
    if let Some((n, src)) = &s.proxy.no_proxy {
        check_text("no_proxy", n, src)?;
    }
    if let Identity::ResourceId(v) = &s.identity.value {
        check_text("identity_resource_id", v, &s.identity.source)?;
    }
    if let Some(a) = &s.agent {
        check_json_text("agent", &a.value, &a.source)?;
    }
    Ok(())
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

pub fn validate_resource_group(s: &str) -> Result<(), String> {
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

pub fn validate_location(s: &str) -> Result<(), String> {
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

pub(super) fn read_tag_part(
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

/// A tag the agent's `--tags` form (FACTS §1.2: `K=V,K2='v w'`, single quotes only, no escape)
/// can carry unchanged: no `'` anywhere (it would end the quoting and start another tag), no `=`
/// in a name (the first `=` ends the name), no surrounding blanks (the agent trims them) and no
/// control characters or line separators.
pub fn validate_tag(k: &str, v: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("a tag has an empty name".into());
    }
    for (what, s) in [("name", k), ("value", v)] {
        if let Some(c) = s.chars().find(|&c| is_control_or_separator(c)) {
            return Err(format!(
                "tag {k:?}: its {what} holds the control character or line separator {c:?}; tags are one line of text"
            ));
        }
        if s.contains('\'') {
            return Err(format!(
                "tag {k:?}: its {what} holds a single quote, which the agent's --tags form (K=V,K2='v w') cannot carry: \
                 it would end the quoting and start another tag; remove the quote"
            ));
        }
        if s.trim() != s {
            return Err(format!(
                "tag {k:?}: its {what} starts or ends with a blank, which the agent trims; remove it"
            ));
        }
    }
    if k.contains('=') {
        return Err(format!(
            "tag name {k:?} holds '=', which the agent's --tags form reads as the end of the name"
        ));
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

/// Refuse a free-text setting holding a control character or line separator (exit 2), naming the
/// setting, the value (escaped by the error's `{:?}`) and where it came from.
pub fn check_text(setting: &str, value: &str, source: &str) -> Result<(), Error> {
    match value.chars().find(|&c| is_control_or_separator(c)) {
        None => Ok(()),
        Some(c) => Err(Error::invalid(
            setting,
            value,
            source,
            format!(
                "holds the control character or line separator {c:?}; settings are one line of printable text"
            ),
        )),
    }
}

/// Every string inside a JSON value (the config file's `agent` section).
pub(super) fn check_json_text(setting: &str, v: &Value, source: &str) -> Result<(), Error> {
    match v {
        Value::String(s) => check_text(setting, s, source),
        Value::Array(a) => a
            .iter()
            .try_for_each(|x| check_json_text(setting, x, source)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            let name = format!("{setting}.{k}");
            check_text(&name, k, source)?;
            check_json_text(&name, x, source)
        }),
        _ => Ok(()),
    }
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
