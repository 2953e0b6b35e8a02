//! Serialized records of a run: its status and its metric stream.

use serde::{Deserialize, Serialize};

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
    /// Done, failed and diverged runs are not started again by a plain `run`.
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
