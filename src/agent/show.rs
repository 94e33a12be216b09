//! What the agent reports about itself: `azcmagent show -j`, `version`, `config get`.

use serde_json::Value;

/// What `azcmagent show -j` says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Show {
    pub status: String,
    pub resource_name: String,
    pub resource_id: String,
    pub resource_group: String,
    pub subscription_id: String,
    pub tenant_id: String,
    pub location: String,
    pub vm_uuid: String,
    pub vm_id: String,
    pub agent_version: String,
    pub last_heartbeat: String,
    pub cloud: String,
}

impl Show {
    pub fn parse(json: &str) -> Result<Show, String> {
        let start = json.find('{').ok_or("no JSON object in the output")?;
        let v: Value = serde_json::Deserializer::from_str(&json[start..])
            .into_iter::<Value>()
            .next()
            .ok_or("empty output")?
            .map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let get = |key: &str| -> String {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("")
                .trim()
                .to_string()
        };
        Ok(Show {
            status: get("status"),
            resource_name: get("resourceName"),
            resource_id: get("resourceId"),
            resource_group: get("resourceGroup"),
            subscription_id: get("subscriptionId"),
            tenant_id: get("tenantId"),
            location: get("location"),
            vm_uuid: get("vmUuid").to_ascii_lowercase(),
            vm_id: get("vmId"),
            agent_version: get("agentVersion"),
            last_heartbeat: get("lastHeartbeat"),
            cloud: get("cloud"),
        })
    }

    /// The agent holds a connection (locally): Connected, or Disconnected/Expired with a resource.
    pub fn has_resource(&self) -> bool {
        !self.resource_name.is_empty() || !self.resource_id.is_empty()
    }

    /// `Connected as /subscriptions/…`, `Disconnected`, `unknown`.
    pub fn summary(&self) -> String {
        let status = if self.status.is_empty() {
            "unknown"
        } else {
            &self.status
        };
        if self.has_resource() {
            format!("{status} as {}", self.resource_id)
        } else {
            status.to_string()
        }
    }

    pub fn connected(&self) -> bool {
        self.status.eq_ignore_ascii_case("connected")
    }
}

/// `azcmagent version 1.61.03319.2737` / `Azure Connected Machine Agent v1.46.02664.1737`.
pub fn parse_version(out: &str) -> Option<String> {
    out.split_whitespace()
        .map(|w| w.trim_start_matches(['v', 'V']))
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// `config get -j` prints JSON in some versions and `key : value` text in others; accept both.
pub fn parse_config_value(out: &str, prop: &str) -> Value {
    let t = out.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        if let Some(obj) = v.as_object() {
            for key in [prop, "value", "Value"] {
                if let Some(x) = obj.get(key) {
                    return x.clone();
                }
            }
        }
        return v;
    }
    let text = t
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .rsplit_once(" : ")
        .map(|(_, v)| v)
        .unwrap_or(t)
        .trim();
    if let Some(inner) = text.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return Value::Array(
            inner
                .split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        );
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_parses_case_insensitively_and_ignores_leading_noise() {
        let s = Show::parse("INFO something\n{\"status\":\"Connected\",\"ResourceName\":\"vm1\",\"vmUuid\":\"ABC\",\"agentVersion\":\"1.61\"}").unwrap();
        assert!(s.connected());
        assert_eq!(s.resource_name, "vm1");
        assert_eq!(s.vm_uuid, "abc");
        assert!(Show::parse("no json").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("azcmagent version 1.61.03319.2737").as_deref(),
            Some("1.61.03319.2737")
        );
        assert_eq!(
            parse_version("Azure Connected Machine Agent v1.46.02664.1737").as_deref(),
            Some("1.46.02664.1737")
        );
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn config_values_in_json_or_text() {
        assert_eq!(
            parse_config_value(r#"{"proxy.url":"http://p:3128"}"#, "proxy.url"),
            Value::String("http://p:3128".into())
        );
        assert_eq!(
            parse_config_value("proxy.url : http://p:3128", "proxy.url"),
            Value::String("http://p:3128".into())
        );
        assert_eq!(
            parse_config_value("[a, b]", "x"),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(parse_config_value("", "x"), Value::String(String::new()));
    }
}
