//! `check`'s identity findings: IMDS reached directly, and the token's non-secret claims.

use std::time::Duration;

use super::check::{finding, problem, Finding, Status, IMDS_PROBE_TIMEOUT};
use crate::azure::http::Http;
use crate::config::Settings;
use crate::identity::imds;
use crate::identity::token::Claims;
use crate::retry::Deadline;
use crate::timefmt::human;

pub(super) fn imds_reachable(http: &Http, settings: &Settings, deadline: &Deadline) -> Finding {
    let endpoint = &settings.imds_endpoint.value;
    let url = format!(
        "{}{}?api-version={}&format=json",
        endpoint.trim_end_matches('/'),
        imds::INSTANCE_PATH,
        imds::INSTANCE_API_VERSION
    );
    let timeout = deadline
        .clock
        .io_timeout(deadline.bounded(IMDS_PROBE_TIMEOUT));
    match http.imds_get(&url, timeout) {
        Ok(r) => finding(
            "imds",
            Status::Ok,
            format!(
                "{endpoint} answers directly (HTTP {} on instance metadata{})",
                r.status,
                if r.status == 200 {
                    ""
                } else {
                    "; location etc. must then be configured"
                }
            ),
        ),
        Err(f) => problem(
            "imds",
            format!("{endpoint} is not reachable directly: {f}"),
            "IMDS must be reached without a proxy: check the VM's network (Nexus: \
             `curl -H Metadata:true http://169.254.169.254/healthz`)",
        ),
    }
}

pub(super) fn describe_claims(c: &Claims, deadline: &Deadline) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let exp = match c.exp {
        Some(e) => format!(
            "{} (in {})",
            crate::timefmt::rfc3339(e),
            human(Duration::from_secs(
                e.saturating_sub(deadline.clock.unix_now())
            ))
        ),
        None => "-".into(),
    };
    format!(
        "obtained: tid {}, oid {}, xms_mirid {}, aud {}, exp {exp}",
        s(&c.tid),
        s(&c.oid),
        s(&c.xms_mirid),
        s(&c.aud)
    )
}
