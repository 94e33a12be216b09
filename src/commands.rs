//! Dispatch: one function per command. (in progress)

use crate::cli::Cli;
use crate::error::Error;

pub fn run(cli: Cli) -> Result<u8, Error> {
    let _ = cli;
    Err(Error::Internal("not built yet".into()))
}
