//! The Azure Connected Machine agent: what we ask it (`args`), running it (`runner`), the token
//! file (`token_file`), what its exit codes mean (`exit_codes`), what it reports (`show`), its
//! declarative local settings (`settings`) and applying them (`reconcile`), installing it
//! (`install`).

pub mod args;
pub mod exit_codes;
pub mod install;
pub mod reconcile;
pub mod runner;
pub mod settings;
pub mod show;
pub mod token_file;

pub use args::{connect_args, connect_existing_args, tags_arg, Target, TokenMode};
pub use exit_codes::{azcm, classify, AgentClass, Outcome};
pub use runner::{
    is_executable, locate, Agent, AGENT_ATTEMPT_TIMEOUT, AGENT_QUICK_TIMEOUT, DEFAULT_AGENT_PATH,
};
pub use show::{parse_config_value, parse_version, Show};
pub use token_file::{remove_stale_token_dirs, TokenFile};
