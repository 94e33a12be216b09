//! Reaching Azure: curl's proxy rules (`proxy`) and proxy URLs (`proxy_url`), the HTTP agents (`http`), ARM reads (`arm`), pacing by ARM's
//! reported request budget (`pacing`), what a TLS server presents (`tls_probe`)
//! and which CAs are trusted (`trust`), for advice only.

pub mod arm;
pub mod http;
pub mod machines;
pub mod pacing;
pub mod proxy;
pub mod proxy_url;
pub mod tls_probe;
pub mod trust;
