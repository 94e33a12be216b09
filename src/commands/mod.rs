//! Dispatch: resolve settings (no network), start the one deadline, run the command, print the
//! result line. `connect` is here (the sequence is `enroll`); each other command has its file.

pub mod check;
pub mod lifecycle;
pub mod proxy;
pub mod token;
pub mod userdata;

use serde_json::json;

use crate::cli::{Cli, Command};
use crate::config::{self, Settings};
use crate::error::Error;
use crate::output::print_result;
use crate::retry::{Clock, Deadline};
use crate::timefmt::human;

pub fn run(cli: Cli) -> Result<u8, Error> {
    let env = config::process_env();
    // Bad input fails here, before any network call.
    let settings = config::resolve(&cli.opts, &cli.sources, &env)?;
    crate::agent::settings::validate(&settings)?;
    if !matches!(cli.command, Some(Command::UserData { .. })) {
        config::check_local_files(&settings)?;
    }
    let clock = Clock::from_env()?;
    let deadline = Deadline::new(clock, settings.timeout.value);
    let command = cli.command.clone().unwrap_or(Command::Connect);
    if !matches!(command, Command::UserData { .. } | Command::Proxy { .. }) {
        // Every run on the machine (not the text-only `user-data`/`proxy`) first removes the
        // token directories of runs that died without cleaning up (SIGKILL): a live token must
        // not wait on disk for the next `connect`.
        crate::agent::remove_stale_token_dirs();
    }
    match command {
        Command::Connect => connect(&settings, &deadline),
        Command::Token => token::run(&settings, &deadline),
        Command::Proxy { url } => proxy::run(&settings, &url),
        Command::Check => crate::commands::check::run(&settings, &deadline),
        Command::Status => crate::commands::lifecycle::status(&settings, &deadline),
        Command::Disconnect { local_only } => {
            crate::commands::lifecycle::disconnect(&settings, &deadline, local_only)
        }
        Command::Generalize => crate::commands::lifecycle::generalize(&settings, &deadline),
        Command::UserData {
            binary_url,
            binary_sha256,
            base64,
        } => {
            crate::commands::userdata::run(&cli.opts, &settings, binary_url, binary_sha256, base64)
        }
    }
}

fn connect(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    log::info!(
        "arc-enroll {} connect: enrolling this machine into Azure Arc (deadline {})",
        crate::output::VERSION,
        human(deadline.timeout)
    );
    let done = crate::enroll::connect(settings, deadline);
    let (arm_requests, arm_throttled, arm_paced) = crate::azure::pacing::totals();
    log::info!(
        "ARM requests this run: {arm_requests} ({arm_throttled} answered 429; {} waited for ARM's request budget)",
        human(arm_paced)
    );
    let done = done?;
    let s = &done.state;
    log::info!(
        "done in {}: {}",
        human(deadline.clock.elapsed()),
        done.action
    );
    print_result(
        &format!("{} ({}) — {}", s.resource_name, s.resource_id, done.action),
        json!({
            "result": done.action,
            "resource_id": s.resource_id,
            "resource_name": s.resource_name,
            "subscription_id": s.subscription_id,
            "resource_group": s.resource_group,
            "tenant_id": s.tenant_id,
            "location": s.location,
            "seconds": deadline.clock.elapsed().as_secs_f64(),
            "arm_requests": arm_requests,
            "arm_throttled": arm_throttled,
        }),
    );
    Ok(0)
}
