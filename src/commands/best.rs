//! `orchestrate best`: print the winning run's config as a spec that runs as is.

use std::path::PathBuf;

use crate::error::Error;
use crate::summary;

/// Arguments of `orchestrate best`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Experiment directory, or an experiment name under --runs-dir.
    pub experiment: String,
    /// Where experiments live.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let dir = summary::resolve_experiment(&args.experiment, &args.runs_dir)?;
    let (exp, runs) = summary::load_experiment(&dir)?;
    print!("{}", summary::best::best_spec_toml(&exp, &runs)?);
    Ok(crate::error::exit::OK)
}
