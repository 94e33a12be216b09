//! `check`: a preflight that changes nothing (CONTRACT §1), and the Azure-side checks `connect`
//! runs before the agent (issue 5): permissions still propagating are waited for, providers not
//! registered are waited for, a name taken by another machine fails before the agent runs.
//!
//! `ARC_ENROLL_CHECK_ENDPOINTS` (comma-separated URLs) replaces the list of endpoints `check`
//! probes; tests point it at the fake ARM, private clouds at their own endpoints.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::check_identity::{describe_claims, imds_reachable};
use super::check_precreate::precreate_findings;
use crate::agent::{self, Agent};
use crate::azure::arm::{self, Arm, Read};
use crate::azure::http::{proxy_refusal_advice, Failure, Http, TrustStore};
use crate::azure::proxy::Route;
use crate::azure::tls_probe::presented;
use crate::config::{render_resource_name, Settings};
use crate::enroll::azure_checks::{conflict, role_advice, scope, Ownership};
use crate::error::Error;
use crate::identity::imds;
use crate::identity::token::{AccessToken, Claims};
use crate::retry::Deadline;

/// Replaces the endpoints `check` probes (comma-separated URLs).
pub const CHECK_ENDPOINTS_ENV: &str = "ARC_ENROLL_CHECK_ENDPOINTS";
/// One reachability probe: DNS + TCP + TLS + one HTTP answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// `check` gives IMDS this long for a token, not the whole run's deadline.
pub const CHECK_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// IMDS answers locally within milliseconds; this only has to tell "nothing there".
pub const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    /// Works today, but something will likely break (not counted as a problem).
    Warn,
    Problem,
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Problem => "PROBLEM",
            Status::Skipped => "SKIPPED",
        }
    }
}

/// One line of `check`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub item: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

pub(super) fn finding(
    item: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
) -> Finding {
    Finding {
        item: item.into(),
        status,
        detail: detail.into(),
        advice: None,
    }
}

pub(super) fn problem(
    item: impl Into<String>,
    detail: impl Into<String>,
    advice: impl Into<String>,
) -> Finding {
    Finding {
        advice: Some(advice.into()),
        ..finding(item, Status::Problem, detail)
    }
}

/// `check`.
pub fn run(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    log::info!(
        "arc-enroll {} check: preflight; nothing on this machine or in Azure is changed",
        crate::output::VERSION
    );
    settings.log_sources();
    crate::config::require_github_job(settings.token_source.value, &settings.federation)?;
    let http = Http::new(settings.proxy.clone());
    let mut findings = vec![finding(
        "settings",
        Status::Ok,
        "all settings resolved and valid (each value's source is in the log)",
    )];
    let token_deadline = sub_deadline(deadline, CHECK_TOKEN_TIMEOUT);
    let federated = crate::identity::federated(settings);
    let fetched = match &federated {
        Some(f) => {
            findings.push(finding(
                "imds",
                Status::Skipped,
                format!(
                    "not used: --token-source {}",
                    settings.token_source.value.name()
                ),
            ));
            let (assertion, result) = f.probe(&http, &token_deadline);
            findings.push(match &assertion {
                Some(a) => finding(
                    "assertion",
                    Status::Ok,
                    format!(
                        "from {}: {}",
                        f.source.describe(),
                        a.describe(deadline.clock.unix_now())
                    ),
                ),
                None => problem(
                    "assertion",
                    format!("no external token from {}", f.source.describe()),
                    "see the token line below",
                ),
            });
            result
        }
        None => {
            findings.push(imds_reachable(&http, settings, deadline));
            crate::identity::source(settings).fresh_token(&http, &token_deadline)
        }
    };
    let token = match fetched {
        Ok((t, c)) => {
            findings.push(finding("token", Status::Ok, describe_claims(&c, deadline)));
            Some((t, c))
        }
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) if federated.is_some() => {
            // The error's own advice names the federated credential to create, when that is it.
            findings.push(problem(
                "token",
                e.to_string(),
                "the exchange needs a federated credential on the identity matching the assertion's \
                 issuer, subject and audience (docs/federation.md)",
            ));
            None
        }
        Err(e) => {
            findings.push(problem(
                "token",
                e.to_string(),
                "give the VM a managed identity (or select one with --client-id/--object-id/--identity-resource-id) \
                 and make sure 169.254.169.254 is reached directly",
            ));
            None
        }
    };
    let agent_missing = agent_findings(settings, deadline, &mut findings);
    findings.extend(endpoint_findings(&http, settings, deadline, agent_missing));
    match &token {
        Some((t, c)) => findings.extend(azure_findings(&http, settings, deadline, t, c)?),
        None => findings.push(finding(
            "azure",
            Status::Skipped,
            "providers, permissions and the resource name need a token",
        )),
    }
    report(&findings)
}

