//! arc-enroll as a library, so `tests/` reach the pieces without hooks in production code.
//!
//! Where things live:
//! - `cli`: clap definitions only; `config`: resolved settings, precedence, validation
//! - `error`: the one error type and its exit codes; `output`: the final result line
//! - `proxy`: curl's proxy rules; `http`: the ureq agents (IMDS direct, ARM through the proxy)
//! - `retry`: deadline, clock, backoff; `signals`: SIGTERM/SIGINT
//! - `imds`: managed-identity tokens and instance metadata; `token`: the secret and its claims
//! - `agent`: running `azcmagent`; `agent_settings`: its declarative local settings
//! - `state`: state file, fingerprint, clone verdict, lock; `arm`: Azure Resource Manager reads
//! - `enroll`: the `connect` sequence; `check`: preflight and the Azure-side checks before connect
//! - `install`: `--install-agent`; `lifecycle`: status, disconnect, generalize
//! - `userdata`: cloud-init user-data; `commands`: dispatch and the small commands (token, proxy)

pub mod agent;
pub mod agent_settings;
pub mod arm;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod enroll;
pub mod error;
pub mod http;
pub mod imds;
pub mod install;
// Moves into the `enroll` module folder once the reshape (issue 13) lands.
#[path = "enroll/keypair.rs"]
pub mod keypair;
pub mod lifecycle;
pub mod logging;
#[path = "azure/machines.rs"]
pub mod machines;
pub mod output;
pub mod proxy;
pub mod retry;
pub mod signals;
pub mod state;
pub mod token;
pub mod userdata;

pub use commands::run;
pub use error::Error;
