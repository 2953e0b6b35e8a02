// TEMP: replaced at merge (the summary engineer's `summary::summarize_experiment`).
//! Stand-in summary: ranks done runs of an experiment by the select metric's last value.

use std::path::Path;

use crate::spec::{SelectMode, SelectSpec};
use crate::store::{RunDir, RunState, read_plan, read_status};

/// One ranked run.
#[derive(Debug, Clone)]
pub struct RankedRun {
    pub id: String,
    pub name: String,
    pub value: f64,
}

/// The experiment's ranking.
#[derive(Debug, Clone)]
pub struct ExperimentSummary {
    pub metric: String,
    pub winner: Option<RankedRun>,
}

/// Why the summary failed.
#[derive(Debug, thiserror::Error)]
#[error("summary: {0}")]
pub struct SummaryError(pub String);

/// Ranks the experiment's done runs.
pub fn summarize_experiment(
    exp_dir: &Path,
    select: &SelectSpec,
) -> Result<ExperimentSummary, SummaryError> {
    let mut best: Option<RankedRun> = None;
    let entries = std::fs::read_dir(exp_dir).map_err(|e| SummaryError(e.to_string()))?;
    for entry in entries.flatten() {
        let run = RunDir::at(entry.path());
        let (Ok(Some(st)), Ok(Some(plan))) = (read_status(&run), read_plan(&run)) else {
            continue;
        };
        if st.state != RunState::Done {
            continue;
        }
        let recs = crate::sinks::metrics::read_records(&run.metrics()).unwrap_or_default();
        let Some(v) = recs
            .iter()
            .rev()
            .find(|r| r.tag == select.metric)
            .map(|r| r.value)
        else {
            continue;
        };
        let better = best.as_ref().is_none_or(|b| match select.mode {
            SelectMode::Max => v > b.value,
            SelectMode::Min => v < b.value,
        });
        if better {
            best = Some(RankedRun {
                id: plan.id,
                name: plan.name,
                value: v,
            });
        }
    }
    Ok(ExperimentSummary {
        metric: select.metric.clone(),
        winner: best,
    })
}
