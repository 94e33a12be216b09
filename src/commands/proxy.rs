//! `proxy URL`: how a URL would be reached and which rule decided.

use serde_json::json;

use crate::azure::proxy::Route;
use crate::config::Settings;
use crate::error::Error;
use crate::output::print_result;

/// `proxy URL`: how a URL would be reached and which rule decided.
pub fn run(settings: &Settings, url: &str) -> Result<u8, Error> {
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