/// A deadline `cap` from now, or the run's own when that is closer.
fn sub_deadline(deadline: &Deadline, cap: Duration) -> Deadline {
    Deadline::new(
        deadline.clock,
        deadline.timeout.min(deadline.clock.elapsed() + cap),
    )
}

/// The agent finding; returns true when the agent is missing.
fn agent_findings(settings: &Settings, deadline: &Deadline, out: &mut Vec<Finding>) -> bool {
    let located = agent::locate(settings.azcmagent.as_ref().map(|s| s.value.as_str()))
        .filter(|p| agent::is_executable(p));
    match located {
        Some(p) => {
            let a = Agent::new(p.clone(), &settings.proxy, &settings.arm_endpoint.value);
            out.push(match a.version(deadline) {
                Some(v) => finding(
                    "agent",
                    Status::Ok,
                    format!("azcmagent {v} at {}", p.display()),
                ),
                None => problem(
                    "agent",
                    format!("{} is there but `azcmagent version` fails", p.display()),
                    "reinstall the Azure Connected Machine agent",
                ),
            });
            false
        }
        None if settings.install_agent.value => {
            out.push(finding(
                "agent",
                Status::Ok,
                format!(
                    "azcmagent is not installed; connect will install it from {} (--install-agent)",
                    settings.agent_installer_url.value
                ),
            ));
            true
        }
        None => {
            out.push(problem(
                "agent",
                format!(
                    "azcmagent is not installed (not on PATH, not at {}{})",
                    agent::DEFAULT_AGENT_PATH,
                    settings
                        .azcmagent
                        .as_ref()
                        .map(|s| format!(", not at {}", s.value))
                        .unwrap_or_default()
                ),
                "install it in the image, pass --azcmagent PATH, or use --install-agent",
            ));
            true
        }
    }
}

/// The endpoints to probe: `ARC_ENROLL_CHECK_ENDPOINTS`, else the cloud's (FACTS §7, §9) plus the
/// configured ARM endpoint and, when the agent will be installed, the installer.
pub fn endpoints(settings: &Settings, agent_missing: bool) -> Vec<String> {
    let mut list: Vec<String> = match std::env::var(CHECK_ENDPOINTS_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        _ => {
            let mut l: Vec<String> = settings
                .cloud
                .value
                .required_endpoints()
                .iter()
                .map(|s| s.to_string())
                .collect();
            l.push(settings.arm_endpoint.value.clone());
            if settings.token_source.value.is_federated() {
                l.push(format!("{}/", settings.federation.authority_host.value));
            }
            if agent_missing && settings.install_agent.value {
                l.push(settings.agent_installer_url.value.clone());
            }
            l
        }
    };
    let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    let mut seen = Vec::new();
    list.retain(|u| {
        let n = norm(u);
        let new = !seen.contains(&n);
        seen.push(n);
        new
    });
    list
}

fn endpoint_findings(
    http: &Http,
    settings: &Settings,
    deadline: &Deadline,
    agent_missing: bool,
) -> Vec<Finding> {
    let list = endpoints(settings, agent_missing);
    let timeout = deadline.clock.io_timeout(deadline.bounded(PROBE_TIMEOUT));
    std::thread::scope(|s| {
        let handles: Vec<_> = list
            .iter()
            .map(|url| s.spawn(move || probe(http, settings, url, timeout)))
            .collect();
        handles
            .into_iter()
            .zip(&list)
            .map(|(h, url)| {
                h.join().unwrap_or_else(|_| {
                    finding(format!("endpoint {url}"), Status::Skipped, "probe crashed")
                })
            })
            .collect()
    })
}

