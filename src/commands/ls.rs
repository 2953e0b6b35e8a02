//! `orchestrate ls`: experiments under runs/, their runs by state and their winners.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Error;
use crate::summary::{self, SummaryError, experiment::state_name};

/// Arguments of `orchestrate ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where experiments live.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let read = |source| SummaryError::Read {
        path: args.runs_dir.clone(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&args.runs_dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_dir() && !summary::run_dirs(&path)?.is_empty() {
            dirs.push(path);
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        println!("no experiments under {}", args.runs_dir.display());
    }
    for dir in dirs {
        let (exp, _) = summary::load_experiment(&dir)?;
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for r in exp.all_runs() {
            let state = match (&r.damaged, &r.stale) {
                (Some(_), _) => "damaged".into(),
                (None, Some(_)) => "stale".into(),
                (None, None) => state_name(r.state),
            };
            *states.entry(state).or_default() += 1;
        }
        let total: usize = states.values().sum();
        let counts: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("{}  {total} run(s): {}", exp.experiment, counts.join(", "));
        println!("  {}", exp.winner_line());
    }
    Ok(crate::error::exit::OK)
}
