//! Serialized records of a run: its status and its metric stream.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Lifecycle state of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Queued,
    Running,
    Done,
    Failed,
    /// Loss became NaN or infinite.
    Diverged,
    /// Stopped by the user (Ctrl-C); resumable.
    Cancelled,
}

impl RunState {
    /// Done and diverged runs are not started again by a plain `run`; queued, running
    /// (orphaned), failed and cancelled ones are resumed from their last checkpoint.
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Done | RunState::Diverged)
    }
}

/// Contents of `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub state: RunState,
    /// Attempts started so far (1 on the first).
    pub attempts: u32,
    /// Last epoch whose checkpoint and metrics are on disk (0 = none).
    pub epoch: usize,
    /// Why a run failed, diverged or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Process id of the worker while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// One line of `metrics.jsonl`: a scalar at a global step.
///
/// Tags: `train/loss`, `dev/loss`, `dev/accuracy`, `dev/error_rate`, `test/...`, `lr`;
/// tags under `time/` (epoch seconds, samples per second) are timings, kept apart from
/// metrics in summaries because they never repeat exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub epoch: usize,
    pub step: u64,
    pub tag: String,
    pub value: f64,
}

/// Contents of `plan.json`: who this run is within its experiment's grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// Position in the grid expansion (0-based).
    pub index: usize,
    /// 12-hex hash of the canonical config; names the run directory.
    pub id: String,
    /// Hash without `decode`/`select`: runs sharing it can share one training.
    pub training_id: String,
    /// Readable name, e.g. `lr=0.001`.
    pub name: String,
    /// The grid values this run sets, by dotted key.
    pub varied: BTreeMap<String, toml::Value>,
}
