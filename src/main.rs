//! arc-enroll: enroll this Linux machine into Azure Arc with its managed identity.
//! Everything lives in the library; this file only wires logging, parsing and exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Every TLS config names the ring provider; the process default is set too, so no library
    // path can ever abort with "No CryptoProvider".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = arc_enroll::cli::parse();
    arc_enroll::logging::init(&cli);
    arc_enroll::signals::install();
    match arc_enroll::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            log::error!("{err}");
            arc_enroll::output::print_failure(&err);
            ExitCode::from(err.exit_code())
        }
    }
}
