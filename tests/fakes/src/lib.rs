//! Fakes of the outside world for arc-enroll's tests, `make demo`, `make fleet` and `make e2e`.
//! They behave like FACTS.md describes the real services, not like arc-enroll's implementation.
//!
//! - `imds`: Azure IMDS (managed-identity tokens, instance metadata), programmable faults
//! - `arm`: Azure Resource Manager over HTTPS with a test CA (providers, permissions, machines)
//! - `arm_client`: a one-request HTTPS client for the fakes' own ARM calls (fake agent, tests)
//! - `arm_hybrid`: its pre-created machine, Nexus assignRelay and HybridConnectivity routes
//! - `store`: the fake "Azure" state shared by the fake ARM and the fake agent (a directory)
//! - `ratelimit`: ARM's token buckets (per principal and global, FACTS §12), for the fake ARM
//! - `jwt`: minting and reading unsigned test JWTs
//! - `secrets`: the registry of secrets the fakes issue (the tests' secret scanner reads it)
//! - `http`: the tiny HTTP/1.1 server both servers are built on
//! - `https`: a test CA and an HTTPS server for the federation fakes
//! - `oidc`: external OIDC tokens the fake issuers mint and the fake Entra verifies; issued secrets
//! - `entra`: the Entra token endpoint (workload identity federation exchange, AADSTS errors)
//! - `gcp`: the GCP metadata server (identity tokens, instance id)
//! - `aws`: AWS IMDSv2 (role credentials) and STS `GetWebIdentityToken` (SigV4 verified by aws-sigv4)
//! - `github`: the GitHub Actions OIDC token endpoint

pub mod arm;
pub mod arm_client;
pub mod aws;
pub mod entra;
pub mod gcp;
pub mod github;
pub mod arm_hybrid;
pub mod http;
pub mod https;
pub mod imds;
pub mod jwt;
pub mod oidc;
pub mod ratelimit;
pub mod secrets;
pub mod store;
