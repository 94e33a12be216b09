//! The agent's local settings (`azcmagent config`, FACTS §2.3) as declarative configuration: the
//! config file's `agent` object is validated before any network call, applied before the first
//! `azcmagent connect` (each property read, set only when it differs), verified after it, shown
//! beside the agent's current values in `status`, and repaired on a re-run of `connect` on an
//! enrolled machine (without reconnecting). Applying them lives in `reconcile`.
//!
//! Why before connect: a freshly enrolled machine would otherwise accept whatever extension Azure
//! pushes in the window between its first heartbeat and a hand-run `azcmagent config set`.

use serde_json::{json, Value};

use crate::agent::Agent;
use crate::config::Settings;
use crate::error::Error;
use crate::retry::Deadline;

/// What a property holds and how its values are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Publisher/Type` extension names.
    Extensions,
    Bool,
    /// `config.mode`: `full` or `monitor`.
    Mode,
    /// `incomingconnections.ports`: port numbers 1–65535.
    Ports,
    /// `proxy.bypass`: service names (FACTS §2.3), not hosts.
    Bypass,
}

/// The properties arc-enroll manages, in the order they are applied: `config.mode` first,
/// because a mode is a Microsoft-maintained preset of the others (allowlist, guest configuration);
/// explicit settings after it then win.
pub const PROPERTIES: &[(&str, Kind)] = &[
    ("config.mode", Kind::Mode),
    ("extensions.enabled", Kind::Bool),
    ("extensions.allowlist", Kind::Extensions),
    ("extensions.blocklist", Kind::Extensions),
    ("guestconfiguration.enabled", Kind::Bool),
    ("incomingconnections.ports", Kind::Ports),
    ("proxy.bypass", Kind::Bypass),
];

/// The `agent` key that lists settings an older agent may lack.
pub const OPTIONAL_KEY: &str = "optional";

/// `proxy.bypass` service names, spelled as the agent documents them (FACTS §2.3).
pub const BYPASS_SERVICES: &[&str] = &["AAD", "ARM", "Arc", "AMA", "ArcData"];

pub const MODES: &[&str] = &["full", "monitor"];

/// A setting's value, normalised so that the wanted and the agent's values compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Bool(bool),
    Text(String),
    List(Vec<String>),
}

impl Val {
    /// As the log and `status` show it: `[a, b]`, `true`, `monitor`.
    pub fn display(&self) -> String {
        match self {
            Val::Bool(b) => b.to_string(),
            Val::Text(s) => s.clone(),
            Val::List(l) => format!("[{}]", l.join(", ")),
        }
    }

    fn to_json(&self, kind: Kind) -> Value {
        match (self, kind) {
            (Val::Bool(b), _) => json!(b),
            (Val::Text(s), _) => json!(s),
            (Val::List(l), Kind::Ports) => Value::Array(
                l.iter()
                    .map(|p| p.parse::<u16>().map(|n| json!(n)).unwrap_or(json!(p)))
                    .collect(),
            ),
            (Val::List(l), _) => json!(l),
        }
    }

    /// The value `azcmagent config set PROP VALUE` takes: lists comma-separated (FACTS §2.3,
    /// `config set proxy.bypass "ARM,Arc"`). `None` for an empty list: that is `config clear`.
    pub fn set_arg(&self) -> Option<String> {
        match self {
            Val::Bool(b) => Some(b.to_string()),
            Val::Text(s) => Some(s.clone()),
            Val::List(l) if l.is_empty() => None,
            Val::List(l) => Some(l.join(",")),
        }
    }
}

/// One wanted setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    pub value: Val,
    /// Listed in `agent.optional`: an agent that does not know it is a warning, not an error.
    pub optional: bool,
}

/// The validated `agent` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub settings: Vec<Setting>,
    /// Where it came from ("config file /etc/arc-enroll/config.json: agent").
    pub source: String,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }
}

/// Validate the config file's `agent` object (no I/O). Called by `commands::run` right after the
/// settings are resolved, so a bad value fails with exit 2 before any network call.
pub fn validate(settings: &Settings) -> Result<Wanted, Error> {
    match &settings.agent {
        None => Ok(Wanted::default()),
        Some(a) => validate_value(&a.value, &a.source),
    }
}

