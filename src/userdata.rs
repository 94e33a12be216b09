//! `user-data`. (in progress)

use crate::cli::Opts;
use crate::config::Settings;
use crate::error::Error;

pub fn run(
    opts: &Opts,
    settings: &Settings,
    binary_url: Option<String>,
    binary_sha256: Option<String>,
    base64: bool,
) -> Result<u8, Error> {
    let _ = (opts, settings, binary_url, binary_sha256, base64);
    Err(Error::Internal("user-data is not built yet".into()))
}
