//! `token`: fetch a token, print its non-secret claims and the settings derived from it.

use serde_json::json;

use crate::config::{self, Settings};
use crate::error::Error;
use crate::identity::token::Claims;
use crate::output::print_result;
use crate::retry::Deadline;
use crate::timefmt::human;

/// `token`: fetch a token, print its non-secret claims and the settings derived from it.
pub fn run(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    settings.log_sources();
    config::require_github_job(settings.token_source.value, &settings.federation)?;
    let (token, claims, http, assertion) = match crate::identity::federated(settings) {
        Some(f) => {
            let http = crate::azure::http::Http::new(settings.proxy.clone());
            let (assertion, result) = f.probe(&http, deadline);
            let (t, c) = result?;
            (t, c, http, assertion)
        }
        None => {
            let (t, c, http) = crate::enroll::token_and_claims(settings, deadline)?;
            (t, c, http, None)
        }
    };
    drop(token);
    let (facts, _) = crate::state::machine_facts(&settings.sysroot.value);
    let derived = crate::enroll::derive(settings, &claims, || {
        crate::identity::imds::instance_metadata(&http, &settings.imds_endpoint.value, deadline)
    });
    let name = config::render_resource_name(&settings.resource_name, &facts);
    let now = deadline.clock.unix_now();
    let expires_in = claims.exp.map(|e| e.saturating_sub(now));
    let row = |v: &Option<config::Sourced<String>>| match v {
        Some(s) => json!({"value": s.value, "source": s.source}),
        None => json!({"value": null, "source": "not set and not derivable: must be configured"}),
    };
    let assertion_json = assertion.as_ref().map(|a| {
        json!({"iss": a.iss, "sub": a.sub, "aud": a.aud, "exp": a.exp.map(|e| e as u64), "source": settings.token_source.value.name()})
    });
    let obj = json!({
        "assertion": assertion_json,
        "claims": claims_json(&claims),
        "expires_in_seconds": expires_in,
        "identity_kind": format!("{:?}", crate::identity::token::identity_kind(&claims)),
        "settings": {
            "subscription_id": row(&derived.subscription_id),
            "resource_group": row(&derived.resource_group),
            "tenant_id": row(&derived.tenant_id),
            "location": row(&derived.location),
            "resource_name": match &name {
                Ok(n) => json!({"value": n, "source": format!("template {:?} (from {})", settings.resource_name.value, settings.resource_name.source)}),
                Err(e) => json!({"value": null, "source": e.to_string()}),
            },
        },
    });
    if crate::output::json() {
        print_result("", obj);
        return Ok(0);
    }
    let mut text = String::new();
    if let Some(a) = &assertion {
        text.push_str(&format!(
            "assertion from --token-source {} (exchanged at {}; never printed):\n",
            settings.token_source.value.name(),
            settings.federation.authority_host.value
        ));
        for (k, v) in [("iss", a.issuer()), ("sub", a.subject())] {
            text.push_str(&format!("  {k:<10} {v}\n"));
        }
        text.push_str(&format!("  {:<10} {}\n", "aud", a.aud.join(",")));
        if let Some(e) = a.exp {
            text.push_str(&format!(
                "  {:<10} {}\n",
                "exp",
                crate::timefmt::rfc3339(e as u64)
            ));
        }
    }
    text.push_str("token claims (the token itself is never printed):\n");
    for (k, v) in claim_rows(&claims) {
        text.push_str(&format!("  {k:<10} {}\n", crate::text::escape_remote(&v)));
    }
    if let Some(e) = expires_in {
        text.push_str(&format!(
            "  {:<10} {}\n",
            "expires in",
            human(std::time::Duration::from_secs(e))
        ));
    }
    text.push_str("settings as connect would use them:\n");
    for (k, v) in [
        ("subscription_id", &derived.subscription_id),
        ("resource_group", &derived.resource_group),
        ("tenant_id", &derived.tenant_id),
        ("location", &derived.location),
    ] {
        match v {
            Some(s) => text.push_str(&format!(
                "  {k:<16} {} ({})\n",
                crate::text::escape_remote(&s.value),
                s.source
            )),
            None => text.push_str(&format!(
                "  {k:<16} (not derivable: set --{})\n",
                k.replace('_', "-")
            )),
        }
    }
    match name {
        Ok(n) => text.push_str(&format!(
            "  {:<16} {n} (template {:?} from {})\n",
            "resource_name", settings.resource_name.value, settings.resource_name.source
        )),
        Err(e) => text.push_str(&format!("  {:<16} {e}\n", "resource_name")),
    }
    crate::output::stdout(&text);
    Ok(0)
}

fn claim_rows(c: &Claims) -> Vec<(&'static str, String)> {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    vec![
        ("tid", s(&c.tid)),
        ("oid", s(&c.oid)),
        ("appid", s(&c.appid)),
        ("xms_mirid", s(&c.xms_mirid)),
        ("aud", s(&c.aud)),
        (
            "exp",
            c.exp
                .map(|e| format!("{e} ({})", crate::timefmt::rfc3339(e)))
                .unwrap_or_else(|| "-".into()),
        ),
    ]
}

fn claims_json(c: &Claims) -> serde_json::Value {
    serde_json::to_value(c).unwrap_or_else(|_| json!({}))
}
