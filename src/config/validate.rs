//! Checks and parsers for single values: GUIDs, resource groups, locations, resource ids, tags.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::Error;

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

pub(super) fn validate_resource_group(s: &str) -> Result<(), String> {
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

pub(super) fn validate_location(s: &str) -> Result<(), String> {
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

/// C0 controls (tab and newline included), DEL, C1 controls (U+0085 NEL included) and the Unicode
/// line and paragraph separators U+2028/U+2029: YAML 1.1 (cloud-init), shells and log readers
/// treat several of them as line breaks, so no setting may hold one.
pub fn is_control_or_separator(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
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
