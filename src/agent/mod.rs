//! The Azure Connected Machine agent: running `azcmagent` and classifying its answers (`runner`),
//! its declarative local settings (`settings`), and installing it (`install`).

pub mod install;
pub mod runner;
pub mod settings;

pub use runner::{
    azcm, classify, connect_args, is_executable, locate, parse_config_value, parse_version,
    tags_arg, Agent, AgentClass, Outcome, Show, Target, TokenFile, TokenMode,
    AGENT_ATTEMPT_TIMEOUT, AGENT_QUICK_TIMEOUT, DEFAULT_AGENT_PATH,
};
