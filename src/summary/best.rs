//! `orchestrate best`: the winning run's resolved config as a spec that runs as is.
//!
//! The printed spec is the winner's `config.toml` with the grid left out and the name
//! `<experiment>-best`; run identity ignores `name`, so running it reproduces the winner's
//! run ID in a directory of its own. With replicates the winner is a configuration: the spec
//! has its `repeats` and no replicate number, and plans the same configuration ID.

use super::run::LoadedRun;
use super::{ExperimentSummary, SummaryError};
use crate::spec::{GridSpec, Spec};

/// The winner's spec, ready to print: a comment header and the TOML.
pub fn best_spec_toml(
    summary: &ExperimentSummary,
    runs: &[LoadedRun],
) -> Result<String, SummaryError> {
    let spec = best_spec(summary, runs)?;
    let winner = summary.winner_entry().ok_or_else(|| no_winner(summary))?;
    let mut value = toml::Value::try_from(&spec).map_err(|e| toml_error(summary, e))?;
    // An empty grid means "one run"; leaving the table out keeps the spec short and readable
    // by any grid syntax the loader accepts.
    if let Some(table) = value.as_table_mut() {
        table.remove("grid");
    }
    let body = toml::to_string_pretty(&value).map_err(|e| toml_error(summary, e))?;
    let mut header = format!(
        "# Winner of experiment `{}`: run {} ({}), written by `orchestrate best`.\n",
        summary.experiment,
        winner.id,
        winner.label()
    );
    if !winner.varied.is_empty() {
        let varied: Vec<String> = winner
            .varied
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        header.push_str(&format!("# Grid values: {}\n", varied.join(", ")));
    }
    header.push_str(&format!("# {}\n\n", summary.winner_line()));
    Ok(header + &body)
}

/// The winning run among `runs`: the one `best` prints and `predict` loads.
pub fn winner_run<'a>(
    summary: &ExperimentSummary,
    runs: &'a [LoadedRun],
) -> Result<&'a LoadedRun, SummaryError> {
    let winner = summary.winner_entry().ok_or_else(|| no_winner(summary))?;
    runs.iter()
        .find(|r| r.summary.run.id == winner.id)
        .ok_or_else(|| SummaryError::NotFound(format!("winning run {} not found", winner.id)))
}

/// The winner's resolved config, renamed `<experiment>-best`, with an empty grid.
pub fn best_spec(summary: &ExperimentSummary, runs: &[LoadedRun]) -> Result<Spec, SummaryError> {
    let run = winner_run(summary, runs)?;
    let mut spec = run.spec.clone();
    spec.name = format!("{}-best", summary.experiment);
    spec.grid = GridSpec::default();
    // The winner of replicates is a configuration: emit it with its replicate count and
    // without the winning replicate's number, so running it plans the same configuration.
    if let Some(c) = summary.configurations.iter().find(|c| c.winner) {
        spec.replicate = 0;
        spec.repeats = c.runs.len() as u32;
    }
    Ok(spec)
}

fn no_winner(summary: &ExperimentSummary) -> SummaryError {
    SummaryError::Usage(format!(
        "experiment `{}` has no winner: no finished run has a finite {}",
        summary.experiment, summary.select.metric
    ))
}

fn toml_error(summary: &ExperimentSummary, e: impl std::fmt::Display) -> SummaryError {
    SummaryError::Usage(format!(
        "cannot write the winner of `{}` as TOML: {e}",
        summary.experiment
    ))
}
