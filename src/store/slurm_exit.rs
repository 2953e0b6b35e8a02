//! `slurm_exit.json`: the worker's exit code, written by the Slurm batch script after the
//! worker exits (the launcher's first source of truth for how an array task ended).

use serde::Deserialize;

use super::RunDir;
use super::files::{StoreError, read_json};

/// File name of the record inside the run directory.
pub const SLURM_EXIT_FILE: &str = "slurm_exit.json";

/// Contents of `slurm_exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SlurmExitRecord {
    /// The array job's id.
    pub job: String,
    /// The array task index.
    pub task: usize,
    /// The worker's exit code.
    pub exit_code: i32,
}

/// Reads `slurm_exit.json`; `None` when the task has not written it.
pub fn read_slurm_exit(run: &RunDir) -> Result<Option<SlurmExitRecord>, StoreError> {
    read_json(&run.slurm_exit())
}
