//! Serialized records of a run: its status, its plan and one metric of its stream.

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
    /// Stopped right after a schedule rung's checkpoint, waiting for the rung's decision;
    /// resumable from that checkpoint, no partial epoch lost.
    Paused,
    /// Stopped for good by the schedule at a rung ([`RunStatus::pruned`] says why); its last
    /// checkpoint is kept, and `run --promote` continues it.
    Pruned,
}

impl RunState {
    /// Done, diverged and pruned runs are not started again by a plain `run`; queued,
    /// running (orphaned), failed, cancelled and paused ones are resumed from their last
    /// checkpoint.
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Done | RunState::Diverged | RunState::Pruned)
    }

    /// Whether a status in this state is the verdict of an ended attempt (not queued, not
    /// running): what launchers look for after a worker exits.
    pub fn is_verdict(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }

    /// The lower-case word status files, progress lines and tables spell the state with.
    pub fn word(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Diverged => "diverged",
            RunState::Cancelled => "cancelled",
            RunState::Paused => "paused",
            RunState::Pruned => "pruned",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
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
    /// Why the schedule pruned the run (state `pruned` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PruneNote>,
}

/// Where and why a schedule pruned a run, as `status.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneNote {
    /// The schedule's kind (`successive_halving`, `median`, `asha`).
    pub kind: String,
    /// The rung's number, 1 for the first.
    pub rung: usize,
    /// The rung's epoch: the run's last checkpoint.
    pub epoch: usize,
    /// Runs (trainings) the rung compared, and how many it kept.
    pub compared: usize,
    pub kept: usize,
    /// The `select.metric` the runs were ranked by.
    pub metric: String,
    /// The run's value at the rung (`null`: none recorded or not finite).
    pub value: Option<f64>,
    /// The value a run had to beat: the worst kept value (successive halving, a complete
    /// ASHA rung) or the median of the others (median stopping); `null` when there was none.
    pub cut: Option<f64>,
    /// With replicates: how many the values average. The schedule then ranks configurations
    /// by their replicates' mean, `value` is the run's configuration's and `compared` and
    /// `kept` count configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates: Option<usize>,
}

impl PruneNote {
    /// The one-line reason `status` and the status message show.
    pub fn reason(&self) -> String {
        let num = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |v| format!("{v:.4}"));
        let (mean, of) = match self.replicates {
            Some(n) => (format!(" (mean of {n} replicates)"), " configurations"),
            None => (String::new(), ""),
        };
        format!(
            "at rung {} (epoch {}) of {}: {} {}{mean} against the cut {} ({} of {}{of} kept)",
            self.rung,
            self.epoch,
            self.kind,
            self.metric,
            num(self.value),
            num(self.cut),
            self.kept,
            self.compared
        )
    }
}

impl RunStatus {
    /// The number of the attempt that starts after `previous` (the run's `status.json`, if
    /// any): one more than the attempts it records, 1 for a run never started. The one rule
    /// for attempt numbers; launchers, workers and reports all call it.
    pub fn next_attempt(previous: Option<&RunStatus>) -> u32 {
        previous.map_or(0, |s| s.attempts) + 1
    }

    /// The attempt `status` describes (a record always names at least the first).
    pub fn current_attempt(status: Option<&RunStatus>) -> u32 {
        status.map_or(1, |s| s.attempts.max(1))
    }
}

/// Contents of `pause.json`: the epoch after whose checkpoint the run's next attempt stops
/// (its next schedule rung), written by the orchestrator before the attempt starts. A record
/// in the run directory, not a worker argument, so a Slurm array task finds it as a local
/// worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    pub after_epoch: usize,
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
    // Defaults: plan files of early versions lack these three.
    #[serde(default)]
    pub training_id: String,
    /// Readable name, e.g. `lr=0.001`.
    #[serde(default)]
    pub name: String,
    /// The grid values this run sets, by dotted key.
    #[serde(default)]
    pub varied: BTreeMap<String, toml::Value>,
    /// The data files' hashes in this run's identity; `unread` in directories written before
    /// data fingerprints (and by plans made without the data).
    #[serde(default)]
    pub data: crate::grid::identity::DataFingerprint,
    /// The numerics version of the code that planned this run; 0 before numerics versions.
    #[serde(default)]
    pub numerics: u32,
    /// The run's configuration and replicate index, when its spec has `repeats > 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<crate::grid::Replicate>,
    /// The run's TensorBoard run name, fixed when it was first planned: its log lives in
    /// `runs/<experiment>/tb/<this>/` ([`super::tensorboard`]). Empty in directories planned
    /// before, whose log is `<run-id>/tb/` until their next `run` moves it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tensorboard: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(attempts: u32) -> RunStatus {
        RunStatus {
            state: RunState::Failed,
            attempts,
            epoch: 0,
            message: None,
            pid: None,
            pruned: None,
        }
    }

    #[test]
    fn the_next_attempt_follows_the_recorded_ones() {
        assert_eq!(RunStatus::next_attempt(None), 1);
        assert_eq!(RunStatus::next_attempt(Some(&status(2))), 3);
        assert_eq!(RunStatus::current_attempt(None), 1);
        assert_eq!(RunStatus::current_attempt(Some(&status(0))), 1);
        assert_eq!(RunStatus::current_attempt(Some(&status(2))), 2);
    }

    #[test]
    fn a_pruned_run_is_final_and_a_paused_one_resumes() {
        assert!(RunState::Pruned.is_final() && RunState::Pruned.is_verdict());
        assert!(!RunState::Paused.is_final() && RunState::Paused.is_verdict());
        assert!(!RunState::Running.is_verdict());
    }

    #[test]
    fn a_state_displays_as_its_status_file_word() {
        for s in [
            RunState::Queued,
            RunState::Diverged,
            RunState::Cancelled,
            RunState::Paused,
            RunState::Pruned,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json.trim_matches('"'), s.to_string());
        }
    }
}
