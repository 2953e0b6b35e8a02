//! Run-directory layout and the records workers write there.
//!
//! The run directory is the only interface between the orchestrator and a worker: a worker
//! reads `config.toml` and writes everything else; `status`, `summary` and the launchers
//! only read. Every record is opened here: the other modules call these readers and writers.

pub mod atomic;
pub mod checkpoints;
pub mod files;
pub mod fingerprints;
pub mod integrity;
pub mod lock;
pub mod metrics;
pub mod records;
pub mod runtime;
pub mod slurm_exit;
pub mod stale;
pub mod tensorboard;
pub mod test_items;

pub use atomic::write_atomic;
pub use files::{
    StoreError, read_config, read_pause, read_plan, read_schedule, read_status, schedule_path,
    write_config, write_pause, write_plan, write_schedule, write_status,
};
pub use fingerprints::Fingerprints;
pub use integrity::{Damage, check_finished, read_checked_records, write_final_status};
pub use lock::ExperimentLock;
pub use metrics::{MetricsIntegrity, MetricsTail};
pub use records::*;
pub use runtime::{RuntimeRecord, read_runtime, write_runtime};
pub use slurm_exit::{SLURM_EXIT_FILE, SlurmExitRecord, read_slurm_exit};
pub use stale::{Stale, check_current};
pub use tensorboard::remove_run;
pub use test_items::{TestItems, read_test_items, test_set_digest, write_test_items};

use std::path::{Path, PathBuf};

/// Paths inside `runs/<experiment>/<run-id>/`; the run's TensorBoard log is outside it, in
/// the experiment's log tree ([`RunDir::tensorboard`], [`tensorboard`]).
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory `runs_root/<experiment>/<run_id>`.
    pub fn new(runs_root: &Path, experiment: &str, run_id: &str) -> Self {
        RunDir {
            root: runs_root.join(experiment).join(run_id),
        }
    }
    /// Wraps an existing run directory path.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The run's resolved config, written once by the orchestrator.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `plan.json`: run id, training id, readable name and varied values.
    pub fn plan(&self) -> PathBuf {
        self.root.join("plan.json")
    }
    /// `status.json`, rewritten atomically on every state change.
    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }
    /// `pause.json`: where the next attempt stops for a schedule rung ([`PauseRecord`]).
    pub fn pause(&self) -> PathBuf {
        self.root.join("pause.json")
    }
    /// `runtime.json`: the device, threads and attempt the worker runs with.
    pub fn runtime(&self) -> PathBuf {
        self.root.join("runtime.json")
    }
    /// Append-only JSON lines of [`MetricRecord`].
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// `slurm_exit.json`: the worker's exit code as the Slurm batch script recorded it.
    pub fn slurm_exit(&self) -> PathBuf {
        self.root.join(slurm_exit::SLURM_EXIT_FILE)
    }
    /// Worker stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.root.join("worker.log")
    }
    /// Checkpoint directory (safetensors).
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// Figures and tables the run produces (activation maps, attention, samples).
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    /// Per-run `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// `test_items.json`: each test item's result ([`TestItems`]), for `diff --paired`.
    pub fn test_items(&self) -> PathBuf {
        self.root.join(test_items::TEST_ITEMS_FILE)
    }
    /// The experiment directory holding this run (`runs/<experiment>`).
    pub fn experiment_dir(&self) -> Option<&Path> {
        self.root.parent()
    }
}

/// Whether `key` names the run `id` (`name`): its id, its name, or a prefix of its id of 4
/// characters or more. The one rule for commands that take a run (`run --rerun`, `predict`).
pub fn run_key_matches(id: &str, name: &str, key: &str) -> bool {
    id == key || name == key || (key.len() >= 4 && id.starts_with(key))
}
