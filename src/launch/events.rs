//! Typed events of a launch, consumed by the reporters (live display, plain lines, JSON).
//!
//! The pool emits these; it never prints. Each serialises to one JSON object with an
//! `event` field for `--json`.

use serde::Serialize;

use crate::store::RunState;

/// Something that happened while running a grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LaunchEvent {
    /// The grid is about to start.
    GridStarted {
        experiment: String,
        runs: usize,
        to_run: usize,
        jobs: usize,
        threads_per_job: usize,
        /// Epochs still to train over all runs to run (for the overall bar and ETA).
        epochs_to_train: usize,
    },
    /// A note for the user (a lowered job count, a stale lock taken over).
    Note { message: String },
    /// A run is already finished and skipped.
    RunSkipped {
        run_id: String,
        name: String,
        state: RunState,
    },
    /// A worker was started (locally: its pid; on Slurm: its array task).
    RunStarted {
        run_id: String,
        name: String,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        /// `<job>_<task>` of the Slurm array task running the worker.
        #[serde(skip_serializing_if = "Option::is_none")]
        job: Option<String>,
        device: String,
        /// Epochs already on disk (the attempt resumes after them).
        resumed_from: usize,
        epochs: usize,
    },
    /// Live numbers of a running run (sent on every poll that saw new records).
    Progress {
        run_id: String,
        name: String,
        epoch: usize,
        epochs: usize,
        step: u64,
        loss: Option<f64>,
        metric: String,
        metric_value: Option<f64>,
        steps_per_second: Option<f64>,
    },
    /// A run finished an epoch (its select metric was recorded).
    EpochDone {
        run_id: String,
        name: String,
        epoch: usize,
        epochs: usize,
        step: u64,
        loss: Option<f64>,
        metric: String,
        metric_value: Option<f64>,
    },
    /// A worker exited.
    RunFinished {
        run_id: String,
        name: String,
        attempt: u32,
        state: RunState,
        message: Option<String>,
        /// The run will be started again (a retry).
        retry: bool,
    },
    /// Runs were submitted to Slurm as one array job, or a job submitted earlier (with
    /// `--detach`) is followed again.
    SlurmSubmitted {
        job_id: String,
        runs: usize,
        /// Picked up from `job.json` rather than submitted now.
        attached: bool,
    },
    /// A Slurm array task is waiting, ended without its worker's word, or cannot be seen now.
    SlurmTask {
        run_id: String,
        name: String,
        /// `<job>_<task>`.
        job: String,
        /// What Slurm says, e.g. `pending (Resources)`.
        phase: String,
    },
    /// `--detach`: the runs are in Slurm's hands; this command returns.
    Detached {
        experiment: String,
        jobs: Vec<String>,
        runs: usize,
    },
    /// A shutdown signal arrived: the first stops gracefully, the second kills.
    Interrupted { signals: usize, grace_seconds: u64 },
    /// The grid stopped early because a run failed (`--fail-fast`).
    FailFast { run_id: String },
    /// Every worker has exited.
    GridFinished {
        done: usize,
        failed: usize,
        diverged: usize,
        cancelled: usize,
        /// Runs a schedule pruned in this launch.
        #[serde(skip_serializing_if = "is_zero")]
        pruned: usize,
        not_started: usize,
        seconds: f64,
    },
    /// The best run by the select metric.
    Winner {
        /// The summary's one-line verdict, e.g. `best: lr0.0005 (5ac19c753a61) dev/accuracy=...`.
        line: String,
        /// ID of the winning run, when there is one.
        run_id: Option<String>,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
