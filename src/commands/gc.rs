//! `orchestrate gc EXPERIMENT`: lists the experiment's stale run directories (results of other
//! data or numerics, [`crate::store::check_current`]) and, with `--delete`, removes them with
//! their TensorBoard logs, asking first unless `--yes`. Nothing else is ever deleted: a run
//! that is only damaged, failed or not in the current plan stays.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::error::Error;
use crate::launch::overview;
use crate::store::ExperimentLock;

/// Arguments of `orchestrate gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An experiment name (a directory under the runs directory).
    pub experiment: String,
    /// Directory holding experiments.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Remove the stale run directories (asks first, unless --yes).
    #[arg(long)]
    pub delete: bool,
    /// With --delete: do not ask.
    #[arg(long, requires = "delete")]
    pub yes: bool,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let exp_dir = args.runs_dir.join(&args.experiment);
    if !exp_dir.is_dir() {
        return Err(Error::Usage(format!(
            "no experiment {} under {}",
            args.experiment,
            args.runs_dir.display()
        )));
    }
    // Held while deciding and deleting: no launch writes these directories meanwhile.
    let _lock = if args.delete {
        Some(ExperimentLock::acquire(&exp_dir)?)
    } else {
        None
    };
    let stale: Vec<overview::RunView> = overview::collect(&exp_dir, &[])?
        .into_iter()
        .filter(|r| r.stale.is_some())
        .collect();
    if stale.is_empty() {
        println!("{}: no stale runs", args.experiment);
        return Ok(crate::error::exit::OK);
    }
    println!("{}: {} stale run(s)", args.experiment, stale.len());
    for r in &stale {
        println!(
            "  {}  {}  {}",
            r.id,
            r.name,
            r.stale.as_deref().unwrap_or_default()
        );
    }
    if !args.delete {
        return Ok(crate::error::exit::OK);
    }
    if !args.yes {
        print!("delete these {} run directories? [y/N] ", stale.len());
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        // No answer (end of input) is a no.
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing deleted");
            return Ok(crate::error::exit::OK);
        }
    }
    for r in &stale {
        crate::store::remove_run(&crate::store::RunDir::at(exp_dir.join(&r.id)))?;
    }
    println!("deleted {} stale run(s)", stale.len());
    Ok(crate::error::exit::OK)
}
