//! Log lines for a person reading /var/log/cloud-init-output.log: on stderr, one line per step,
//! `2026-11-23T16:19:27Z INFO  message`, no colour. `-v`/`-q` set the level; `RUST_LOG` overrides,
//! except that no library (ureq, ureq_proto, rustls, any other dependency) ever logs below DEBUG:
//! at TRACE they dump the bytes on the wire, the token and `Authorization` header included. Every
//! line is escaped (`text::escape_remote`) so remote text cannot forge a log line.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

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
                crate::text::escape_remote_lines(&record.args().to_string())
            )
        })
        .target(env_logger::Target::Stderr)
        .write_style(env_logger::WriteStyle::Never);
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Capped { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// The most detail any target but arc-enroll's own may log.
pub const LIBRARY_CAP: LevelFilter = LevelFilter::Debug;

/// Whether a record may be written: ours at any level, a library's only up to [`LIBRARY_CAP`].
pub fn allowed(target: &str, level: log::Level) -> bool {
    let ours = target == "arc_enroll" || target.starts_with("arc_enroll::");
    ours || level <= LIBRARY_CAP
}

/// env_logger behind the library cap; applied after RUST_LOG was parsed, so no directive (not even
/// `RUST_LOG=ureq_proto::client=trace`) can lift it.
struct Capped {
    inner: env_logger::Logger,
}

impl Log for Capped {
    fn enabled(&self, m: &Metadata) -> bool {
        allowed(m.target(), m.level()) && self.inner.enabled(m)
    }

    fn log(&self, record: &Record) {
        if allowed(record.target(), record.level()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    #[test]
    fn libraries_are_capped_at_debug_and_ours_are_not() {
        for t in [
            "ureq",
            "ureq_proto::client",
            "rustls::conn",
            "env_logger",
            "arc_enrollx",
        ] {
            assert!(!allowed(t, Level::Trace), "{t}");
            assert!(allowed(t, Level::Debug), "{t}");
        }
        assert!(allowed("arc_enroll", Level::Trace));
        assert!(allowed("arc_enroll::http", Level::Trace));
    }
}
