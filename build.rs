//! Records the git commit and target triple for `arc-enroll --version`.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ARC_ENROLL_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=ARC_ENROLL_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // Rerun when the commit moves. Ask git where HEAD and the branch ref live: in a worktree
    // `.git` is a file, and a watched path that does not exist would rerun this script (and
    // relink the LTO release binary) on every build.
    for path in git_paths() {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// HEAD, the ref it points to, and packed-refs, as paths git reports (absolute or relative to
/// the package root); none outside a git checkout.
fn git_paths() -> Vec<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        refs.push(head_ref);
    }
    refs.iter()
        .filter_map(|r| git(&["rev-parse", "--git-path", r]))
        .filter(|p| std::path::Path::new(p).exists())
        .collect()
}
