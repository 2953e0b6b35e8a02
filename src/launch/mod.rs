//! Launching a grid's runs: the local process pool and the Slurm backend.
//!
//! Both start `orchestrate worker` processes and learn everything from run directories.
//! `settings` resolves the launch settings once (`budget` holds the job/thread/device
//! arithmetic), `prepare` writes the run directories, `dispatch` decides what runs when
//! (retries, fail-fast, signals, grace, counts) over an executor: `local` (process groups)
//! or, through `on_slurm`, the Slurm backend. `events` + `progress` report, `tail` and
//! `overview` read what workers wrote. `pruning` holds the pure decisions of the pruning
//! schedules (successive halving, ASHA, median stopping).

pub mod budget;
pub mod dispatch;
pub mod events;
pub mod local;
pub mod on_slurm;
pub mod overview;
pub mod prepare;
pub mod progress;
pub mod pruning;
pub mod schedule;
pub mod settings;
pub mod signals;
pub mod slurm;
pub mod tail;

use std::path::PathBuf;

use crate::store::StoreError;

/// Why a launch could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A run directory holds a config that does not match the plan's for its id.
    #[error(
        "{path}: run {id} already holds a different config than the spec now gives it; \
         move that run directory away or restore the spec"
    )]
    ConfigMismatch { path: PathBuf, id: String },
    /// `--rerun` named no run of the plan.
    #[error("--rerun {name}: no such run; runs are: {}", known.join(", "))]
    UnknownRun { name: String, known: Vec<String> },
    /// `--promote` named no run of the plan.
    #[error("--promote {name}: no such run; runs are: {}", known.join(", "))]
    UnknownPromotion { name: String, known: Vec<String> },
    /// `--promote` named a run that is not pruned: there is nothing to continue.
    #[error("--promote {name}: run {id} is {state}, not pruned; only a pruned run is promoted")]
    NotPruned {
        name: String,
        id: String,
        state: String,
    },
    /// A worker process could not be started.
    #[error("cannot start worker {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

impl LaunchError {
    /// Whether the user asked for something that does not exist (exit 2) rather than a
    /// runtime failure (exit 5).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LaunchError::UnknownRun { .. }
                | LaunchError::UnknownPromotion { .. }
                | LaunchError::NotPruned { .. }
        )
    }
}
