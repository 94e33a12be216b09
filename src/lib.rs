//! arc-enroll as a library, so `tests/` reach the pieces without hooks in production code.
//!
//! Where things live, in layers (tests/layout.rs keeps the imports between them free of circles):
//! - `commands`: one file per command (check, lifecycle, token, proxy, userdata) and dispatch
//! - `enroll`: the `connect` sequence as named steps; `EnrollPath`s (today `token_path`)
//! - `agent`: azcmagent's argv, runner, exit codes, `show`, local settings, install
//! - `identity`: `TokenSource`s (`imds`, and `gcp`/`aws`/`file`/`github` through workload identity
//!   federation) and the token's claims
//! - `azure`: curl's proxy rules, the ureq agents (IMDS direct, ARM through the proxy), ARM reads,
//!   pacing by ARM's reported request budget
//! - `state`: state file, fingerprint and clone verdict, lock
//! - `config`: resolved settings, precedence, validation; `cli`: clap definitions only
//! - `error`: the one error type and its exit codes; `output`: the final result line;
//!   `logging`; `retry`: deadline, clock, backoff; `signals`: SIGTERM/SIGINT;
//!   `timefmt`: durations and timestamps as text; `secret`: the types that are never printed;
//!   `fsafe`: file access that follows no link out of `--sysroot` and checks modes;
//!   `text`: remote text made safe for one log line

pub mod agent;
pub mod azure;
pub mod cli;
pub mod commands;
pub mod config;
pub mod enroll;
pub mod error;
pub mod fsafe;
pub mod identity;
pub mod logging;
pub mod output;
pub mod retry;
pub mod secret;
pub mod signals;
pub mod state;
pub mod text;
pub mod timefmt;

pub use commands::run;
pub use error::Error;
