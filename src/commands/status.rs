//! `orchestrate status`: the table of an experiment's runs, read-only (no lock), also while
//! a grid runs.

use std::path::PathBuf;

use crate::error::Error;
use crate::launch::overview;
use crate::{grid, spec};

/// Arguments of `orchestrate status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An experiment name (a directory under the runs directory) or its spec file.
    pub experiment: String,
    /// Directory holding experiments.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// One JSON array of rows instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let as_path = PathBuf::from(&args.experiment);
    let (name, planned) = if as_path.is_file() {
        // A spec: its planned runs show even before they have directories.
        let spec = spec::load(&as_path, &[])?;
        let plans = grid::expand(&spec)?;
        let planned = plans
            .iter()
            .map(|p| {
                (
                    p.index,
                    p.id.clone(),
                    p.name.clone(),
                    p.config.train.epochs,
                    p.config.select.metric.clone(),
                )
            })
            .collect::<Vec<_>>();
        (spec.name, planned)
    } else {
        (args.experiment.clone(), Vec::new())
    };
    let exp_dir = args.runs_dir.join(&name);
    if planned.is_empty() && !exp_dir.is_dir() {
        return Err(Error::Usage(format!(
            "no experiment {name} under {} (give an experiment name or its spec file)",
            args.runs_dir.display()
        )));
    }
    let rows = overview::collect(&exp_dir, &planned)?;
    if args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", overview::render(&rows));
    }
    Ok(0)
}