/// DNS + TCP + TLS + one HTTP answer, through the proxy that would be used. Any status counts.
fn probe(http: &Http, settings: &Settings, url: &str, timeout: Duration) -> Finding {
    let item = format!("endpoint {url}");
    let (how, proxy) = match settings.proxy.route(url) {
        Route::Direct { rule } => (format!("direct ({rule})"), None),
        Route::Via { proxy, rule } => (format!("via proxy {proxy} ({rule})"), Some(proxy)),
    };
    match http.request("GET", url, &[], None, timeout) {
        Ok(r) => {
            let reachable = format!("reachable {how}: HTTP {}", r.status);
            let https = url.to_ascii_lowercase().starts_with("https://");
            let negative = https
                .then(|| crate::azure::proxy::split_url(url))
                .flatten()
                .and_then(|(_, h, p)| presented(&h, p, proxy.as_ref(), timeout).map(|x| (h, x)))
                .filter(|(_, x)| !x.negative_serials().is_empty());
            match negative {
                None => finding(item, Status::Ok, reachable),
                Some((host, x)) => Finding {
                    advice: Some(format!(
                        "if a proxy inspects TLS, have its CA issue certificates with positive serial \
                         numbers, or exempt {host} and the other Azure endpoints from inspection"
                    )),
                    ..finding(
                        item,
                        Status::Warn,
                        format!(
                            "{reachable}; but the certificate chain presented for {host} has a negative \
                             serial number ({}): the agent rejects such certificates from February 2027",
                            x.negative_serials().join("; ")
                        ),
                    )
                },
            }
        }
        Err(f) => {
            let (host, port) = crate::azure::proxy::split_url(url)
                .map(|(_, h, p)| (h, p))
                .unwrap_or_else(|| (url.to_string(), 443));
            let advice = match (&f, &proxy) {
                (f, _) if arm::is_tls_failure(f) => {
                    let store = TrustStore::current();
                    let issuer = presented(&host, port, proxy.as_ref(), timeout)
                        .and_then(|p| p.issuer().map(|i| format!(" (issued by \"{i}\")")))
                        .unwrap_or_default();
                    format!(
                        "the certificate presented for {host}{issuer} is not issued by a CA in {}; if a \
                         proxy inspects TLS, {}, or exempt {host} from inspection",
                        store.describe(),
                        store.add_ca_advice()
                    )
                }
                (Failure::ProxyStatus { code, .. }, Some(p)) => {
                    proxy_refusal_advice(*code, p, &host, port)
                }
                // Not an auth status: the advice is to allow CONNECT to the real host:port.
                (Failure::Proxy(_), Some(p)) => proxy_refusal_advice(0, p, &host, port),
                (_, Some(p)) => format!(
                    "the proxy {p} could not reach {host}: allow it at the proxy or fix its DNS/egress"
                ),
                (_, None) => format!(
                    "allow outbound HTTPS to {host} (firewall, DNS), or set --proxy if this network needs one"
                ),
            };
            problem(
                item,
                format!("not reachable {how}: {}", arm::describe_failure(&f)),
                advice,
            )
        }
    }
}

/// Subscription, resource group and resource name as connect would use them, where known.
fn target_parts(
    http: &Http,
    settings: &Settings,
    claims: &Claims,
    deadline: &Deadline,
) -> Result<(String, String, String, Option<String>), String> {
    let (facts, _) = crate::state::machine_facts(&settings.sysroot.value);
    let derived = crate::enroll::derive(settings, claims, || {
        imds::instance_metadata(http, &settings.imds_endpoint.value, deadline)
    });
    let sub = derived
        .subscription_id
        .ok_or("the subscription is neither set nor derivable (set --subscription-id)")?;
    let rg = derived
        .resource_group
        .ok_or("the resource group is neither set nor derivable (set --resource-group)")?;
    let name = render_resource_name(&settings.resource_name, &facts).map_err(|e| e.to_string())?;
    Ok((sub.value, rg.value, name, facts.product_uuid))
}

