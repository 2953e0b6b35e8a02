//! `orchestrate config`.

use crate::error::Error;

/// Arguments of `orchestrate config`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command; returns the exit code.
pub fn execute(_args: &Args) -> Result<i32, Error> {
    Err(Error::Usage("`config` is not built yet".into()))
}
