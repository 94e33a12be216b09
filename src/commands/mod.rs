//! Dispatch: resolve settings (no network), start the one deadline, run the command, print the
//! result line. The small commands (`token`, `proxy`) live here; the others in their modules.

pub mod check;
pub mod lifecycle;
pub mod userdata;

use serde_json::json;

use crate::azure::proxy::Route;
use crate::cli::{Cli, Command};
use crate::config::{self, Settings};
use crate::error::Error;
use crate::identity::token::Claims;
use crate::output::print_result;
use crate::retry::{Clock, Deadline};
use crate::timefmt::human;

pub fn run(cli: Cli) -> Result<u8, Error> {
    let env = config::process_env();
    // Bad input fails here, before any network call.
    let settings = config::resolve(&cli.opts, &cli.sources, &env)?;
    crate::agent::settings::validate(&settings)?;
    let clock = Clock::from_env()?;
    let deadline = Deadline::new(clock, settings.timeout.value);
    let command = cli.command.clone().unwrap_or(Command::Connect);
    match command {
        Command::Connect => connect(&settings, &deadline),
        Command::Token => token(&settings, &deadline),
        Command::Proxy { url } => proxy(&settings, &url),
        Command::Check => crate::commands::check::run(&settings, &deadline),
        Command::Status => crate::commands::lifecycle::status(&settings, &deadline),
        Command::Disconnect { local_only } => {
            crate::commands::lifecycle::disconnect(&settings, &deadline, local_only)
        }
        Command::Generalize => crate::commands::lifecycle::generalize(&settings, &deadline),
        Command::UserData {
            binary_url,
            binary_sha256,
            base64,
        } => {
            crate::commands::userdata::run(&cli.opts, &settings, binary_url, binary_sha256, base64)
        }
    }
}

fn connect(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    log::info!(
        "arc-enroll {} connect: enrolling this machine into Azure Arc (deadline {})",
        crate::output::VERSION,
        human(deadline.timeout)
    );
    let done = crate::enroll::connect(settings, deadline)?;
    let s = &done.state;
    log::info!(
        "done in {}: {}",
        human(deadline.clock.elapsed()),
        done.action
    );
    print_result(
        &format!("{} ({}) — {}", s.resource_name, s.resource_id, done.action),
        json!({
            "result": done.action,
            "resource_id": s.resource_id,
            "resource_name": s.resource_name,
            "subscription_id": s.subscription_id,
            "resource_group": s.resource_group,
            "tenant_id": s.tenant_id,
            "location": s.location,
            "seconds": deadline.clock.elapsed().as_secs_f64(),
        }),
    );
    Ok(0)
}

/// `token`: fetch a token, print its non-secret claims and the settings derived from it.
fn token(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    settings.log_sources();
    let (token, claims, http) = crate::enroll::token_and_claims(settings, deadline)?;
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
    let obj = json!({
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
    let mut text = String::from("token claims (the token itself is never printed):\n");
    for (k, v) in claim_rows(&claims) {
        text.push_str(&format!("  {k:<10} {v}\n"));
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
            Some(s) => text.push_str(&format!("  {k:<16} {} ({})\n", s.value, s.source)),
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

/// `proxy URL`: how a URL would be reached and which rule decided.
fn proxy(settings: &Settings, url: &str) -> Result<u8, Error> {
    let Some((_, host, _)) = crate::azure::proxy::split_url(url) else {
        return Err(Error::invalid(
            "URL",
            url,
            "command line",
            "must be an absolute http:// or https:// URL",
        ));
    };
    let imds_host =
        crate::azure::proxy::split_url(&settings.imds_endpoint.value).map(|(_, h, _)| h);
    let (route, rule) = if Some(&host) == imds_host.as_ref() || host == "169.254.169.254" {
        (
            "direct".to_string(),
            "IMDS is never sent through a proxy (Microsoft does not support IMDS behind a proxy)"
                .to_string(),
        )
    } else {
        match settings.proxy.route(url) {
            Route::Direct { rule } => ("direct".to_string(), rule),
            Route::Via { proxy, rule } => (format!("via {proxy}"), rule),
        }
    };
    print_result(
        &format!("{url}: {route} ({rule})"),
        json!({"url": url, "route": route, "rule": rule}),
    );
    Ok(0)
}
