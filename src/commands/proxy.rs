//! `proxy URL`: how a URL would be reached and which rule decided.

use serde_json::json;

use crate::azure::proxy::Route;
use crate::config::Settings;
use crate::error::Error;
use crate::output::print_result;

/// `proxy URL`: how a URL would be reached and which rule decided.
pub fn run(settings: &Settings, url: &str) -> Result<u8, Error> {
    let Some(target) = crate::azure::proxy::split_url(url) else {
        return Err(Error::invalid(
            "URL",
            url,
            "command line",
            "must be an absolute http:// or https:// URL",
        ));
    };
    // Only what the IMDS client would send goes direct as IMDS: the IMDS endpoint's own scheme,
    // host and port. Any other URL, on 169.254.169.254 or not, is an ordinary request and takes
    // the proxy rules, as it would in check/connect.
    let imds = crate::azure::proxy::split_url(&settings.imds_endpoint.value);
    let (route, rule) = if imds.as_ref() == Some(&target) {
        (
            "direct".to_string(),
            format!(
                "IMDS is never sent through a proxy: this is the IMDS endpoint {} (from {}); \
                 Microsoft does not support IMDS behind a proxy",
                settings.imds_endpoint.value, settings.imds_endpoint.source
            ),
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
