//! The shell completions that `make deb` packages (examples/gen-assets.rs): the bash script's case
//! labels match the names it computes (clap-rs/clap#6421), bash really completes subcommand options
//! and values, and the value lists match what the binary accepts.

mod common;

#[allow(dead_code)]
#[path = "../examples/gen-assets.rs"]
mod gen_assets;

use std::collections::BTreeSet;
use std::process::Command;

use clap_complete::Shell;

/// `cmd="NAME"` assignments: the names the script computes from the words typed.
fn computed_names(script: &str) -> BTreeSet<String> {
    script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("cmd=\""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// The labels of the `case "${cmd}" in` block that picks a (sub)command's options.
fn case_labels(script: &str) -> BTreeSet<String> {
    let block = script
        .split("case \"${cmd}\" in")
        .nth(1)
        .expect("the script dispatches on ${cmd}");
    block
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_suffix(')'))
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_case_labels_are_the_computed_names() {
    let script = gen_assets::completion_script(Shell::Bash);
    let names = computed_names(&script);
    let labels = case_labels(&script);
    assert!(
        names.contains("arc__enroll__subcmd__connect"),
        "computed: {names:?}"
    );
    assert!(
        names.contains("arc__enroll__subcmd__user__subcmd__data"),
        "computed: {names:?}"
    );
    assert_eq!(
        labels, names,
        "every computed (sub)command name needs its case label and no label may be unreachable"
    );
}

#[test]
fn the_label_fix_rewrites_only_the_broken_prefix() {
    let broken = "    case \"${cmd}\" in\n        arc__subcmd__enroll__subcmd__user__subcmd__data)\n            opts=\"arc__subcmd__enroll__subcmd__x)\"\n        arc__enroll)\n";
    let fixed = gen_assets::fix_bash_case_labels(broken, "arc-enroll");
    assert_eq!(
        fixed,
        "    case \"${cmd}\" in\n        arc__enroll__subcmd__user__subcmd__data)\n            opts=\"arc__subcmd__enroll__subcmd__x)\"\n        arc__enroll)\n"
    );
    // A binary name without a hyphen has nothing to fix.
    assert_eq!(
        gen_assets::fix_bash_case_labels(broken, "arcenroll"),
        broken
    );
}

/// What bash completes for `words` (the last one being completed), with the generated script
/// sourced and its completion function called the way bash's programmable completion does.
fn complete(words: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("arc-enroll-compl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("arc-enroll.bash");
    std::fs::write(&path, gen_assets::completion_script(Shell::Bash)).unwrap();
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        r#"source '{}' || exit 9
fn=$(complete -p arc-enroll | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
[ -n "$fn" ] || exit 8
COMP_WORDS=({})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
"$fn" arc-enroll "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}" 2>/dev/null
printf '%s\n' "${{COMPREPLY[@]}}""#,
        path.display(),
        words_q.join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommand_options_and_values() {
    let top = complete(&["arc-enroll", "con"]);
    assert_eq!(top, ["connect"], "top level");

    let opts = complete(&["arc-enroll", "connect", "--"]);
    for o in [
        "--clone-policy",
        "--cloud",
        "--proxy",
        "--install-agent",
        "--help",
    ] {
        assert!(
            opts.iter().any(|x| x == o),
            "connect --<TAB> lacks {o}: {opts:?}"
        );
    }
    assert!(
        !opts.iter().any(|x| x == "--base64"),
        "connect offers user-data's --base64: {opts:?}"
    );

    // A hyphenated subcommand name too.
    let ud = complete(&["arc-enroll", "user-data", "--ba"]);
    assert_eq!(ud, ["--base64"], "user-data --ba<TAB>");

    assert_eq!(
        complete(&["arc-enroll", "connect", "--token-source", ""]),
        ["imds", "gcp", "aws", "file", "github"]
    );
    assert_eq!(
        complete(&["arc-enroll", "connect", "--clone-policy", ""]),
        ["reconnect", "fail", "ignore"]
    );
    assert_eq!(
        complete(&["arc-enroll", "connect", "--cloud", "AzureU"]),
        ["AzureUSGovernment"]
    );
    assert_eq!(
        complete(&["arc-enroll", "check", "--cloud", ""]),
        [
            "AzureCloud",
            "AzureUSGovernment",
            "AzureChinaCloud",
            "Azure.Local"
        ]
    );
}

/// The accepted values, as the binary's "invalid setting" answer lists them ("must be A, B or C").
fn accepted_values(flag: &str) -> BTreeSet<String> {
    let out = common::bin_command()
        .args([
            "proxy",
            "--config",
            "",
            flag,
            "not-a-value",
            "https://management.azure.com/",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{flag} not-a-value must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let list = err
        .split("must be ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no 'must be ...' in: {err}"));
    list.replace(" or ", ", ")
        .split(", ")
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn completion_values_are_what_the_binary_accepts() {
    let cmd = arc_enroll::cli::command();
    let mut checked = 0;
    for (id, values) in gen_assets::VALUES {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == *id) else {
            continue; // not a flag of this build (e.g. --token-source before it exists)
        };
        let flag = format!("--{}", arg.get_long().unwrap());
        let offered: BTreeSet<String> = values.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            accepted_values(&flag),
            offered,
            "{flag}: completion values vs the binary's list"
        );
        for v in *values {
            let st = common::bin_command()
                .args([
                    "proxy",
                    "--config",
                    "",
                    &flag,
                    v,
                    "https://management.azure.com/",
                ])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .output()
                .unwrap();
            // The value itself is accepted (another setting may still be needed with it, e.g.
            // --client-id for a federated --token-source: exit 2 naming that one is fine).
            let err = String::from_utf8_lossy(&st.stderr);
            assert!(
                st.status.code() == Some(0) || !err.contains(&format!("invalid setting {id}=")),
                "{flag} {v}: {err}"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} of the value lists apply to this CLI"
    );
}
