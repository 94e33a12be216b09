//! Reaching Azure: curl's proxy rules (`proxy`), the HTTP agents (`http`), ARM reads (`arm`).

pub mod arm;
pub mod http;
pub mod proxy;
