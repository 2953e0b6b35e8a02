//! `orchestrate plan`.

use crate::error::Error;

/// Arguments of `orchestrate plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command; returns the exit code.
pub fn execute(_args: &Args) -> Result<i32, Error> {
    Err(Error::Usage("`plan` is not built yet".into()))
}