/// Validate an `agent` object; errors name `agent.<key>`, the value and `source`.
pub fn validate_value(v: &Value, source: &str) -> Result<Wanted, Error> {
    let obj = v.as_object().ok_or_else(|| {
        Error::invalid(
            "agent",
            v.to_string(),
            source,
            "must be an object of azcmagent config properties, e.g. {\"config.mode\": \"monitor\"}",
        )
    })?;
    let bad = |key: &str, value: &Value, reason: String| {
        Error::invalid(format!("agent.{key}"), value.to_string(), source, reason)
    };
    let mut optional: Vec<&'static str> = Vec::new();
    if let Some(o) = obj.get(OPTIONAL_KEY) {
        let items = o.as_array().ok_or_else(|| {
            bad(
                OPTIONAL_KEY,
                o,
                "must be a list of agent setting names, e.g. [\"proxy.bypass\"]".into(),
            )
        })?;
        for item in items {
            let known = item
                .as_str()
                .and_then(|s| PROPERTIES.iter().find(|(k, _)| *k == s))
                .map(|(k, _)| *k);
            match known {
                Some(k) => optional.push(k),
                None => {
                    return Err(bad(
                        OPTIONAL_KEY,
                        item,
                        format!("names no agent setting; known: {}", known_keys()),
                    ))
                }
            }
        }
    }
    for key in obj.keys() {
        if key != OPTIONAL_KEY && !PROPERTIES.iter().any(|(k, _)| k == key) {
            return Err(bad(
                key,
                &obj[key],
                format!(
                    "unknown agent setting; known: {}, and {OPTIONAL_KEY}",
                    known_keys()
                ),
            ));
        }
    }
    let mut settings = Vec::new();
    for (key, kind) in PROPERTIES {
        let Some(raw) = obj.get(*key) else { continue };
        let value = parse_wanted(*kind, raw).map_err(|reason| bad(key, raw, reason))?;
        settings.push(Setting {
            key,
            kind: *kind,
            value,
            optional: optional.contains(key),
        });
    }
    // An extension both allowed and blocked is a contradiction the agent would resolve silently.
    let list = |k: &str| -> Vec<String> {
        settings
            .iter()
            .find(|s| s.key == k)
            .and_then(|s| match &s.value {
                Val::List(l) => Some(l.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let blocked = list("extensions.blocklist");
    if let Some(both) = list("extensions.allowlist")
        .into_iter()
        .find(|a| blocked.iter().any(|b| b.eq_ignore_ascii_case(a)))
    {
        return Err(bad(
            "extensions.blocklist",
            &obj["extensions.blocklist"],
            format!("{both} is also in agent.extensions.allowlist; an extension is either allowed or blocked"),
        ));
    }
    Ok(Wanted {
        settings,
        source: source.to_string(),
    })
}

fn known_keys() -> String {
    PROPERTIES
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A wanted value from the config file, checked and normalised; Err is the reason.
fn parse_wanted(kind: Kind, v: &Value) -> Result<Val, String> {
    match kind {
        Kind::Bool => v
            .as_bool()
            .map(Val::Bool)
            .ok_or_else(|| "must be true or false (a JSON boolean)".into()),
        Kind::Mode => v
            .as_str()
            .and_then(|s| MODES.iter().find(|m| m.eq_ignore_ascii_case(s.trim())))
            .map(|m| Val::Text(m.to_string()))
            .ok_or_else(|| format!("must be one of: {}", MODES.join(", "))),
        Kind::Extensions | Kind::Ports | Kind::Bypass => {
            let items = v.as_array().ok_or_else(|| match kind {
                Kind::Extensions => "must be a list of \"Publisher/Type\" extension names, e.g. [\"Microsoft.Azure.Monitor/AzureMonitorLinuxAgent\"]".to_string(),
                Kind::Ports => "must be a list of port numbers, e.g. [22]".to_string(),
                _ => format!("must be a list of service names ({})", BYPASS_SERVICES.join(", ")),
            })?;
            let mut out: Vec<String> = Vec::new();
            for item in items {
                let one = parse_item(kind, item)?;
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&one)) {
                    out.push(one);
                }
            }
            Ok(Val::List(out))
        }
    }
}

fn parse_item(kind: Kind, item: &Value) -> Result<String, String> {
    match kind {
        Kind::Extensions => item
            .as_str()
            .filter(|s| is_extension_name(s))
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{item} is not an extension name of the form \"Publisher/Type\" \
                     (e.g. \"Microsoft.Azure.Monitor/AzureMonitorLinuxAgent\")"
                )
            }),
        Kind::Ports => {
            let n = match item {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match n {
                Some(p @ 1..=65535) => Ok(p.to_string()),
                _ => Err(format!("{item} is not a port number from 1 to 65535")),
            }
        }
        Kind::Bypass => item
            .as_str()
            .and_then(|s| BYPASS_SERVICES.iter().find(|b| b.eq_ignore_ascii_case(s.trim())))
            .map(|b| b.to_string())
            .ok_or_else(|| {
                format!(
                    "{item} is not a proxy.bypass service name; the agent takes service names, not hosts: {}",
                    BYPASS_SERVICES.join(", ")
                )
            }),
        Kind::Bool | Kind::Mode => Err("not a list".into()),
    }
}

/// `Publisher/Type`: one slash, both parts non-empty, letters, digits, `.`, `-`, `_` only (a comma
/// or space would break the comma-separated list the agent takes).
pub fn is_extension_name(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    matches!(s.split_once('/'), Some((p, t)) if ok(p) && ok(t))
}

/// The agent's current value (`config get -j`: a string, a list, or `[a, b]` text), normalised.
pub fn parse_current(kind: Kind, v: &Value) -> Val {
    let items = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.trim().to_string(),
                    other => other.to_string(),
                })
                .filter(|s| !s.is_empty())
                .collect(),
            Value::String(s) => s
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            Value::Null => Vec::new(),
            other => vec![other.to_string()],
        }
    };
    match kind {
        Kind::Bool => match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Val::Bool(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Val::Bool(false),
            other => Val::Text(text_of(other)),
        },
        Kind::Mode => Val::Text(text_of(v).to_ascii_lowercase()),
        Kind::Extensions | Kind::Ports | Kind::Bypass => Val::List(items(v)),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

/// Whether the agent's value is the wanted one. Lists are sets: order and (for extension and
/// service names) case do not matter to the agent.
pub fn same(want: &Val, have: &Val) -> bool {
    match (want, have) {
        (Val::List(w), Val::List(h)) => {
            let norm = |l: &[String]| {
                let mut v: Vec<String> = l.iter().map(|s| s.to_ascii_lowercase()).collect();
                v.sort();
                v.dedup();
                v
            };
            norm(w) == norm(h)
        }
        (Val::Text(w), Val::Text(h)) => w.eq_ignore_ascii_case(h),
        (w, h) => w == h,
    }
}

/// What one setting needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    AlreadyAsWanted,
    /// `config set KEY ARG`.
    Set {
        arg: String,
    },
    /// `config clear KEY` (an empty list: the agent's default).
    Clear,
}

