//! Fakes of the outside world for arc-enroll's tests, `make demo`, `make fleet` and `make e2e`.
//! They behave like FACTS.md describes the real services, not like arc-enroll's implementation.
//!
//! - `imds`: Azure IMDS (managed-identity tokens, instance metadata), programmable faults
//! - `arm`: Azure Resource Manager over HTTPS with a test CA (providers, permissions, machines)
//! - `store`: the fake "Azure" state shared by the fake ARM and the fake agent (a directory)
//! - `jwt`: minting and reading unsigned test JWTs
//! - `secrets`: the registry of secrets the fakes issue (the tests' secret scanner reads it)
//! - `http`: the tiny HTTP/1.1 server both servers are built on

pub mod arm;
pub mod http;
pub mod imds;
pub mod jwt;
pub mod secrets;
pub mod store;