fn azure_findings(
    http: &Http,
    settings: &Settings,
    deadline: &Deadline,
    token: &AccessToken,
    claims: &Claims,
) -> Result<Vec<Finding>, Error> {
    let mut out = Vec::new();
    let (sub, rg, name, product_uuid) = match target_parts(http, settings, claims, deadline) {
        Ok(p) => p,
        Err(why) => {
            out.push(finding("azure", Status::Skipped, why));
            return Ok(out);
        }
    };
    let arm = Arm::new(http, &settings.arm_endpoint.value, token);
    let scope = scope(&sub, &rg);
    for ns in arm::REQUIRED_PROVIDERS
        .iter()
        .chain(arm::RECOMMENDED_PROVIDERS.iter())
    {
        let item = format!("provider {ns}");
        out.push(match arm.provider_state(&sub, ns, deadline)? {
            Read::Ok(s) if s.eq_ignore_ascii_case("Registered") => {
                finding(item, Status::Ok, format!("registered in subscription {sub}"))
            }
            Read::Ok(s) => problem(
                item,
                format!("registrationState {s:?} in subscription {sub}"),
                format!("`az provider register --namespace {ns} --subscription {sub}` (once per subscription)"),
            ),
            Read::Denied(d) => finding(
                item,
                Status::Skipped,
                format!("the token cannot read provider registrations ({d})"),
            ),
            Read::Unavailable(u) | Read::Refused(u) => finding(item, Status::Skipped, format!("ARM did not answer: {u}")),
        });
    }
    let perms = arm.permissions(&sub, &rg, deadline)?;
    out.push(match perms.clone() {
        Read::Ok(perms) => {
            let missing = arm::missing_actions(&perms);
            if missing.is_empty() {
                finding(
                    "permissions",
                    Status::Ok,
                    format!("the identity may {} on {scope}", arm::NEEDED_ACTIONS.join(", ")),
                )
            } else {
                problem(
                    "permissions",
                    format!("the identity lacks {} on {scope}", missing.join(", ")),
                    role_advice(claims, &scope),
                )
            }
        }
        Read::Denied(d) => finding(
            "permissions",
            Status::Skipped,
            format!(
                "the token cannot read its permissions on {scope} ({d}); connect relies on the agent's answer"
            ),
        ),
        Read::Unavailable(u) | Read::Refused(u) => finding(
            "permissions",
            Status::Skipped,
            format!("ARM did not answer: {u}"),
        ),
    });
    if settings.enroll_path.value.precreates() {
        out.extend(precreate_findings(
            &arm, settings, deadline, &perms, &scope, claims,
        )?);
    }
    let item = format!("resource name {name}");
    out.push(match arm.machine(&sub, &rg, &name, deadline)? {
        Read::Ok(None) => finding(
            item,
            Status::Ok,
            format!("no machine of that name in {scope}; connect will create it"),
        ),
        Read::Ok(Some(m)) => match conflict(&m, product_uuid.as_deref()) {
            Ownership::Ours => finding(
                item,
                Status::Ok,
                format!("{} exists and is this machine (vmUuid {})", m.id, m.vm_uuid.unwrap_or_default()),
            ),
            Ownership::Other(detail) => problem(
                item,
                detail,
                "give this machine a unique name, e.g. --resource-name '{hostname}-{vm_uuid8}', or delete the stale resource",
            ),
            Ownership::Unknown(detail) => finding(item, Status::Skipped, detail),
        },
        Read::Denied(d) => finding(
            item,
            Status::Skipped,
            format!("the token cannot read machines in {scope} ({d})"),
        ),
        Read::Unavailable(u) | Read::Refused(u) => finding(item, Status::Skipped, format!("ARM did not answer: {u}")),
    });
    Ok(out)
}

fn report(findings: &[Finding]) -> Result<u8, Error> {
    let problems = findings
        .iter()
        .filter(|f| f.status == Status::Problem)
        .count();
    let skipped = findings
        .iter()
        .filter(|f| f.status == Status::Skipped)
        .count();
    let summary = format!(
        "check: {} item{} checked, {problems} problem{}, {skipped} skipped",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        if problems == 1 { "" } else { "s" }
    );
    if crate::output::json() {
        let err = Error::CheckFailed { problems };
        let obj = json!({
            "ok": problems == 0,
            "exit_code": if problems == 0 { 0 } else { err.exit_code() },
            "problems": problems,
            "skipped": skipped,
            "findings": findings,
        });
        crate::output::stdout(&format!("{obj}\n"));
        if problems > 0 {
            log::error!("{err}");
            return Ok(err.exit_code());
        }
        return Ok(0);
    }
    let mut text = String::new();
    // Details quote remote text (claims, IMDS/ARM/agent messages): one finding, one line each.
    use crate::text::escape_remote;
    for f in findings {
        text.push_str(&format!(
            "{:<8} {}: {}\n",
            f.status.label(),
            escape_remote(&f.item),
            escape_remote(&f.detail)
        ));
        if let Some(a) = &f.advice {
            text.push_str(&format!("         what to do: {}\n", escape_remote(a)));
        }
    }
    crate::output::stdout(&text);
    if problems > 0 {
        return Err(Error::CheckFailed { problems });
    }
    crate::output::print_result(&summary, json!({}));
    Ok(0)
}
