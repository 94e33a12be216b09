//! Generate the man page and shell completions from the clap definitions (used by `make deb`):
//! `cargo run --example gen-assets -- OUTDIR` writes OUTDIR/arc-enroll.1, OUTDIR/arc-enroll.bash,
//! OUTDIR/_arc-enroll (zsh) and OUTDIR/arc-enroll.fish.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    std::fs::create_dir_all(&out)?;
    let cmd = arc_enroll::cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(out.join("arc-enroll.1"), page)?;
    use clap_complete::{generate_to, Shell};
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = generate_to(shell, &mut cmd.clone(), "arc-enroll", &out)?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("wrote {}", out.join("arc-enroll.1").display());
    Ok(())
}
