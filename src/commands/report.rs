//! `orchestrate report`: PNG figures of an experiment.

use std::path::PathBuf;

use crate::error::Error;
use crate::summary;

/// Arguments of `orchestrate report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Experiment directory, or an experiment name under --runs-dir.
    pub experiment: String,
    /// Where experiments live.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Where the figures go; default: the experiment's `report/` directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let dir = summary::resolve_experiment(&args.experiment, &args.runs_dir)?;
    let (exp, _) = summary::load_experiment(&dir)?;
    let out = args.out.clone().unwrap_or_else(|| dir.join("report"));
    for file in summary::report::write_report(&exp, &out)? {
        println!("{}", file.display());
    }
    println!("{}", exp.winner_line());
    Ok(crate::error::exit::OK)
}
