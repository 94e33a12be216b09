//! Generate the man page and shell completions from the clap definitions (used by `make deb`):
//! `cargo run --example gen-assets -- OUTDIR` writes OUTDIR/arc-enroll.1, OUTDIR/arc-enroll.bash,
//! OUTDIR/_arc-enroll (zsh) and OUTDIR/arc-enroll.fish.
//!
//! Two things are added to what clap_complete generates (tests/completions.rs checks both):
//! - the values of the settings that take a fixed set (`--cloud`, `--clone-policy`, ...), which
//!   the CLI keeps as plain strings so that config.rs validates flags, environment and the config
//!   file alike (the test checks these lists against the binary's own "must be ..." answers);
//! - a fix for clap_complete's bash script with a hyphenated binary name (clap-rs/clap#6421, still
//!   in clap_complete 4.6.12): the subcommand case labels are `arc__subcmd__enroll__subcmd__connect)`
//!   while the script computes `arc__enroll__subcmd__connect`, so `arc-enroll connect --<TAB>`
//!   offered nothing.

use std::path::{Path, PathBuf};

use clap::builder::PossibleValuesParser;
use clap::Command;
use clap_complete::{generate, Shell};

pub const BIN: &str = "arc-enroll";

/// Settings with a fixed set of values, as completions offer them (canonical spelling).
/// An entry whose flag the CLI does not (yet) have is skipped.
pub const VALUES: &[(&str, &[&str])] = &[
    (
        "cloud",
        &[
            "AzureCloud",
            "AzureUSGovernment",
            "AzureChinaCloud",
            "Azure.Local",
        ],
    ),
    ("clone_policy", &["reconnect", "fail", "ignore"]),
    ("token_source", &["imds", "gcp", "aws", "file", "github"]),
    ("reconnect_on_change", &["true", "false"]),
    ("install_agent", &["true", "false"]),
    ("enable_automatic_upgrade", &["true", "false"]),
    ("use_aws_ec2_hostname", &["true", "false"]),
];

/// The CLI as completions see it: [`VALUES`] attached to their flags, on every subcommand.
pub fn completion_command() -> Command {
    fn add_values(mut cmd: Command) -> Command {
        for (id, values) in VALUES {
            if cmd.get_arguments().any(|a| a.get_id() == *id) {
                cmd = cmd.mut_arg(*id, |a| a.value_parser(PossibleValuesParser::new(*values)));
            }
        }
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for name in subs {
            cmd = cmd.mut_subcommand(name, add_values);
        }
        cmd
    }
    add_values(arc_enroll::cli::command())
}

/// The completion script for `shell`, with the bash case labels fixed (see the module docs).
pub fn completion_script(shell: Shell) -> String {
    let mut buf = Vec::new();
    generate(shell, &mut completion_command(), BIN, &mut buf);
    let script = String::from_utf8(buf).expect("completion scripts are UTF-8");
    match shell {
        Shell::Bash => fix_bash_case_labels(&script, BIN),
        _ => script,
    }
}

/// clap_complete computes a subcommand's name as `<bin with '-' -> "__">__subcmd__<sub>` but
/// writes its case label from `<bin>__subcmd__<sub>` with every '-' -> `__subcmd__`. Rewrite the
/// labels' prefix to the computed one; labels that already match are left alone, so this is a
/// no-op once clap_complete is fixed.
pub fn fix_bash_case_labels(script: &str, bin: &str) -> String {
    let wrong = format!("{}__subcmd__", bin.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", bin.replace('-', "__"));
    if wrong == right {
        return script.to_string();
    }
    let mut out = String::with_capacity(script.len());
    for line in script.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let label = body.trim_start();
        let indent = &body[..body.len() - label.len()];
        match label.strip_prefix(&wrong) {
            Some(rest) if rest.ends_with(')') && !rest.contains(char::is_whitespace) => {
                out.push_str(indent);
                out.push_str(&right);
                out.push_str(rest);
                out.push_str(&line[body.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn write(path: &Path, text: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    std::fs::create_dir_all(&out)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(arc_enroll::cli::command()).render(&mut page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        use clap_complete::Generator;
        let name = shell.file_name(BIN);
        write(&out.join(name), completion_script(shell).as_bytes())?;
    }
    write(&out.join("arc-enroll.1"), &page)
}
