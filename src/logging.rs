//! Log lines for a person reading /var/log/cloud-init-output.log: on stderr, one line per step,
//! `2026-11-23T16:19:27Z INFO  message`, no colour. `-v`/`-q` set the level; `RUST_LOG` overrides.

use std::io::Write;

use log::LevelFilter;

use crate::cli::Cli;

pub fn init(cli: &Cli) {
    let level = match (cli.opts.quiet, cli.opts.verbose) {
        (true, _) => LevelFilter::Warn,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    crate::output::set_json(cli.opts.json);
    let mut builder = env_logger::Builder::new();
    // Our own lines at the chosen level; the libraries' only from warnings up unless -vv.
    builder
        .filter_level(if level == LevelFilter::Trace {
            LevelFilter::Trace
        } else {
            LevelFilter::Warn
        })
        .filter_module("arc_enroll", level)
        .parse_env("RUST_LOG")
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                buf.timestamp_seconds(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .write_style(env_logger::WriteStyle::Never);
    let _ = builder.try_init();
}
