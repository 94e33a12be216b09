//! `status`, `disconnect`, `generalize`. (in progress)

use crate::config::Settings;
use crate::error::Error;
use crate::retry::Deadline;

pub fn status(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    let _ = (settings, deadline);
    Err(Error::Internal("status is not built yet".into()))
}

pub fn disconnect(settings: &Settings, deadline: &Deadline, local_only: bool) -> Result<u8, Error> {
    let _ = (settings, deadline, local_only);
    Err(Error::Internal("disconnect is not built yet".into()))
}

pub fn generalize(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    let _ = (settings, deadline);
    Err(Error::Internal("generalize is not built yet".into()))
}