/// The step that makes `have` the wanted value (pure).
pub fn plan(want: &Setting, have: &Val) -> Step {
    if same(&want.value, have) {
        Step::AlreadyAsWanted
    } else {
        match want.value.set_arg() {
            Some(arg) => Step::Set { arg },
            None => Step::Clear,
        }
    }
}

/// An agent error message that means "I do not know this property" (an older agent). The real
/// wording is UNCONFIRMED (FACTS §2.3 lists no error text); the fake says `unknown property`.
pub fn is_unknown_property(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("unknown property")
        || m.contains("unknown config")
        || m.contains("invalid property")
        || m.contains("not a valid property")
        || m.contains("unsupported property")
        || m.contains("property not found")
}

/// Wanted vs current agent settings for `status --json`: `null` without an `agent` section, else
/// `{"source", "drift", "settings": [{"key", "wanted", "current", "drift", "optional", "error"?}]}`.
/// `drift` is `null` where the current value could not be read.
pub fn status_json(
    agent: Option<&Agent>,
    settings: &Settings,
    deadline: &Deadline,
) -> serde_json::Value {
    if settings.agent.is_none() {
        return Value::Null;
    }
    let wanted = match validate(settings) {
        Ok(w) => w,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let mut any_drift = false;
    let rows: Vec<Value> = wanted
        .settings
        .iter()
        .map(|s| {
            let mut row = json!({
                "key": s.key,
                "wanted": s.value.to_json(s.kind),
                "optional": s.optional,
            });
            match agent.map(|a| a.config_get(s.key, deadline)) {
                None => {
                    row["current"] = Value::Null;
                    row["drift"] = Value::Null;
                    row["error"] = json!("the agent is not installed");
                }
                Some(Ok(v)) => {
                    let have = parse_current(s.kind, &v);
                    let drift = !same(&s.value, &have);
                    any_drift |= drift;
                    row["current"] = have.to_json(s.kind);
                    row["drift"] = json!(drift);
                }
                Some(Err(msg)) => {
                    row["current"] = Value::Null;
                    row["drift"] = Value::Null;
                    row["error"] = json!(if is_unknown_property(&msg) {
                        format!("the installed agent does not know this setting: {msg}")
                    } else {
                        msg
                    });
                }
            }
            row
        })
        .collect();
    json!({"source": wanted.source, "drift": any_drift, "settings": rows})
}

/// The agent-settings lines of `status`: wanted beside current, `DRIFT` where they differ.
pub fn status_text(v: &serde_json::Value, out: &mut String) {
    if v.is_null() {
        return;
    }
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!("settings: {e}\n"));
        return;
    }
    out.push_str(&format!(
        "settings: agent settings wanted by {}{}\n",
        v["source"].as_str().unwrap_or("?"),
        if v["drift"] == json!(true) {
            " — DRIFT: run `arc-enroll connect` to repair it"
        } else {
            ""
        }
    ));
    let show = |x: &Value| match x {
        Value::Null => "-".to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(text_of).collect::<Vec<_>>().join(", ")),
        other => text_of(other),
    };
    for row in v["settings"].as_array().into_iter().flatten() {
        let mark = match &row["drift"] {
            Value::Bool(true) => "DRIFT".to_string(),
            Value::Bool(false) => "ok".to_string(),
            _ => format!("unknown: {}", row["error"].as_str().unwrap_or("not read")),
        };
        out.push_str(&format!(
            "  {:<28} wanted {:<12} current {:<12} {mark}{}\n",
            row["key"].as_str().unwrap_or("?"),
            show(&row["wanted"]),
            show(&row["current"]),
            if row["optional"] == json!(true) {
                " (optional)"
            } else {
                ""
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "config file /etc/arc-enroll/config.json: agent";
    const AMA: &str = "Microsoft.Azure.Monitor/AzureMonitorLinuxAgent";
    const MDE: &str = "Microsoft.Azure.AzureDefenderForServers/MDE.Linux";

    fn ok(v: Value) -> Wanted {
        validate_value(&v, SRC).unwrap_or_else(|e| panic!("{v} should validate: {e}"))
    }

    fn setting(w: &Wanted, key: &str) -> Setting {
        w.settings
            .iter()
            .find(|s| s.key == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing"))
    }

    #[test]
    fn every_validation_error_names_the_key_the_value_and_the_source() {
        // (agent object, the key the error must name, a fragment of the value it must show)
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("monitor"), "agent", "monitor"),
            (
                json!({"extensions.allowed": [AMA]}),
                "agent.extensions.allowed",
                AMA,
            ),
            (
                json!({"proxy.url": "http://p:3128"}),
                "agent.proxy.url",
                "http://p:3128",
            ),
            (
                json!({"extensions.allowlist": AMA}),
                "agent.extensions.allowlist",
                AMA,
            ),
            (
                json!({"extensions.allowlist": ["AzureMonitorLinuxAgent"]}),
                "agent.extensions.allowlist",
                "AzureMonitorLinuxAgent",
            ),
            (
                json!({"extensions.allowlist": ["Microsoft.Azure.Monitor/"]}),
                "agent.extensions.allowlist",
                "Microsoft.Azure.Monitor/",
            ),
            (
                json!({"extensions.allowlist": ["/AzureMonitorLinuxAgent"]}),
                "agent.extensions.allowlist",
                "/AzureMonitorLinuxAgent",
            ),
            (
                json!({"extensions.allowlist": ["a/b/c"]}),
                "agent.extensions.allowlist",
                "a/b/c",
            ),
            (
                json!({"extensions.allowlist": ["Pub/Type,Other/X"]}),
                "agent.extensions.allowlist",
                "Pub/Type,Other/X",
            ),
            (
                json!({"extensions.allowlist": ["Pub Lisher/Type"]}),
                "agent.extensions.allowlist",
                "Pub Lisher/Type",
            ),
            (
                json!({"extensions.allowlist": [42]}),
                "agent.extensions.allowlist",
                "42",
            ),
            (
                json!({"extensions.blocklist": ["nope"]}),
                "agent.extensions.blocklist",
                "nope",
            ),
            (
                json!({"extensions.allowlist": [AMA], "extensions.blocklist": [AMA]}),
                "agent.extensions.blocklist",
                AMA,
            ),
            (
                json!({"extensions.enabled": "false"}),
                "agent.extensions.enabled",
                "false",
            ),
            (
                json!({"extensions.enabled": 0}),
                "agent.extensions.enabled",
                "0",
            ),
            (
                json!({"guestconfiguration.enabled": "yes"}),
                "agent.guestconfiguration.enabled",
                "yes",
            ),
            (
                json!({"config.mode": "audit"}),
                "agent.config.mode",
                "audit",
            ),
            (json!({"config.mode": true}), "agent.config.mode", "true"),
            (
                json!({"incomingconnections.ports": [0]}),
                "agent.incomingconnections.ports",
                "0",
            ),
            (
                json!({"incomingconnections.ports": [65536]}),
                "agent.incomingconnections.ports",
                "65536",
            ),
            (
                json!({"incomingconnections.ports": [-22]}),
                "agent.incomingconnections.ports",
                "-22",
            ),
            (
                json!({"incomingconnections.ports": ["ssh"]}),
                "agent.incomingconnections.ports",
                "ssh",
            ),
            (
                json!({"incomingconnections.ports": 22}),
                "agent.incomingconnections.ports",
                "22",
            ),
            (
                json!({"proxy.bypass": ["management.azure.com"]}),
                "agent.proxy.bypass",
                "management.azure.com",
            ),
            (
                json!({"proxy.bypass": ["ARM", "Storage"]}),
                "agent.proxy.bypass",
                "Storage",
            ),
            (
                json!({"proxy.bypass": "ARM,Arc"}),
                "agent.proxy.bypass",
                "ARM,Arc",
            ),
            (
                json!({"optional": "proxy.bypass"}),
                "agent.optional",
                "proxy.bypass",
            ),
            (
                json!({"optional": ["proxy.url"]}),
                "agent.optional",
                "proxy.url",
            ),
        ];
        for (v, key, value) in cases {
            let e = match validate_value(&v, SRC) {
                Ok(w) => panic!("{v} should fail, got {w:?}"),
                Err(e) => e,
            };
            assert_eq!(e.exit_code(), 2, "{v}: {e}");
            match &e {
                Error::InvalidSetting {
                    setting,
                    value: shown,
                    source,
                    ..
                } => {
                    assert_eq!(setting, key, "{v}: {e}");
                    assert!(
                        shown.contains(value),
                        "{v}: value {shown:?} lacks {value:?}"
                    );
                    assert_eq!(source, SRC, "{v}");
                }
                other => panic!("{v}: not InvalidSetting: {other}"),
            }
            let msg = e.to_string();
            assert!(msg.contains(key) && msg.contains(SRC), "{v}: {msg}");
        }
    }

    #[test]
    fn valid_values_are_normalised() {
        let w = ok(json!({
            "config.mode": "Monitor",
            "extensions.allowlist": [AMA, MDE, AMA],
            "extensions.enabled": true,
            "guestconfiguration.enabled": false,
            "incomingconnections.ports": [22, "443", 22],
            "proxy.bypass": ["arm", "Arc", "ArcData"],
            "optional": ["proxy.bypass"],
        }));
        assert_eq!(
            setting(&w, "config.mode").value,
            Val::Text("monitor".into())
        );
        assert_eq!(
            setting(&w, "extensions.allowlist").value,
            Val::List(vec![AMA.into(), MDE.into()])
        );
        assert_eq!(setting(&w, "extensions.enabled").value, Val::Bool(true));
        assert_eq!(
            setting(&w, "guestconfiguration.enabled").value,
            Val::Bool(false)
        );
        assert_eq!(
            setting(&w, "incomingconnections.ports").value,
            Val::List(vec!["22".into(), "443".into()])
        );
        assert_eq!(
            setting(&w, "proxy.bypass").value,
            Val::List(vec!["ARM".into(), "Arc".into(), "ArcData".into()])
        );
        assert!(setting(&w, "proxy.bypass").optional);
        assert!(!setting(&w, "config.mode").optional);
        // Applied in PROPERTIES order: the mode preset first.
        assert_eq!(w.settings[0].key, "config.mode");
        assert_eq!(w.source, SRC);
    }

    #[test]
    fn empty_agent_section_and_empty_lists_are_valid() {
        assert!(ok(json!({})).is_empty());
        let w = ok(json!({"proxy.bypass": [], "optional": []}));
        assert_eq!(setting(&w, "proxy.bypass").value, Val::List(vec![]));
    }

    #[test]
    fn the_lockdown_example_validates() {
        let text = include_str!("../../examples/config-lockdown.json");
        let file: Value =
            serde_json::from_str(text).expect("examples/config-lockdown.json is JSON");
        let w = ok(file["agent"].clone());
        assert_eq!(
            setting(&w, "config.mode").value,
            Val::Text("monitor".into())
        );
        assert_eq!(
            setting(&w, "extensions.allowlist").value,
            Val::List(vec![AMA.into(), MDE.into()])
        );
        assert_eq!(
            setting(&w, "guestconfiguration.enabled").value,
            Val::Bool(true)
        );
        assert_eq!(setting(&w, "proxy.bypass").value, Val::List(vec![]));
    }

    #[test]
    fn current_values_parse_from_json_or_text() {
        let cases: Vec<(Kind, Value, Val)> = vec![
            (Kind::Bool, json!("true"), Val::Bool(true)),
            (Kind::Bool, json!("False"), Val::Bool(false)),
            (Kind::Bool, json!(false), Val::Bool(false)),
            (Kind::Bool, json!("maybe"), Val::Text("maybe".into())),
            (Kind::Mode, json!("Full"), Val::Text("full".into())),
            (Kind::Extensions, json!([]), Val::List(vec![])),
            (Kind::Extensions, json!(""), Val::List(vec![])),
            (Kind::Extensions, json!(null), Val::List(vec![])),
            (Kind::Extensions, json!([AMA]), Val::List(vec![AMA.into()])),
            (
                Kind::Extensions,
                json!(format!("[{AMA}, {MDE}]")),
                Val::List(vec![AMA.into(), MDE.into()]),
            ),
            (
                Kind::Bypass,
                json!("ARM,Arc"),
                Val::List(vec!["ARM".into(), "Arc".into()]),
            ),
            (
                Kind::Ports,
                json!(["22", 443]),
                Val::List(vec!["22".into(), "443".into()]),
            ),
        ];
        for (kind, v, want) in cases {
            assert_eq!(parse_current(kind, &v), want, "{kind:?} {v}");
        }
    }

    #[test]
    fn plan_sets_only_what_differs() {
        let s = |key: &'static str, kind, value| Setting {
            key,
            kind,
            value,
            optional: false,
        };
        let list = |l: &[&str]| Val::List(l.iter().map(|x| x.to_string()).collect());
        let allow = s("extensions.allowlist", Kind::Extensions, list(&[AMA, MDE]));
        let cases: Vec<(&Setting, Val, Step)> = vec![
            (&allow, list(&[AMA, MDE]), Step::AlreadyAsWanted),
            // A list is a set: order and case do not matter.
            (
                &allow,
                list(&[&MDE.to_lowercase(), AMA]),
                Step::AlreadyAsWanted,
            ),
            (
                &allow,
                list(&[AMA]),
                Step::Set {
                    arg: format!("{AMA},{MDE}"),
                },
            ),
            (
                &allow,
                list(&[]),
                Step::Set {
                    arg: format!("{AMA},{MDE}"),
                },
            ),
        ];
        for (want, have, step) in cases {
            assert_eq!(
                plan(want, &have),
                step,
                "{} have {}",
                want.key,
                have.display()
            );
        }
        let none = s("proxy.bypass", Kind::Bypass, list(&[]));
        assert_eq!(plan(&none, &list(&["ARM"])), Step::Clear);
        assert_eq!(plan(&none, &list(&[])), Step::AlreadyAsWanted);
        let mode = s("config.mode", Kind::Mode, Val::Text("monitor".into()));
        assert_eq!(
            plan(&mode, &Val::Text("full".into())),
            Step::Set {
                arg: "monitor".into()
            }
        );
        assert_eq!(
            plan(&mode, &Val::Text("MONITOR".into())),
            Step::AlreadyAsWanted
        );
        let gc = s("guestconfiguration.enabled", Kind::Bool, Val::Bool(false));
        assert_eq!(
            plan(&gc, &Val::Bool(true)),
            Step::Set {
                arg: "false".into()
            }
        );
        assert_eq!(plan(&gc, &Val::Bool(false)), Step::AlreadyAsWanted);
        let ports = s(
            "incomingconnections.ports",
            Kind::Ports,
            list(&["22", "443"]),
        );
        assert_eq!(plan(&ports, &list(&["443", "22"])), Step::AlreadyAsWanted);
        assert_eq!(
            plan(&ports, &list(&["22"])),
            Step::Set {
                arg: "22,443".into()
            }
        );
    }

    #[test]
    fn unknown_property_messages() {
        assert!(is_unknown_property(
            "FATAL   unknown property 'config.mode' AZCM0023"
        ));
        assert!(is_unknown_property(
            r#"{"status":"failed","error":{"code":"AZCM0023","message":"unknown property 'x'"}}"#
        ));
        assert!(!is_unknown_property(
            "Invalid value 'x' for property config.mode"
        ));
        assert!(!is_unknown_property("cannot read the local configuration"));
    }

    #[test]
    fn status_text_marks_drift() {
        let v = json!({
            "source": SRC,
            "drift": true,
            "settings": [
                {"key": "config.mode", "wanted": "monitor", "current": "full", "drift": true, "optional": false},
                {"key": "extensions.allowlist", "wanted": [AMA], "current": [AMA], "drift": false, "optional": false},
                {"key": "proxy.bypass", "wanted": [], "current": null, "drift": null, "optional": true, "error": "the installed agent does not know this setting"},
            ]
        });
        let mut t = String::new();
        status_text(&v, &mut t);
        let line = |k: &str| {
            t.lines()
                .find(|l| l.contains(k))
                .unwrap_or_else(|| panic!("{k} missing:\n{t}"))
                .to_string()
        };
        assert!(line("config.mode").contains("DRIFT"), "{t}");
        assert!(
            line("config.mode").contains("monitor") && line("config.mode").contains("full"),
            "{t}"
        );
        assert!(line("extensions.allowlist").ends_with("ok"), "{t}");
        assert!(
            line("proxy.bypass").contains("unknown") && line("proxy.bypass").contains("(optional)"),
            "{t}"
        );
        assert!(t.lines().next().unwrap().contains("DRIFT"), "{t}");
        let mut empty = String::new();
        status_text(&Value::Null, &mut empty);
        assert!(empty.is_empty());
    }
}
