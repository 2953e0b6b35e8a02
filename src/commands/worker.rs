//! `orchestrate worker` (hidden): trains the run directory named by the environment.

use crate::error::Error;
use crate::worker::{self, WorkerEnv};

/// Arguments of `orchestrate worker`: none; the run's identity comes from environment
/// variables (see [`crate::worker::vars`]) so that local and Slurm launches look the same.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command; returns the worker's exit code ([`crate::worker::code`]).
pub fn execute(_args: &Args) -> Result<i32, Error> {
    let env = WorkerEnv::from_env()?;
    Ok(worker::run(&env)?)
}
