//! `orchestrate inspect`: per-layer output shapes and parameter counts of the spec's model.
//!
//! When the grid varies the model, each distinct model is shown once with the runs using it.

use super::SpecArgs;
use crate::error::{Error, exit};
use crate::inspect;

/// Arguments of `orchestrate inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let (_, runs) = args.spec.load_runs()?;
    // Group runs by the settings the layout depends on, keeping grid order.
    let mut groups: Vec<(String, Vec<String>, &crate::spec::Spec)> = Vec::new();
    for r in &runs {
        let key = format!("{:?}{:?}", r.config.model, r.config.data);
        match groups.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, names, _)) => names.push(r.name.clone()),
            None => groups.push((key, vec![r.name.clone()], &r.config)),
        }
    }
    let many = groups.len() > 1;
    for (i, (_, names, config)) in groups.iter().enumerate() {
        if many {
            if i > 0 {
                println!();
            }
            println!("runs: {}", names.join(", "));
        }
        let shape = inspect::inspect(config)?;
        print!("{}", inspect::render(config.model.kind, &shape));
    }
    Ok(exit::OK)
}
